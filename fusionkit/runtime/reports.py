"""What a stage's actors report about themselves, and a stage's row of ``fk.status()``.

These records cross actor boundaries: a stage actor's ``info()`` answers the controller with
one, a serve replica answers the deployment's status with one, and the controller's status
reads their fields by name. Frozen, so a report is what its actor said at one moment; one
class per shape, so a field has one name and one home instead of a dict built by hand in
each actor. They stop at the controller's face: ``fk.infos`` and ``fk.status()`` give plain
dicts (``to_dict``) with the keys they have always had.

A field that a report leaves out when it has nothing to say (a reader's ``partitions``, a
serve stage's ``url``) is ``None`` here and absent from ``to_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


def _to_dict(record: Any) -> dict[str, Any]:
    """One key per field of ``record``, less its optional fields that are ``None``."""
    optional = getattr(record, "_OPTIONAL", frozenset())
    return {f.name: getattr(record, f.name) for f in fields(record)
            if not (f.name in optional and getattr(record, f.name) is None)}

@dataclass(frozen=True, slots=True, kw_only=True)
class ActorReport:
    """What every report of one of a stage's actors (or serve replicas) carries. Alone, it
    stands for an actor that cannot say more: one that does not answer, a serve stage still
    deploying or whose deployment failed.

    >>> r = ActorReport(stage="clicks", status="failed", error="actor unreachable")
    >>> r.to_dict()["status"], r.totals
    ('failed', {})
    """

    stage: str
    index: int = 0
    status: str
    error: str | None = None
    traceback: str | None = ""
    totals: dict[str, float] = field(default_factory=dict)
    dead_letters: int = 0

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The report as the public API gives it (``fk.infos``): one key per field, less
        the optional ones it has nothing for."""
        return _to_dict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageActorReport(ActorReport):
    """What a running stage actor adds about its process (``StageActor.info``): its kind,
    where it runs, since when, whether Ray restarted it, the dead letters it dropped."""

    kind: str
    dead_letters_dropped: int = 0
    pid: int
    node: str
    started: float
    restarted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReport(StageActorReport):
    """A stream actor's report: its role (``ops``, or a reader), its source position, the
    batches it has in flight and waiting, the keys its operators hold, how far its reading
    lags the source's pace, and, for a reader of a split source, its partitions."""

    partitions: Any = None
    role: str
    offset: Any = 0
    inflight: int = 0
    waiting: int = 0
    held_keys: int = 0
    lag: float = 0.0

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"partitions"})


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainReport(StageActorReport):
    """A train actor's report: events learnt from, versions published, its prequential
    metrics, batches waiting, CPU seconds spent learning and on drift, why its last
    publishing failed (shown by ``fk.status()``, not a failure of the stage), and, when it
    learns served rows joined with their outcomes, how the served predictions did:
    ``served`` rows ``(model, version, n, correct, n_proba, loss)`` (``fk.online_metrics``)."""

    events_seen: int = 0
    published: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    waiting: int = 0
    cpu_learning: float = 0.0
    cpu_drift: float = 0.0
    cpu_drift_reporting: float = 0.0
    publish_error: str | None = None
    served: tuple[tuple[str, int, int, int, int, float], ...] = ()
    compared: dict[str, Any] = field(default_factory=dict)  # Comparison.rows() (fk.compare)


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinReport(StageActorReport):
    """A join actor's report: the examples it sent on, batches in flight and waiting, the
    inputs that have ended, and its join's counts: left and right events taken, left events
    ``pending`` (window open, no label yet), ``joined`` (a match) or ``timed_out`` (the
    default label), right events ``late`` (after their window), ``orphans`` (no left event),
    ``duplicates``, ``corrections`` (late positives emitted), ``overflow`` (emitted early
    past ``max_pending``), ``late_left`` (left events whose window had closed), ``unusable``
    (events without a usable key or event time); the ``watermark``, the rows held and the
    label delay percentiles (seconds of event time; NaN before the first match)."""

    examples: int = 0
    waiting: int = 0
    inflight: int = 0
    ended: tuple[str, ...] = ()
    lefts: int = 0
    rights: int = 0
    pending: int = 0
    joined: int = 0
    timed_out: int = 0
    late: int = 0
    orphans: int = 0
    duplicates: int = 0
    corrections: int = 0
    overflow: int = 0
    late_left: int = 0
    unusable: int = 0
    watermark: float = float("-inf")
    held_left: int = 0
    held_right: int = 0
    label_delay_p50: float = float("nan")
    label_delay_p99: float = float("nan")

    @staticmethod
    def counts_of(stats: dict[str, Any]) -> dict[str, Any]:
        """The report's fields from an ``IntervalJoin.stats()`` (its ``dead`` count is
        ``unusable`` here, apart from the actor's ``dead_letters``)."""
        names = {f.name for f in fields(JoinReport)} - {f.name for f in fields(StageActorReport)}
        out = {k: v for k, v in stats.items() if k in names}
        out["unusable"] = stats.get("dead", 0)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class TableReport(StageActorReport):
    """A table actor's report: the keys it holds and their partial rows, the lookups it
    answered and how many keys of them it did not hold (``misses``), events dropped as
    late or without an event time (``invalid``), keys ``evicted`` by the ttl, its stream
    time (the largest event time seen) and the batches waiting."""

    keys_held: int = 0
    held_rows: int = 0
    lookups: int = 0
    misses: int = 0
    late: int = 0
    invalid: int = 0
    evicted: int = 0
    clock: float = float("-inf")
    waiting: int = 0
    lookup_p99_ms: float = float("nan")  # the recent lookups' time in the actor
    # how old the recent batches' oldest events were (since read from the source) when the
    # table took them: how stale its values are, at the 99th percentile
    staleness_p99_ms: float = float("nan")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaReport:
    """A serve replica's report of itself: which replica, the version it answers with, how
    many times it swapped versions, its generation, its totals and process."""

    replica: str
    version: int | None = None
    swaps: int = 0
    generation: int = 0
    totals: dict[str, float] = field(default_factory=dict)
    pid: int
    model: str | None = None  # the model answering (the primary)
    routing: int = 0  # the generation of its routing (fk.canary, fk.promote)
    shadow_dropped: dict[str, int] = field(default_factory=dict)  # requests a shadow dropped

    def to_dict(self) -> dict[str, Any]:
        """The report as the replica's ``info()`` gives it."""
        return _to_dict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class StageSummary:
    """A stage's row of ``fk.status()``: the most telling status of its actors, their counts
    summed, the first error (or a publishing error), where a serve stage answers, and the
    served rows its train actors scored (``TrainReport.served``, when there are any), so the
    dashboard shows online metrics without asking the actors again; likewise each train
    actor's comparison of a serve stage's models (``TrainReport.compared``, when it scored
    any) and a serve stage's ``routing`` when it names more than one model, which is all the
    dashboard needs to show ``fk.compare`` of that stage; a table's ``keys_held``,
    ``lookups``, ``misses`` and ``lookup_p99_ms`` (``TableReport``)."""

    name: str
    kind: str
    status: str
    reason: str | None = None
    parallelism: int
    events: int = 0
    dead_letters: int = 0
    late: int = 0
    shed: int = 0
    on: str | None = None
    error: str | None = None
    traceback: str | None = None
    created: float
    restarts: int = 0
    actors: list[str] = field(default_factory=list)
    url: str | None = None
    route: str | None = None
    served: tuple[tuple[str, int, int, int, int, float], ...] | None = None
    compared: tuple[dict[str, Any], ...] | None = None  # per train actor: Comparison.rows()
    routing: dict[str, Any] | None = None  # serve, canaries or shadows: Routing.describe()
    # a table's keys held, lookups answered and keys of them it did not hold (TableReport)
    keys_held: int | None = None
    lookups: int | None = None
    misses: int | None = None
    lookup_p99_ms: float | None = None
    staleness_p99_ms: float | None = None

    _OPTIONAL: ClassVar[frozenset[str]] = frozenset({"url", "route", "served", "compared",
                                                     "routing", "keys_held", "lookups",
                                                     "misses", "lookup_p99_ms",
                                                     "staleness_p99_ms"})

    def to_dict(self) -> dict[str, Any]:
        """The row as ``fk.status()`` and the notebook receive it."""
        return _to_dict(self)
