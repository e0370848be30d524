"""Summaries of a py-spy ``--format raw`` profile (collapsed stacks: ``f1;f2;f3 count``)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
TOP = 25


def _short(path: str) -> str:
    for marker in ("site-packages/", "/src/", "lib/python3"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail if marker != "lib/python3" else "stdlib" + tail[tail.find("/") :]
    return path


def _name(frame: str) -> str:
    """``function (file)`` without the line number, with a short path."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['function']} ({_short(match['file'])})"


def summarise(raw: Path, out: Path) -> dict[str, Any]:
    """Top functions by own samples and by samples with them on the stack; written to
    ``out`` (a ``.summary.txt`` next to it) and returned."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_name(frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        threads[_thread(frames)] += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / max(total, 1), 1)}
            for name, n in counter.most_common(TOP)
        ]

    ours = Counter({name: n for name, n in inclusive.items() if "(hetuflow/" in name})
    top_self, top_inclusive, top_ours = table(own), table(inclusive), table(ours)
    by_thread = {name: round(100 * n / max(total, 1), 1) for name, n in threads.most_common()}
    summary = out.with_suffix(".summary.txt")
    lines = [f"py-spy samples: {total} (non-idle, all threads)", "", "by thread:"]
    lines += [f"  {share:5.1f}%  {name}" for name, share in by_thread.items()]
    lines += ["", "own time (top of the stack):"]
    lines += [f"  {row['percent']:5.1f}%  {row['function']}" for row in top_self]
    lines += ["", "hetuflow functions, total time (anywhere on the stack):"]
    lines += [f"  {row['percent']:5.1f}%  {row['function']}" for row in top_ours]
    lines += ["", "total time (anywhere on the stack):"]
    lines += [f"  {row['percent']:5.1f}%  {row['function']}" for row in top_inclusive]
    summary.write_text("\n".join(lines) + "\n")
    return {
        "samples": total,
        "summary": str(summary),
        "by_thread": by_thread,
        "top_self": top_self,
        "top_hetuflow_inclusive": top_ours,
        "top_inclusive": top_inclusive,
    }


def _thread(frames: list[str]) -> str:
    """Which thread a stack ran on: the event loop, or a thread pool (the SQLite store's
    writer and reader threads, asyncpg has none)."""
    if any(frame.startswith("_WorkItem.run") for frame in frames):
        return "worker threads (SQLite store writer/reader, to_thread)"
    if any("run_until_complete" in frame or frame.startswith("Runner.run") for frame in frames):
        return "event loop thread"
    return "other"
