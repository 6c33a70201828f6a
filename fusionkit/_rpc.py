"""Calls across actors: the remote side's own error, and waiting through a restart.

Ray wraps an exception raised in an actor method in ``RayTaskError``; the caller wants the
original (a ``StageNotFoundError`` with its message, not Ray's wrapper). An actor that Ray
is restarting answers ``ActorUnavailableError`` for a moment; a call that may be repeated
waits for it. These are the low-level pieces the API, handles, models and actors stand on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import ray

T = TypeVar("T")
RESTART_PAUSE = 0.2  # seconds between tries while an actor is being restarted


def cause_of(err: BaseException) -> BaseException:
    """The exception a remote call raised, unwrapped from Ray's ``RayTaskError``; else ``err``."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def get(refs: Any, timeout: float | None = None) -> Any:
    """``ray.get`` that re-raises the remote side's own error, not Ray's wrapper."""
    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.RayTaskError as err:
        raise cause_of(err) from None


def through_restart(call: Callable[[], T], wait: float) -> T:
    """``call()``, again every 0.2 s while its actor is being restarted, for up to ``wait``
    seconds (then the ``ActorUnavailableError`` is raised). ``call`` must be repeatable."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return call()
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(RESTART_PAUSE)
