"""How a ``%fusion`` sub-command is declared, registered and described.

A sub-command declares its arguments with IPython's ``magic_arguments`` and an example for
the help; :func:`command` registers it in :data:`COMMANDS`, with a usage line that reads as
typed (positionals first). Shared argument groups (``NAME``, ``--output``) are reusable
decorators. :func:`overview` is the magic's help: every sub-command with its usage and
example. The sub-commands themselves are :mod:`fusionkit.notebook.commands`.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from IPython.core.magic_arguments import MagicHelpFormatter, argument

from fusionkit._suggest import did_you_mean
from fusionkit.notebook.parsing import HINT, FusionUsageError

__all__ = ["COMMANDS", "Command", "command", "find", "has_body", "output", "overview",
           "stage_name", "store_output"]


@dataclass(frozen=True)
class Command:
    """A registered sub-command: its function (with its argument parser), whether it takes
    a cell body and needs a connection, and the example its help shows."""

    name: str
    run: Callable[..., Any]
    cell: bool          # takes a cell body
    connected: bool     # needs %fusion connect first
    example: str

    @property
    def summary(self) -> str:
        return (self.run.parser.description or "").strip().splitlines()[0]

    def help(self) -> str:
        return self.run.parser.format_help()

    def usage(self) -> str:
        return self.run.parser.format_usage().removeprefix("usage: ").strip()


class HelpFormatter(MagicHelpFormatter):
    """IPython's magic help layout, with a plain ``usage:`` line instead of an RST block."""

    def add_usage(self, usage, actions, groups, prefix="usage: "):  # noqa: ANN001
        argparse.RawDescriptionHelpFormatter.add_usage(self, usage, actions, groups, prefix)


COMMANDS: dict[str, Command] = {}


def usage_line(parser: argparse.ArgumentParser, width: int = 88) -> str:
    """``%fusion serve NAME --model TRAIN [--replicas N] ...``: positionals first, as typed."""
    words = []
    actions = sorted(parser._actions, key=lambda a: bool(a.option_strings))
    for action in actions:
        if not action.option_strings:
            word = action.metavar or action.dest
            words.append(f"[{word}]" if action.nargs == "?" else word)
            continue
        word = action.option_strings[0]
        if action.nargs != 0:
            word += f" {action.metavar or action.dest.upper()}"
        words.append(word if action.required else f"[{word}]")
    return textwrap.fill(" ".join([parser.prog, *words]), width, subsequent_indent="    ",
                         break_on_hyphens=False, break_long_words=False)


def command(name: str, example: str, *, cell: bool = False,
            connected: bool = True) -> Callable[[Callable], Callable]:
    """Register a sub-command whose ``magic_arguments`` parser is already built."""
    def register(func: Callable) -> Callable:
        func.parser.epilog = "Example:\n" + textwrap.indent(example.strip(), "  ")
        func.parser.prog = ("%%" if cell else "%") + func.parser.prog
        func.parser.formatter_class = HelpFormatter
        func.parser.usage = usage_line(func.parser).replace("%", "%%")  # argparse %-formats it
        func.__doc__ = func.parser.format_help()
        COMMANDS[name] = Command(name, func, cell, connected, example.strip())
        return func
    return register


# -- reusable arguments ------------------------------------------------------------------------

def stage_name(what: str = "the stage") -> argument:
    """The ``NAME`` positional of a sub-command on one stage."""
    return argument("name", metavar="NAME", help=f"name of {what}")


output = argument("-o", "--output", metavar="VAR",
                  help="also store the returned handle in the notebook variable VAR")


def store_output(magics: Any, args: argparse.Namespace, result: Any) -> Any:
    """``result``, also stored in the notebook variable ``--output`` names, if any."""
    if getattr(args, "output", None):
        magics.shell.user_ns[args.output] = result
    return result


def has_body(cell: str | None) -> bool:
    """Whether a cell magic was given a body with something in it."""
    return cell is not None and bool(cell.strip())


def find(name: str) -> Command:
    """The sub-command ``name``; a usage error with "did you mean" if there is none."""
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise FusionUsageError(f"%fusion has no sub-command {name!r}"
                               f"{did_you_mean(name, COMMANDS, HINT)} "
                               f"(sub-commands: {', '.join(COMMANDS)})")
    return cmd


def overview() -> str:
    """The magic's help: what it is, then each sub-command with its usage and an example."""
    lines = [
        "%fusion (line) and %%fusion (cell): build, run and watch a stream -> train -> serve",
        "pipeline on Ray. The cell body of stream and train is ordinary Python run in the",
        "notebook: stream takes the function it defines, train the `model` it makes.",
        "Re-running a cell replaces the stage in place. Settings: %config FusionMagics.",
        "`%fusion help COMMAND` or `%fusion COMMAND --help` shows every option.",
        "",
    ]
    for cmd in COMMANDS.values():
        usage = textwrap.indent(cmd.usage(), "    ").strip()
        lines += [f"{cmd.name}: {cmd.summary}", f"    {usage}", "    example:"]
        lines += [f"      {line}" for line in cmd.example.splitlines()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
