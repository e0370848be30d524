"""Click options that take several space-separated values: ``--capabilities chrome headless``.

Click has no ``nargs=-1`` for options, so a multi-value option is a ``multiple=True`` option
plus a command class that rewrites the argument list before click parses it::

    --capabilities chrome headless --name a1
    -> --capabilities chrome --capabilities headless --name a1

Every value up to the next token that looks like an option (``-x``, ``--x``) or ``--`` belongs
to the option. One value may also hold several items separated by commas or spaces
(``--capabilities chrome,headless``, ``--capabilities "chrome headless"``). Usage::

    @click.command(cls=MultiValueCommand)
    @click.option("--capabilities", cls=MultiValueOption, help="...")
    def start(capabilities: tuple[str, ...]) -> None: ...

The option's value is a tuple of strings (empty when not given). For a command inside a
group use ``@group.command(cls=MultiValueCommand)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

__all__ = ["MultiValueCommand", "MultiValueOption", "expand_multi_value_args"]


class MultiValueOption(click.Option):
    """An option taking one or more values; use it with ``MultiValueCommand``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["multiple"] = True
        super().__init__(*args, **kwargs)

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        value = super().process_value(ctx, value)
        if value is None:
            return ()
        items: list[str] = []
        for raw in value:
            items.extend(str(raw).replace(",", " ").split())
        return tuple(items)


def _looks_like_option(token: str) -> bool:
    return len(token) > 1 and token.startswith("-")


def expand_multi_value_args(args: Sequence[str], option_names: set[str]) -> list[str]:
    """Repeat each multi-value option before each of its values (see the module docstring).

    Raises ``click.BadOptionUsage`` for such an option followed by no value.
    """
    expanded: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        index += 1
        if token == "--":
            expanded.extend(args[index - 1 :])
            break
        name, equals, inline = token.partition("=")
        if name not in option_names:
            expanded.append(token)
            continue
        values = [inline] if equals else []
        while index < len(args) and not _looks_like_option(args[index]) and args[index] != "--":
            values.append(args[index])
            index += 1
        if not values:
            raise click.BadOptionUsage(name, f"Option {name!r} requires at least one value.")
        for value in values:
            expanded.extend((name, value))
    return expanded


class MultiValueCommand(click.Command):
    """A command whose ``MultiValueOption`` options accept several space-separated values."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        names = {
            opt
            for param in self.params
            if isinstance(param, MultiValueOption)
            for opt in param.opts
        }
        return super().parse_args(ctx, expand_multi_value_args(args, names))
