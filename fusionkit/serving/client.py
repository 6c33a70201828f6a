"""Asking a serve stage for predictions from Python."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pandas as pd

from fusionkit.errors import FusionError
from fusionkit.serving.deploy import handle
from fusionkit.serving.limits import RETRIES

T = TypeVar("T")
_caller: ThreadPoolExecutor | None = None


def off_loop(fn: Callable[[], T]) -> T:
    """``fn()``, run on a helper thread when this thread runs an asyncio loop.

    A Jupyter kernel runs every cell inside its event loop, and a Serve handle's blocking
    ``result()`` refuses to run there; from a helper thread it waits without blocking the
    Serve router, whose loop is its own.
    """
    global _caller
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    if _caller is None:
        _caller = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fk-predict")
    return _caller.submit(fn).result()


class PredictionError(FusionError):
    """The serve stage refused the request (bad rows, no live version, ...)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (status {status})")
        self.status = status


def _ask(name: str, payload: Any, timeout: float) -> dict[str, Any]:
    """One answer from a replica; asked again on another one if the replica died meanwhile
    (Serve routes around a dead replica, but a request it held is lost with it), and
    through a new Serve client if Serve was restarted since this process's last request."""
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError

    from fusionkit.serving.deploy import forget_client

    for attempt in range(RETRIES + 1):
        try:
            return handle(name).predict.remote(payload).result(timeout_s=timeout)
        except (RayActorError, DeploymentUnavailableError) as exc:
            if attempt == RETRIES:
                raise
            if isinstance(exc, DeploymentUnavailableError):  # a handle of the old Serve
                forget_client()
    raise AssertionError("unreachable")


def predict(name: str, rows: Any, timeout: float = 30.0) -> pd.DataFrame:
    """Predictions of serve stage ``name`` for ``rows`` (a DataFrame or a list of records),
    one row each, with the model version that made them (and, for a stage that logs what it
    serves, each row's ``request_id``; for a stage with canaries, the ``model`` of each)."""
    if isinstance(rows, pd.DataFrame):
        rows = rows.drop(columns=[c for c in rows.columns if str(c).startswith("_")])
        payload: Any = rows.to_dict("records")
    else:
        payload = rows
    out = off_loop(lambda: _ask(name, payload, timeout))
    if "error" in out:
        raise PredictionError(out["status"], out["error"])
    frame = pd.DataFrame({"prediction": out["predictions"]})
    if "proba" in out:
        frame["proba"] = out["proba"]
    frame["version"] = out.get("versions", out["version"])
    if "models" in out:  # canaries: each row says which model answered it
        frame["model"] = out["models"]
    if "request_ids" in out:
        frame["request_id"] = out["request_ids"]
    return frame
