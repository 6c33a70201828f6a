"""A pytest plugin: under nbval, a notebook cell fails whenever its kernel says it failed.

nbval (0.11) fails a cell only when the kernel publishes an ``error`` output. IPython
publishes none for a bare ``UsageError`` (a misspelled magic, ``%fusion`` before
``%load_ext fusionkit``): it prints the message to stderr, so ``pytest --nbval-lax`` passes
the cell (nbval issue #147) although the kernel answered the execute request with
``status: "error"``. That reply is what nbclient and papermill stop on; this plugin makes
nbval honour it too: each cell's reply is read as nbval waits for it, and a cell whose reply
is an error fails with the error's name and message. Cells marked to raise
(``# NBVAL_RAISES_EXCEPTION``, tag ``raises-exception``) are left to nbval.

Enabled for fusionkit's own tests by ``-p fusionkit.pytest_nbval`` in ``pyproject.toml``;
add the same option to check notebooks of your own.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


def _recording(kernel: Any, replies: dict[str, dict]) -> Any:
    """``kernel.get_message`` that also keeps the execute replies it reads, by request id."""
    get_message = kernel.get_message

    def get(stream: str, timeout: float | None = None) -> dict:
        msg = get_message(stream, timeout=timeout)
        if stream == "shell" and msg.get("msg_type") == "execute_reply":
            replies[msg["parent_header"].get("msg_id")] = msg["content"]
        return msg

    return get


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    try:
        from nbval.plugin import IPyNbCell
    except ImportError:  # pragma: no cover
        return (yield)
    kernel = getattr(item.parent, "kernel", None)
    if not isinstance(item, IPyNbCell) or kernel is None or item.options.get("check_exception"):
        return (yield)
    replies: dict[str, dict] = {}
    sent: list[str] = []
    execute = kernel.execute_cell_input

    def execute_and_note(*args: Any, **kwargs: Any) -> str:
        msg_id = execute(*args, **kwargs)
        sent.append(msg_id)
        return msg_id

    kernel.get_message = _recording(kernel, replies)
    kernel.execute_cell_input = execute_and_note
    try:
        result = yield  # nbval's own checks; an error output fails the cell there
    finally:
        del kernel.get_message, kernel.execute_cell_input  # back to the class's methods
    reply = replies.get(sent[-1]) if sent else None
    if reply is not None and reply.get("status") == "error":
        ename, evalue = reply.get("ename", "Error"), reply.get("evalue", "")
        item.raise_cell_error(
            f"Cell execution failed: {ename}: {evalue} (the kernel's reply is an error; "
            f"IPython printed it instead of showing it as an error output)",
            "\n" + "\n".join(reply.get("traceback") or [f"{ename}: {evalue}"]))
    return result
