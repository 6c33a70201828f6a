"""Reading ``%fusion`` arguments: the magic's errors, value types and plain-sentence messages.

Sub-commands declare their arguments with IPython's ``magic_arguments``; argparse's own
messages ("unrecognized arguments: --rat 5") are rewritten here into one plain sentence
with a "did you mean" where a close match exists.

A mistake in a magic is a :class:`FusionUsageError`. It is an IPython ``UsageError`` (so
code that catches those catches it) that renders as a single line through
``_render_traceback_``. Unlike a bare ``UsageError``, which IPython prints to stderr
without marking the cell as failed, it reaches the notebook as an error output, so
``pytest --nbval-lax`` fails a notebook that misuses the magic, as nbclient does.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring
from IPython.utils.process import arg_split

from fusionkit._duration import parse_duration
from fusionkit._suggest import did_you_mean
from fusionkit.errors import FusionError


class FusionUsageError(UsageError, FusionError):
    """A ``%fusion`` sub-command, flag or value is wrong; the message says what to write."""

    def _render_traceback_(self) -> list[str]:
        return [f"UsageError: {self}"]


class CellError(FusionUsageError):
    """A ``%%fusion`` cell body does not define what its stage needs (a function, a model)."""

    def _render_traceback_(self) -> list[str]:
        return [f"CellError: {self}"]


HINT = "; did you mean {}?"  # how a usage error suggests a name (``_suggest.did_you_mean``)


def split(argstring: str) -> list[str]:
    """Split a magic's line the way IPython does (quotes group words)."""
    try:
        return arg_split(argstring, strict=True)
    except ValueError as exc:  # an unclosed quote
        raise FusionUsageError(f"cannot read the arguments {argstring!r}: {exc}") from None


def parse(command: Callable[..., Any], argstring: str, prog: str) -> argparse.Namespace:
    """Parse ``argstring`` with ``command``'s ``magic_arguments`` parser; plain errors."""
    parser = command.parser
    parser.allow_abbrev = False  # "--rat" is a typo to point out, not a prefix of "--rate"
    try:
        return parse_argstring(command, argstring)
    except UsageError as exc:
        raise FusionUsageError(f"{prog}: {explain(str(exc), parser)}") from None


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for action in parser._actions for o in action.option_strings]


def explain(message: str, parser: argparse.ArgumentParser) -> str:
    """Turn one of argparse's messages into a plain sentence."""
    m = re.match(r"unrecognized arguments: (.*)", message)
    if m:
        words = split(m.group(1))
        word = words[0] if words else m.group(1)
        if word.startswith("-"):
            return f"unknown option {word}{did_you_mean(word, _options(parser), HINT)}"
        return f"unexpected argument {word!r} (quote a value that contains spaces)"
    m = re.match(r"the following arguments are required: (.*)", message)
    if m:
        names = m.group(1).split(", ")
        return f"{' and '.join(names)} {'is' if len(names) == 1 else 'are'} required"
    m = re.match(r"argument ([^:]+): invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if m:
        flag, value, options = m.groups()
        choices = re.findall(r"'([^']*)'", options) or [c.strip() for c in options.split(",")]
        return (f"{_flag(flag)} cannot be {value!r}, it is one of {', '.join(choices)}"
                f"{did_you_mean(value, choices, HINT)}")
    m = re.match(r"argument ([^:]+): invalid (\w+) value: '([^']*)'", message)
    if m:
        flag, kind, value = m.groups()
        what = {"int": "a whole number", "float": "a number"}.get(kind, f"a {kind}")
        return f"{_flag(flag)} takes {what}, not {value!r}"
    m = re.match(r"argument ([^:]+): expected one argument", message)
    if m:
        return f"{_flag(m.group(1))} needs a value"
    m = re.match(r"argument ([^:]+): (.*)", message)
    if m:
        return f"{_flag(m.group(1))} {m.group(2)}"
    return message


def _flag(text: str) -> str:
    """argparse names an option "-o/--output"; keep the long name."""
    return text.split("/")[-1]


# -- value types (argparse ``type=`` callables) ------------------------------------------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def version_number(text: str) -> int:
    """A model version: ``3`` or ``v3``."""
    try:
        value = int(text[1:] if text[:1] in "vV" and len(text) > 1 else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes a version number such as 3 (see fk.models(NAME)), not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"versions start at 1, not {value}")
    return value


def rate(text: str) -> float | None:
    """Events per second: a positive number, or ``max`` for as fast as the stage takes them."""
    if text.lower() in ("max", "none", "unlimited"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes a number of events per second (or max), not {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of events per second, "
                                         f"not {text}")
    return value


def duration(text: str) -> float:
    """A positive duration such as ``250ms``, ``2s``, ``1min`` (a bare number is seconds)."""
    try:
        value = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes a duration such as 500ms, 2s or 1min, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration, not {text!r}")
    return value


def publish_every(text: str) -> str | int:
    """When a train stage publishes: a duration (``1s``, ``500ms``) or a number of events."""
    text = str(text).strip()
    if text.isdigit():
        if int(text) < 1:
            raise argparse.ArgumentTypeError("must be at least 1 event")
        return int(text)
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes a duration such as 1s or 500ms, or a number of events such as 1000, "
            f"not {text!r}") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"must be a positive duration, not {text!r}")
    return text


def stream_name(text: str) -> str:
    """The name of a stream stage a command defines (``served``, ``clicks-http``)."""
    from fusionkit._names import check_name
    from fusionkit.errors import InvalidNameError

    try:
        return check_name(text)
    except InvalidNameError:
        raise argparse.ArgumentTypeError(
            f"takes a stream name of letters, digits, '-', '_' or '.' such as served, "
            f"not {text!r}") from None


def port(text: str) -> int | str:
    """A TCP port, or ``auto``: the port Ray Serve already uses, else a free one."""
    if text.lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a port number or auto, not {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port between 1 and 65535, not {value}")
    return value


def canary_share(text: str) -> tuple[str, float]:
    """A canary and its share of the rows: ``ctr-tree=0.1`` (a fraction in (0, 1])."""
    model, eq, share = text.partition("=")
    try:
        value = float(share) if eq and model else None
    except ValueError:
        value = None
    if value is None:
        raise argparse.ArgumentTypeError(
            f"takes MODEL=SHARE such as ctr-tree=0.1, not {text!r}")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f"takes a share of the rows between 0 and 1 such as 0.1, not {share}")
    return model, value


def share(text: str) -> float:
    """A share of the rows in [0, 1] (0 removes a canary)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"takes a share of the rows between 0 and 1 such as 0.2, not {text!r}")
    return value
