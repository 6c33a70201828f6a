"""The source protocol: where events come from.

A source is a plain, picklable object. The stage's source actor calls ``open`` once, then
``read`` in a loop; pacing (``rate``) is applied by the actor, not by the source. Offsets
are integers counting events from the start of the source (for brokers: a position the
source can ``seek`` back to), so a stage can replay from a checkpoint. A source that reads
several partitions reports its ``position()`` itself, a ``{partition: offset}`` map, and may
``share`` its partitions out over the actors of a stage (``splittable``).
"""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd

from fusionkit._clock import monotonic


class Source:
    """Base class of sources. Subclasses implement ``read`` and, if they can, ``seek``.

    ``read(n)`` returns a DataFrame of at most ``n`` events with an ``_event_time`` column
    (float seconds) and an ``_offset`` column (int64), an empty DataFrame if nothing is
    available right now, or ``None`` when the source is exhausted for good.
    """

    #: events per second the actor paces this source to; ``None`` = as fast as taken
    rate: float | None = None
    #: name of the label column, if the source carries one
    label: str | None = None
    #: whether ``share`` can hand each actor of a stage its own part (a broker's partitions)
    splittable: bool = False
    #: the name of the stage reading this source, once the stage has told it (``bind``)
    stage: str | None = None

    def bind(self, stage: str) -> None:
        """The stage named ``stage`` reads this source: called by each of the stage's actors
        before ``open``. Broker sources name their consumer group after it by default, so
        two stages reading one stream or topic each see every event."""
        self.stage = stage

    def open(self) -> None:
        """Acquire resources (connections, files). Called once inside the actor."""

    def read(self, n: int) -> pd.DataFrame | None:
        raise NotImplementedError

    def seek(self, offset: int) -> None:
        """Make the next ``read`` start at ``offset`` (replay after a failure)."""
        raise NotImplementedError(f"{type(self).__name__} cannot seek")

    def commit(self, offset: int) -> None:
        """Everything before ``offset`` is covered by a completed checkpoint (brokers ack)."""

    def position(self) -> Any:
        """Where the next ``read`` starts, for a checkpoint; ``None``: the stage takes the
        last ``_offset`` read plus one (sources of one ordered offset need not say)."""
        return None

    def share(self, index: int, count: int) -> Source:
        """The part of this source actor ``index`` of ``count`` reads (``splittable``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be split over actors")

    def close(self) -> None:
        """Release resources."""

    def describe(self) -> dict[str, Any]:
        """A short description for status tables."""
        return {"kind": type(self).__name__, "rate": self.rate}


def later(a: Any, b: Any) -> Any:
    """The further of two source positions: offsets, or ``{partition: offset}`` maps (merged
    partition by partition, so the positions of several actors make the stage's).

    >>> later(5, 3), later({0: 4, 1: 2}, {1: 7, 2: 1})
    (5, {0: 4, 1: 7, 2: 1})
    """
    if a is None or a == 0 or a == {}:
        return b
    if b is None or b == 0 or b == {}:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        return {**a, **{k: max(v, a.get(k, v)) for k, v in b.items()}}
    if isinstance(a, dict) or isinstance(b, dict):
        raise TypeError(f"cannot combine source positions {a!r} and {b!r}")
    return max(a, b)


class Backoff:
    """Retry state of a connection: the delay doubles from ``first`` up to ``cap`` seconds
    with each failure in a row, and after ``give_up`` seconds of failing without a success
    ``expired()`` turns true so the caller can raise.

    >>> b = Backoff(first=0.1, cap=0.4, give_up=None)
    >>> delays = []
    >>> for _ in range(4):
    ...     b.failed(OSError("down"))
    ...     delays.append(b.delay())
    >>> delays, b.retrying
    ([0.1, 0.2, 0.4, 0.4], True)
    >>> b.ok(); b.retrying
    False
    """

    def __init__(self, first: float = 0.1, cap: float = 2.0, give_up: float | None = 300.0):
        self.first = first
        self.cap = cap
        self.give_up = give_up
        self.retries = 0  # failures in a row
        self.total = 0  # failures ever
        self.since: float | None = None
        self.last_error: str | None = None

    @property
    def retrying(self) -> bool:
        return self.retries > 0

    def ok(self) -> None:
        self.retries = 0
        self.since = None

    def failed(self, exc: BaseException) -> None:
        self.retries += 1
        self.total += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.since is None:
            self.since = monotonic()

    def expired(self) -> bool:
        return (self.give_up is not None and self.since is not None
                and monotonic() - self.since > self.give_up)

    def delay(self) -> float:
        return min(self.cap, self.first * 2 ** max(0, self.retries - 1))

    def wait(self, stop: threading.Event | None = None) -> None:
        """Sleep the current delay (returns early if ``stop`` is set)."""
        (stop or threading.Event()).wait(self.delay())
