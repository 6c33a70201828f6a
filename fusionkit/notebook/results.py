"""What ``%fusion`` returns: live stage handles, the pipeline's status, notes and help.

Each result displays richly in Jupyter (a live widget where it helps, always a ``text/html``
table and ``text/plain``) and is also a plain object to keep working with from Python, e.g.
``api = %fusion serve ctr-api --model ctr`` then ``api.predict(rows)``.
"""

from __future__ import annotations

import html
import time
from typing import Any

import pandas as pd

from fusionkit.errors import StageFailedError
from fusionkit.handles import StageHandle
from fusionkit.notebook.live import LiveView, snapshot


class LiveStage(StageHandle):
    """A stage handle whose display is a live status table of the stage.

    Everything a :class:`fusionkit.handles.StageHandle` does, plus :meth:`wait` and
    :meth:`close` (stop the live updates of its display).
    """

    def __init__(self, name: str, kind: str):
        super().__init__(name, kind)
        self.view = LiveView((name,), f"{kind} stage {name}")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.view.mimebundle(repr(self))

    def close(self) -> None:
        """Stop updating this handle's display (the stage keeps running)."""
        self.view.close()

    def wait(self, status: str | None = None, events: int | None = None,
             version: int | None = None, timeout: float = 120.0) -> dict[str, Any]:
        """Block until the stage is ready; see :func:`wait_for_stage`."""
        return wait_for_stage(self.name, status=status, events=events, version=version,
                              timeout=timeout)


class StatusView:
    """The whole pipeline's status; displays as a live table, ``frame()`` gives a DataFrame."""

    def __init__(self) -> None:
        self.view = LiveView(None, "pipeline")

    def frame(self) -> pd.DataFrame:
        """``fusionkit.status()`` now: one row per stage."""
        from fusionkit.api import status

        return status()

    def __repr__(self) -> str:
        try:
            return self._plain(snapshot())
        except Exception as exc:
            return self._plain(None, str(exc))

    @staticmethod
    def _plain(rows: dict[str, dict[str, Any]] | None, error: str = "") -> str:
        if rows is None:
            return f"<fusionkit pipeline: status unavailable {error}>".replace("  ", " ")
        listing = ", ".join(f"{n} {r['status']}" for n, r in rows.items()) or "no stages"
        return f"<fusionkit pipeline: {listing}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.view.mimebundle(self._plain)

    def close(self) -> None:
        self.view.close()


class Note:
    """A short outcome of an operation (``stopped clicks``), shown as text."""

    def __init__(self, text: str, **data: Any):
        self.text = text
        self.data = data

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return f"<span class='fusionkit-note'><b>fusionkit</b> {html.escape(self.text)}</span>"


class Help:
    """Help text of the magic or of one sub-command."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return f"<pre class='fusionkit-help'>{html.escape(self.text)}</pre>"


# -- failures and waiting ---------------------------------------------------------------------

def stage_failure(name: str) -> StageFailedError:
    """The failure of stage ``name``, headed by the actor where it happened."""
    from fusionkit.stages import infos as infos_of

    infos = infos_of(name)
    bad = next((i for i in infos if i.get("status") == "failed"), None) or {}
    kind, index, pid = bad.get("kind"), bad.get("index"), bad.get("pid")
    actor = " ".join(str(p) for p in (kind, "actor" if index is not None else None, index)
                     if p is not None)
    if pid is not None:
        actor += f", pid {pid}"
    return StageFailedError(name, bad.get("error") or "failed", bad.get("traceback") or "",
                            actor.strip(", "))


def check(name: str | None = None) -> list[str]:
    """Raise the failure of the first failed stage (of ``name``, or of any); else the names."""
    rows = snapshot(None if name is None else (name,))
    if name is not None and name not in rows:
        from fusionkit.stages import infos

        infos(name)  # the controller's "no stage named ..., did you mean" error
    for row in rows.values():
        if (name is None or row["name"] == name) and row["status"] == "failed":
            raise stage_failure(row["name"])
    return [name] if name is not None else list(rows)


def _ready(row: dict[str, Any], status: str | None, events: int | None,
           version: int | None) -> bool:
    if status is not None:
        if row["status"] != status:
            return False
    elif row["status"] not in ("running", "finished"):
        return False
    if events is not None and row["events"] < events:
        return False
    if version is None and status is None and events is None and row["kind"] == "train":
        version = 1  # by default a train stage is ready once a model is live
    return version is None or (row.get("version") or 0) >= version


def wait_for_stage(name: str, status: str | None = None, events: int | None = None,
                   version: int | None = None, timeout: float = 120.0,
                   poll: float = 0.2) -> dict[str, Any]:
    """Block until stage ``name`` is ready, and return its status row.

    Ready means: ``status`` if given (else running); at least ``events`` events in if
    given; a live model version of at least ``version`` (train stages default to 1, a
    first version). Raises ``StageFailedError`` as soon as the stage fails, and
    ``TimeoutError`` after ``timeout`` seconds.
    """
    from fusionkit.stages import infos

    deadline = time.monotonic() + timeout
    while True:
        row = snapshot((name,)).get(name)
        if row is None:
            infos(name)  # raises StageNotFoundError with "did you mean"
            raise StageFailedError(name, "stopped while waiting for it")
        if row["status"] == "failed":
            raise stage_failure(name)
        if _ready(row, status, events, version):
            return row
        if time.monotonic() > deadline:
            want = [f"status {status or 'running'}"]
            if events is not None:
                want.append(f"{events:,} events")
            if version is not None or (row["kind"] == "train" and status is None
                                       and events is None):
                want.append(f"model version {version or 1}")
            live = f", live version {row['version']}" if row.get("version") else ""
            why = f" ({row['reason']})" if row.get("reason") else ""
            raise TimeoutError(
                f"stage {name!r} did not reach {' and '.join(want)} within {timeout:g}s: "
                f"it is {row['status']}{why} with {row['events']:,} events{live}")
        time.sleep(poll)
