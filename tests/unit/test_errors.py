"""The error hierarchy: errors.py's docstring draws it whole, and its classes live in one place
(``hetuflow.errors``, or the SDK's ``hetuflow.client.errors``)."""

from __future__ import annotations

import importlib
import pkgutil
import re

import hetuflow
from hetuflow import errors
from hetuflow.errors import HetuflowError

HOMES = frozenset({"hetuflow.errors", "hetuflow.client.errors"})


def _import_every_module() -> None:
    for module in pkgutil.walk_packages(hetuflow.__path__, "hetuflow."):
        importlib.import_module(module.name)


def _ours(cls: type[HetuflowError]) -> list[type[HetuflowError]]:
    """The direct subclasses defined by hetuflow itself (not by a test)."""
    return [child for child in cls.__subclasses__() if child.__module__.startswith("hetuflow.")]


def _tree(cls: type[HetuflowError], indent: str = "") -> list[str]:
    lines: list[str] = []
    children = _ours(cls)
    for index, child in enumerate(children):
        last = index == len(children) - 1
        lines.append(f"{indent}{'└── ' if last else '├── '}{child.__name__}")
        lines.extend(_tree(child, indent + ("    " if last else "│   ")))
    return lines


def _drawn() -> list[str]:
    """The tree in errors.py's docstring, without the notes after each class name."""
    assert errors.__doc__ is not None
    block = errors.__doc__.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    drawn = []
    for line in block.splitlines():
        match = re.match(r"    ([│├└─ ]*\w+)", line)
        assert match is not None, f"not a tree line: {line!r}"
        drawn.append(match.group(1))
    return drawn


def _every_subclass() -> list[type[HetuflowError]]:
    found: list[type[HetuflowError]] = []
    pending = _ours(HetuflowError)
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(_ours(cls))
    return found


def test_the_docstring_draws_every_error_class_where_it_sits() -> None:
    _import_every_module()
    expected = ["HetuflowError", *_tree(HetuflowError)]
    assert _drawn() == expected, "errors.py's tree should read:\n" + "\n".join(expected)


def test_every_error_class_is_defined_in_the_errors_modules() -> None:
    _import_every_module()
    defined = _every_subclass()
    assert {"ClientError", "TaskFailed"} <= {cls.__name__ for cls in defined}
    strays = [f"{cls.__module__}.{cls.__name__}" for cls in defined if cls.__module__ not in HOMES]
    assert not strays, "define these in hetuflow/errors.py (re-export them where they were)"
