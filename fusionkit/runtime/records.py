"""The records that cross actors: what a stage host becomes, a pipeline event, a recovery.

Each is a frozen dataclass, so what one actor sends is what another reads: no key spelled
two ways, no field changed under a reader. They live low in the layers because stage actors
(stream, train, the drift watch) send events. The monitor and ``fk.recoveries()`` still hand
them out as rows (``as_dict``), and a record of an older fusionkit saved as a dict (a
recovery in a persisted controller table, an event sent as a dict) is read with ``of``.

Examples
--------
>>> e = Event("clicks", "pause")
>>> e.as_dict()
{'time': None, 'stage': 'clicks', 'kind': 'pause', 'version': None, 'status': None, 'detail': ''}
>>> Event.of({"stage": "ctr", "kind": "checkpoint fallback", "used": 3}).as_dict()["used"]
3
>>> r = Recovery.of({"stage": "ctr", "checkpoint": 4, "detected": 1.0, "recovered": 2.5,
...                  "seconds": 1.5, "steps": {"checkpoint": 0.1}})
>>> r.steps, r.as_dict()["steps"]
((('checkpoint', 0.1),), {'checkpoint': 0.1})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from fusionkit.runtime.specs import JoinSpec, StreamSpec, TableSpec, TrainSpec, slot

WORKERS = ("stream", "train", "join", "table")


@dataclass(frozen=True)
class Assignment:
    """What a stage host becomes (``StageHost.become``): a ``worker`` of one stage.

    ``index`` is the actor's place among its stage's actors; a stream actor's ``role`` is
    ``fused`` (reads and runs the chain), ``source`` (reads) or ``ops`` (runs the chain); a
    train actor has a ``registry`` to publish to; a join or table actor has neither.
    ``state`` is where it starts (from a checkpoint, or a stage defined again over a failed
    one; None: from the beginning). The
    controller's host pool keeps each host's assignment, so a host Ray restarts becomes the
    same actor again."""

    worker: Literal["stream", "train", "join", "table"]
    spec: StreamSpec | TrainSpec | JoinSpec | TableSpec
    index: int
    monitor: Any
    role: str = ""
    registry: Any = None
    state: Any = None

    def __post_init__(self) -> None:
        if self.worker not in WORKERS:
            raise ValueError(f"a stage host becomes one of {WORKERS}, not {self.worker!r}")

    @property
    def slot(self) -> str:
        """The actor's checkpoint slot (``fused0``, ``source0``, ``ops1``, ``train0``)."""
        return slot(self.role or self.worker, self.index)

    def but(self, **changes: Any) -> Assignment:
        """The same assignment with ``changes`` (a new spec, another starting state)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Event:
    """A pipeline event, as the monitor keeps it and ``fk.events()`` shows it: a version
    published, a rollback, a pin, a pause, a failure, an alarm, a recovery.

    ``time`` None: stamped by the monitor when it arrives (so a dashboard that asked for
    everything up to a time never misses an event sent just before it). ``extra``: further
    fields, as ``(name, value)`` pairs (a checkpoint fallback's ``checkpoint`` and ``used``)."""

    stage: str
    kind: str
    detail: str = ""
    version: int | None = None
    status: str | None = None
    time: float | None = None
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, record: Event | Mapping[str, Any]) -> Event:
        """An event from a record or a dict (as senders of older versions send them)."""
        if isinstance(record, Event):
            return record
        d = dict(record)
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        fields = {k: d.pop(k) for k in list(d) if k in known}
        fields.setdefault("stage", "")
        fields.setdefault("kind", "")
        if fields.get("detail") is None:
            fields["detail"] = ""
        return cls(**fields, extra=tuple(d.items()))

    def as_dict(self) -> dict[str, Any]:
        """The event as a row: the columns of ``fk.events()``, then its extra fields."""
        return {"time": self.time, "stage": self.stage, "kind": self.kind,
                "version": self.version, "status": self.status, "detail": self.detail,
                **dict(self.extra)}


@dataclass(frozen=True)
class Recovery:
    """A pipeline brought back to its last checkpoint (a row of ``fk.recoveries()``).

    ``stage``: the stage whose actor was lost, or ``(controller)`` after a controller
    restart; ``checkpoint``: the one restored (None: none was); ``detected``/``recovered``:
    when, on the clock of ``fusionkit._clock``; ``steps``: the seconds spent on each step
    (``(name, seconds)`` pairs; None where no step was timed)."""

    stage: str
    checkpoint: int | None
    detected: float
    recovered: float
    steps: tuple[tuple[str, float], ...] | None = None

    @property
    def seconds(self) -> float:
        return self.recovered - self.detected

    @classmethod
    def of(cls, record: Recovery | Mapping[str, Any]) -> Recovery:
        """A recovery from a record or a dict (a controller table saved by an older version)."""
        if isinstance(record, Recovery):
            return record
        steps = record.get("steps")
        return cls(record["stage"], record.get("checkpoint"), record["detected"],
                   record["recovered"], tuple(dict(steps).items()) if steps is not None else None)

    def as_dict(self) -> dict[str, Any]:
        """The recovery as a row: the columns of ``fk.recoveries()`` (no ``steps`` if none)."""
        row = {"stage": self.stage, "checkpoint": self.checkpoint, "detected": self.detected,
               "recovered": self.recovered, "seconds": self.seconds}
        if self.steps is not None:
            row["steps"] = dict(self.steps)
        return row
