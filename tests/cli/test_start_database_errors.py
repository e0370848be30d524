"""``hetuflow-server start`` on a SQLite file it cannot open says so on one line and exits 1
(no traceback, no crash loop): a missing directory, or a "directory" that is a file.

(A read-only directory is the same failure for SQLite, but root, which runs these tests in
containers, may write anywhere; a path under a regular file fails for everyone.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import free_port

BIN = Path(sys.executable).parent / "hetuflow-server"


def _start(database: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    url = f"sqlite:///{database}"
    return subprocess.run(
        [str(BIN), "start", "--bind", f"127.0.0.1:{free_port()}", "--database-url", url, *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("flags", [(), ("--no-migrate",)], ids=["migrate", "no-migrate"])
@pytest.mark.parametrize("where", ["missing-directory", "under-a-file"])
def test_an_unusable_sqlite_path_is_one_clear_line(
    tmp_path: Path, where: str, flags: tuple[str, ...]
) -> None:
    if where == "under-a-file":
        (tmp_path / "plain-file").write_text("not a directory\n")
        database = tmp_path / "plain-file" / "hetuflow.db"
    else:
        database = tmp_path / "no-such-directory" / "hetuflow.db"
    done = _start(database, *flags)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert str(database) in line
    assert "unable to open database file" in line
