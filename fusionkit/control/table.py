"""The stage table: every stage the controller holds, and how their actors are wired.

A ``StageRecord`` is one stage: its spec, its actors (a stream's reading ``source`` apart
from the ``actors`` that run its chain), the generation of its definition (a checkpoint
covers a stage only if taken of the same generation) and what it showed at its definition.
The ``StageTable`` maps names to records and answers what the controller asks of them:
which train stages a stream feeds, what each actor is asked to become (its
:class:`~fusionkit.runtime.records.Assignment`), why a stream waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import ray

from fusionkit._clock import now
from fusionkit._suggest import did_you_mean
from fusionkit.errors import StageNotFoundError
from fusionkit.runtime.records import Assignment
from fusionkit.runtime.specs import TRAIN_SLOT, JoinSpec, StreamSpec, TableSpec, TrainSpec, slot

STOP_TIMEOUT = 5.0
KIND_ORDER = {"serve": 0, "train": 1, "table": 1, "join": 1.5, "stream": 2}  # downstream first
CONSUMERS = ("train", "join", "table")  # the kinds that take a stage's events


@dataclass
class StageRecord:
    name: str
    kind: str
    spec: Any
    actors: list[Any] = field(default_factory=list)   # actors that receive or run the chain
    source: Any = None                                 # the reading actor of source + ops
    generation: int = 0
    created: float = field(default_factory=now)
    sample: pd.DataFrame | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def all_actors(self) -> list[Any]:
        return ([self.source] if self.source is not None else []) + list(self.actors)

    @property
    def readers(self) -> list[Any]:
        """The actors of a stream stage that read its source."""
        return [self.source] if self.source is not None else list(self.actors)

    @property
    def upstream(self) -> str | None:
        return getattr(self.spec, "on", None) if self.kind in ("train", "table") else None

    @property
    def inputs(self) -> list[str]:
        """The stages whose events it takes: a train or table stage's one, a join's two."""
        if self.kind == "join":
            return [self.spec.left, self.spec.right]
        return [self.upstream] if self.upstream is not None else []


def stream_assignments(spec: StreamSpec, monitor: Any, states: dict[str, Any] | None = None
                       ) -> list[Assignment]:
    """What a stream stage's actors become: the fused ones (one, or one per share of a split
    source), or source + operators; each with its slot's state in ``states``."""
    states = states or {}
    return [Assignment("stream", spec, i, monitor, role=role, state=states.get(slot(role, i)))
            for role, i in spec.roles()]


def train_assignment(spec: TrainSpec, monitor: Any, registry: Any, state: Any = None
                     ) -> Assignment:
    """What a train stage's one actor becomes."""
    return Assignment("train", spec, 0, monitor, registry=registry, state=state)


def join_assignments(spec: JoinSpec, monitor: Any, states: dict | None = None
                     ) -> list[Assignment]:
    """What a join stage's actors become (one per part of the keys), with their states
    from a checkpoint (``{slot: state}``)."""
    states = states or {}
    return [Assignment("join", spec, i, monitor, state=states.get(slot("join", i)))
            for i in range(spec.parallelism)]


def table_assignments(spec: TableSpec, monitor: Any, states: dict | None = None
                      ) -> list[Assignment]:
    """What a table stage's actors become, with their states from a checkpoint."""
    states = states or {}
    return [Assignment("table", spec, i, monitor, state=states.get(slot("table", i)))
            for i in range(spec.parallelism)]


def assignments_of(rec: StageRecord, monitor: Any, registry: Any) -> list[Assignment]:
    """What each of a stage's actors was asked to become (without its starting state), in
    the order of ``rec.all_actors``."""
    if rec.kind == "stream":
        return stream_assignments(rec.spec, monitor)
    if rec.kind == "train":
        return [train_assignment(rec.spec, monitor, registry)]
    if rec.kind == "join":
        return join_assignments(rec.spec, monitor)
    if rec.kind == "table":
        return table_assignments(rec.spec, monitor)
    return []


def slots(rec: StageRecord) -> list[tuple[str, Any]]:
    """Each actor of a stream or train stage with its checkpoint slot."""
    if rec.kind == "train":
        return [(TRAIN_SLOT, rec.actors[0])]
    if rec.kind in ("join", "table"):
        return [(slot(rec.kind, i), a) for i, a in enumerate(rec.actors)]
    if rec.source is None:
        return [(slot("fused", i), a) for i, a in enumerate(rec.actors)]
    return [(slot("source", 0), rec.source)] + [(slot("ops", i), a) for i, a in enumerate(rec.actors)]


def teardown(rec: StageRecord) -> None:
    """Stop a stage's actors (briefly waited for) and end them; undeploy a serve stage."""
    actors = rec.all_actors
    refs = [a.stop.remote() for a in actors]
    try:
        ray.get(refs, timeout=STOP_TIMEOUT)
    except Exception:
        pass
    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except Exception:
            pass
    if rec.kind == "serve":
        from fusionkit.serving.deploy import undeploy

        undeploy(rec.spec)


class StageTable(dict[str, StageRecord]):
    """The stages by name, and the generation the next definition gets."""

    def __init__(self) -> None:
        super().__init__()
        self.generation = 0

    def next_generation(self) -> int:
        self.generation += 1
        return self.generation

    def record(self, name: str, kind: str | None = None) -> StageRecord:
        """The stage of that name (and kind); else an error listing the ones there are."""
        rec = self.get(name)
        if rec is None or (kind is not None and rec.kind != kind):
            names = [n for n, r in self.items() if kind is None or r.kind == kind]
            what = f"{kind} stage" if kind else "stage"
            listing = ", ".join(sorted(names)) or "none"
            raise StageNotFoundError(
                f"there is no {what} named {name!r} (defined: {listing}).{did_you_mean(name, names)}")
        return rec

    def trains_of(self, stream: str | None) -> list[StageRecord]:
        """The train stages defined on a stream."""
        return [r for r in self.values() if r.kind == "train" and r.upstream == stream]

    def joins_of(self, stream: str | None) -> list[StageRecord]:
        """The join stages that take a stream as one of their inputs."""
        return [r for r in self.values() if r.kind == "join" and stream in r.inputs]

    def tables_of(self, stream: str | None) -> list[StageRecord]:
        """The table stages kept from a stream."""
        return [r for r in self.values() if r.kind == "table" and r.upstream == stream]

    def groups(self) -> list[list[StageRecord]]:
        """The pipelines: stream, join, train and table stages linked by what they take,
        each checkpointed and rolled back as one (a join makes its two streams' one)."""
        recs = {n: r for n, r in self.items() if r.kind in ("stream", *CONSUMERS)}
        parent = {n: n for n in recs}

        def root(n: str) -> str:
            while parent[n] != n:
                parent[n] = parent[parent[n]]
                n = parent[n]
            return n

        for n, r in recs.items():
            for up in r.inputs:
                if up in parent:
                    parent[root(n)] = root(up)
        out: dict[str, list[StageRecord]] = {}
        for n, r in recs.items():
            out.setdefault(root(n), []).append(r)
        return list(out.values())

    def group_of(self, name: str) -> list[StageRecord]:
        """The pipeline of stage ``name`` (empty: none, or a serve stage)."""
        return next((g for g in self.groups() if name in {r.name for r in g}), [])

    def stream_of(self, rec: StageRecord | None) -> str | None:
        """The stream whose pipeline a stage belongs to (None: a serve stage's own)."""
        if rec is None or rec.kind == "serve":
            return None
        group = self.group_of(rec.name)  # named by its first stream
        streams = sorted(r.name for r in group if r.kind == "stream")
        if streams:
            return streams[0]
        return rec.upstream if rec.kind in ("train", "table") else rec.name

    def downstream_targets(self, stream: str) -> dict[str, list[Any]]:
        """Where a stream's (or a join's) actors push: the train, join and table stages on
        it."""
        return {r.name: r.actors for r in
                self.trains_of(stream) + self.joins_of(stream) + self.tables_of(stream)
                if r.actors}

    def rewire(self, stream: str | None) -> None:
        """Tell a stream's actors where its events go now, and its train stages how many
        actors send to them."""
        rec = self.get(stream) if stream is not None else None
        if rec is None:
            return
        targets = self.downstream_targets(rec.name)
        n = len(rec.actors)
        ray.get([a.set_upstream.remote(self.senders(name, n)) for name, hs in targets.items()
                 for a in hs])
        ray.get([a.set_targets.remote(targets) for a in rec.actors])

    def streams_under(self, name: str | None) -> list[str]:
        """The stream stages whose reading depends on stage ``name``'s consumers: itself (a
        stream) or its inputs (a join; a table, whose stream it is)."""
        rec = self.get(name) if name is not None else None
        if rec is None:
            return []
        if rec.kind == "stream":
            return [name]
        return list(rec.inputs) if rec.kind in ("join", "table") else []

    def senders(self, name: str, n: int) -> int | dict[str, int]:
        """What ``set_upstream`` tells the actors of stage ``name`` (``n``: the actors of the
        one stage being wired): a join hears how many actors each of its inputs has."""
        rec = self.get(name)
        if rec is None or rec.kind != "join":
            return n
        return {s: len(self[s].actors) if s in self else 1 for s in rec.inputs}

    def takers(self, spec: StreamSpec) -> list[str]:
        """What takes a stream stage's events: the train, join and table stages defined on
        it, a sink in its chain."""
        # a join takes it once something takes the join's examples (else they would be lost)
        joins = [r.name for r in self.joins_of(spec.name) if self.trains_of(r.name)]
        trains = ([r.name for r in self.trains_of(spec.name)] + joins
                  + [r.name for r in self.tables_of(spec.name)])
        return trains + [type(op).__name__ for op in spec.operators if getattr(op, "sink", False)]

    def wait_reason(self, spec: StreamSpec, stopped: str | None = None) -> str | None:
        """Why a stream stage reads nothing (None: it reads). It reads once something takes
        its events, or when told to run alone (``start=True``, ``fk.resume``): a stream that
        read for nobody would move its source (and acknowledge a broker) past events no
        stage used. A stage whose last consumer is stopped waits again (the same rule)."""
        if spec.start or self.takers(spec):
            return None
        since = f"since {stopped!r} was stopped" if stopped else "yet"
        joins = [r.name for r in self.joins_of(spec.name)]
        if joins:
            return (f"join {joins[0]!r} takes {spec.name!r}, but no stage learns the join's "
                    f"examples {since}: define a train stage on {joins[0]!r}, or "
                    f"fk.resume({spec.name!r}) to run it alone")
        return (f"no stage reads {spec.name!r} {since}: define one on it, or "
                f"fk.resume({spec.name!r}) to run it alone")
