"""What a stage is made of: plain records the controller keeps and hands to actors.

Frozen: a stage changed (paused, waiting, scaled, watched for drift) gets a new spec
(``dataclasses.replace``), so a spec an actor or a checkpoint holds never changes under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def slot(role: str, index: int) -> str:
    """An actor's checkpoint slot, its role and index: ``fused0``, ``source0``, ``ops1``,
    ``train0``. A checkpoint keeps each actor's state under its stage and slot."""
    return f"{role}{index}"


TRAIN_SLOT = slot("train", 0)  # a train stage's one actor


@dataclass(frozen=True)
class StreamSpec:
    name: str
    source: Any
    operators: list[Any] = field(default_factory=list)
    key: Any = None
    batch_size: int = 500
    linger: float = 0.01
    parallelism: int = 1
    max_inflight: int = 4
    schema: Any = None
    paused: bool = False  # defined paused: reads nothing until fk.resume, consumers or not
    start: bool = False  # reads even with nothing downstream (start=True, or fk.resume)
    # why it reads nothing yet: no stage takes its events (set by the controller, so an
    # actor Ray restarts, a restored pipeline and a restarted controller wait as well)
    waiting: str | None = None
    overload: str = "wait"  # "wait": backpressure (the source lags); "shed": drop, counted
    resources: dict[str, float] | None = None  # Ray resources each of its actors asks for
    placement: str = "pack"  # "pack": Ray's default (and the warm pool); "spread": node by node
    kind: str = "stream"

    @property
    def readers(self) -> int:
        """How many of its actors read the source: every one when the source splits over
        them (a broker's partitions) and no key asks to shuffle events by key; else one."""
        if self.parallelism > 1 and self.key is None and getattr(self.source, "splittable", False):
            return self.parallelism
        return 1

    @property
    def fused(self) -> bool:
        """Whether each actor reads and runs the whole chain ("fused"), rather than one
        "source" actor reading and partitioning for N "ops" actors."""
        return self.parallelism == 1 or self.readers > 1

    def roles(self) -> list[tuple[str, int]]:
        """Every actor's role and index, the reading ones first."""
        if self.fused:
            return [("fused", i) for i in range(self.readers)]
        return [("source", 0), *[("ops", i) for i in range(self.parallelism)]]

    def reading_slots(self) -> list[str]:
        """The checkpoint slots of the actors that read the source."""
        return [slot(role, i) for role, i in self.roles() if role != "ops"]

    def slots(self) -> list[str]:
        """Every actor's checkpoint slot (its role and index), the reading ones first."""
        return [slot(role, i) for role, i in self.roles()]

    def source_of(self, index: int) -> Any:
        """What actor ``index`` reads: its share of the partitions, or the whole source."""
        return self.source.share(index, self.readers) if self.readers > 1 else self.source


@dataclass(frozen=True)
class TrainSpec:
    name: str
    on: str
    model: Any
    label: str
    features: list[str] | None = None
    publish_every: float | None = 1.0
    publish_events: int | None = None
    guard: Any = None
    keep: int = 5
    max_inflight: int = 4
    learner_options: dict[str, Any] = field(default_factory=dict)
    drift: Any = None  # a DriftSpec once fk.watch_drift attached one
    resources: dict[str, float] | None = None  # Ray resources its actor asks for
    placement: str = "pack"  # "pack": Ray's default (and the warm pool); "spread": node by node
    # a fk.features definition (tables resolved) applied to each batch before it is learned
    enrich: Any = None
    kind: str = "train"


@dataclass(frozen=True)
class ServeSpec:
    name: str
    model: str
    replicas: int = 1
    route: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_rows: int = 10_000
    retry: bool | None = None  # HTTP through a retrying front; None: with 2+ replicas
    max_body_bytes: int = 8 * 2**20  # a larger request body is refused (413) unread
    # the stream stage of the rows it answers, and the folder its replicas append them to
    log: str | None = None
    log_folder: str | None = None
    # the stream stage of POST <route>/feedback rows, and their folder
    feedback: str | None = None
    feedback_folder: str | None = None
    # the models answering beside ``model`` (fusionkit.serving.routing): canaries with their
    # share of the rows, shadows answering every request into the log only, the sticky key
    canary: tuple[tuple[str, float], ...] = ()
    shadow: tuple[str, ...] = ()
    sticky: str | None = None
    # a fk.features definition (tables resolved) applied to request rows, and how long a
    # replica keeps the table values it read
    enrich: Any = None
    staleness: float = 0.05
    kind: str = "serve"

    @property
    def front(self) -> bool:
        """Whether HTTP requests go through the stage's retrying front (``HttpFront``)."""
        return self.retry if self.retry is not None else self.replicas >= 2


@dataclass(frozen=True)
class JoinSpec:
    """An interval join of stream ``left`` with stream ``right`` on key ``on``; its
    parameters are :class:`~fusionkit.streaming.join.IntervalJoin`'s, by the same names."""

    name: str
    left: str
    right: str
    on: str
    within: float
    label: str = "label"
    default: Any = 0
    allowed_lateness: float = 0.0
    idle: float | None = 5.0
    late: str = "side"  # "side": late outcomes counted and dead-lettered; "emit": corrections
    late_horizon: float | None = None
    max_pending: int | None = None
    key_type: Any = None
    parallelism: int = 1
    max_inflight: int = 4
    resources: dict[str, float] | None = None
    placement: str = "pack"
    kind: str = "join"

    def slots(self) -> list[str]:
        return [slot("join", i) for i in range(self.parallelism)]


@dataclass(frozen=True)
class TableSpec:
    """A table over stream ``on``: per ``key``, the aggregates of ``window`` (a
    ``fk.sliding`` or ``fk.tumbling``) still open at the key's newest event, keys quiet for
    ``ttl`` seconds of event time evicted, ``defaults`` for a key it does not hold; the
    parameters of :class:`~fusionkit.streaming.tables.TableState`."""

    name: str
    on: str
    window: Any
    key: str | None = None
    ttl: float | None = None
    defaults: dict[str, Any] | None = None
    parallelism: int = 1
    resources: dict[str, float] | None = None
    placement: str = "pack"
    kind: str = "table"

    def slots(self) -> list[str]:
        return [slot("table", i) for i in range(self.parallelism)]
