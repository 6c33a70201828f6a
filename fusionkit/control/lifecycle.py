"""Defining and operating stages: what ``fk.stream``, ``fk.train``, ``fk.join``, ``fk.table``,
``fk.serve``, ``fk.pause``, ``fk.resume``, ``fk.scale``, ``fk.stop`` and ``fk.watch_drift``
do.

Defining a stage whose name exists replaces it in place: the new actors are started and
probed (the source opens, the model takes a sample) before the old ones are torn down, so a
definition that fails leaves the running stage alone. A stream stage with nothing to take
its events waits (its source does not move) until a train stage or a sink is defined on it,
or it is told to run alone. Specs are frozen: a change (paused, waiting, a drift watch) is a
new spec, kept in the stage's record and in what its hosts become after a restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import ray

from fusionkit._clock import now
from fusionkit._suggest import did_you_mean
from fusionkit.control import status as _status
from fusionkit.control.checkpoints import CheckpointCoordinator
from fusionkit.control.placement import check_feasible, placement
from fusionkit.control.pool import HostPool
from fusionkit.control.recovery import Recovery
from fusionkit.control.table import (
    CONSUMERS,
    KIND_ORDER,
    StageRecord,
    StageTable,
    join_assignments,
    stream_assignments,
    table_assignments,
    teardown,
    train_assignment,
)
from fusionkit.errors import FusionError, SchemaError, StageFailedError, StageNotFoundError
from fusionkit.runtime.dead_letters import DeadLetters
from fusionkit.runtime.records import Event
from fusionkit.runtime.reports import StageSummary
from fusionkit.runtime.specs import JoinSpec, StreamSpec, TableSpec, TrainSpec
from fusionkit.sources.base import later
from fusionkit.streaming.tables import TableState
from fusionkit.streaming.worker import OPS, SETTLE_TIMEOUT

log = logging.getLogger("fusionkit")
SETTLE_WAIT = SETTLE_TIMEOUT + 5.0  # a stream's settle answers within its own bound


def _check_kind(old: StageRecord | None, kind: str) -> None:
    if old is not None and old.kind != kind:
        raise FusionError(f"{old.name!r} is already a {old.kind} stage; stop it first "
                          f"or choose another name")


def _check_probe(name: str, result: dict[str, Any], actors: list[Any]) -> None:
    if result.get("ok"):
        return
    for a in actors:
        ray.kill(a, no_restart=True)
    if result.get("kind") == "usage":
        raise FusionError(result["error"])
    raise StageFailedError(name, result["error"], result.get("traceback", ""), "probe")


class Lifecycle:
    """Defines, replaces, pauses, resumes, scales and stops stages, under the controller's
    ``lock``, with its parts; ``persist()`` writes the controller's table after each."""

    def __init__(self, stages: StageTable, pool: HostPool, checkpoints: CheckpointCoordinator,
                 recovery: Recovery, monitor: Any, registry: Any, lock: threading.RLock,
                 persist: Callable[[], None]):
        self.stages, self.pool, self.checkpoints, self.recovery = stages, pool, checkpoints, recovery
        self.monitor, self.registry, self.lock, self.persist = monitor, registry, lock, persist

    def respec(self, rec: StageRecord, **changes: Any) -> None:
        """A stage's spec with ``changes`` (specs are frozen): kept in its record and in what
        its hosts become again after a restart (a paused stream comes back paused)."""
        rec.spec = dataclasses.replace(rec.spec, **changes)
        self.pool.respec(rec.all_actors, rec.spec)

    # -- defining stages ------------------------------------------------------------------
    def define_stream(self, spec: StreamSpec, state: dict | None = None,
                      dead: dict | None = None) -> StageSummary:
        with self.lock:
            old = self.stages.get(spec.name)
            _check_kind(old, "stream")
            if old is not None and state is None:
                states = self.recovery.taken_up(old, spec)
            else:
                # ``state`` (a scaled stage's position) goes to every actor that reads: a
                # ``{partition: offset}`` position gives each share its own partitions' offsets
                states = {slot: state for slot in spec.reading_slots()}
            if dead is not None:  # the dead letters of the actors it replaces: kept by one
                first = spec.slots()[0]
                states[first] = {**(states.get(first) or {}), "dead": dead}
            gen = self.stages.next_generation()
            # its actors read it: held until a consumer
            spec = dataclasses.replace(spec, waiting=self.stages.wait_reason(spec))
            assignments = stream_assignments(spec, self.monitor, states)
            options = placement(spec)
            check_feasible(spec.name, options)
            if spec.fused:
                source = None
                actors = self.pool.hosts(assignments, options)
            else:
                source, *actors = self.pool.hosts(assignments, options)
            new = [a for a in [source, *actors] if a is not None]
            readers = [source] if source is not None else actors
            probes = ray.get([r.probe.remote() for r in readers])  # each share opens
            for probe in probes:
                _check_probe(spec.name, probe, new)
            probe = probes[0]
            if old is not None:
                teardown(old)
                self.checkpoints.clear_failed([old])
            rec = StageRecord(spec.name, "stream", spec, actors, source, gen,
                              sample=probe.get("sample"))
            self.stages[spec.name] = rec
            targets = self.stages.downstream_targets(spec.name)
            ray.get([a.start.remote(targets, self.checkpoints.epoch) for a in actors])
            if source is not None:
                ray.get(source.start.remote({OPS: actors}, self.checkpoints.epoch))
            self.stages.rewire(spec.name)
            self.persist()
            return _status.summary(rec)

    def define_join(self, spec: JoinSpec) -> StageSummary:
        """Define (or replace) a join of two stream stages: both push to it, it pushes its
        examples to the train stages defined on it; its inputs read from now on."""
        with self.lock:
            ups = [self._join_input(spec, side) for side in ("left", "right")]
            gen, actors = self._replace(spec, join_assignments(spec, self.monitor))
            left = ups[0].sample
            sample = None if left is None else left.assign(**{spec.label: spec.default})
            rec = StageRecord(spec.name, "join", spec, actors, None, gen, sample=sample)
            self.stages[spec.name] = rec
            targets = self.stages.downstream_targets(spec.name)
            ray.get([a.start.remote(targets, self.checkpoints.epoch) for a in actors])
            self.stages.rewire(spec.name)
            for up in ups:
                self.stages.rewire(up.name)
            self._wake_if_read(spec.name)  # (once a train stage takes its examples)
            self.persist()
            return _status.summary(rec)

    def _replace(self, spec: Any, assignments: list[Any]) -> tuple[int, list[Any]]:
        """A new generation and hosts (placed by its hints) for stage ``spec``; the stage of
        that name it replaces (of the same kind) torn down once they are ready."""
        old = self.stages.get(spec.name)
        _check_kind(old, spec.kind)
        gen = self.stages.next_generation()
        options = placement(spec)
        check_feasible(spec.name, options)
        actors = self.pool.hosts(assignments, options)
        if old is not None:
            teardown(old)
            self.checkpoints.clear_failed([old])
        return gen, actors

    def _input_stream(self, name: str, head: str) -> StageRecord:
        """Stream stage ``name``, an input of a stage being defined; else an error that
        starts with ``head`` and lists the streams there are."""
        rec = self.stages.get(name)
        if rec is not None and rec.kind == "stream":
            return rec
        streams = sorted(n for n, r in self.stages.items() if r.kind == "stream")
        known = f"(streams: {', '.join(streams) or 'none'})"
        if rec is None:
            raise StageNotFoundError(f"{head}: there is no stage named {name!r} {known}."
                                     f"{did_you_mean(name, streams)}")
        raise FusionError(f"{head}: it is a {rec.kind} stage, not a stream {known}")

    def _join_input(self, spec: JoinSpec, side: str) -> StageRecord:
        """The stream stage a join takes as its ``side`` input, checked: it exists, is a
        stream, and its events have the key column."""
        name = getattr(spec, side)
        rec = self._input_stream(name, f"join {spec.name!r} cannot take {name!r} as its "
                                       f"{side} input")
        columns = None if rec.sample is None else [str(c) for c in rec.sample.columns]
        schema = getattr(rec.spec, "schema", None)
        if (columns is None and schema is not None and not rec.spec.operators
                and getattr(schema, "columns", None)):  # what it reads is what it emits
            columns = list(schema.columns)
        if columns is not None and spec.on not in columns:
            shown = [c for c in columns if not c.startswith("_")]
            raise SchemaError(f"join {spec.name!r} joins on {spec.on!r}, but the events of its "
                              f"{side} input {name!r} have no such column (they have: "
                              f"{', '.join(shown)})")
        return rec

    def define_table(self, spec: TableSpec) -> StageSummary:
        """Define (or replace) a table kept from a stream stage: the stream pushes every
        batch to it (and reads from now on, the table being a consumer of its events)."""
        with self.lock:
            self._table_input(spec)
            gen, actors = self._replace(spec, table_assignments(spec, self.monitor))
            rec = StageRecord(spec.name, "table", spec, actors, None, gen)
            self.stages[spec.name] = rec
            ray.get([a.start.remote(None, self.checkpoints.epoch) for a in actors])
            self.stages.rewire(spec.on)
            self._wake_if_read(spec.on)  # its first consumer: the stream reads now
            self.persist()
            return _status.summary(rec)

    def _table_input(self, spec: TableSpec) -> None:
        """The stream a table is kept from, checked: it exists, is a stream, and the events
        of its sample go into the table (key and aggregated columns, event times)."""
        head = f"table {spec.name!r} cannot be kept from {spec.on!r}"
        rec = self._input_stream(spec.on, head)
        if rec.sample is None or not len(rec.sample):
            return
        try:
            TableState(spec.window, spec.key, spec.ttl, spec.defaults).update(rec.sample)
        except KeyError as exc:
            raise SchemaError(f"{head}: {exc.args[0] if exc.args else exc}") from None

    def _features(self, features: Any, head: str, on: str | None = None) -> Any:
        """A stage's feature definition with its tables' definitions, checked: each is a
        table stage and, on the training path (``on``), kept from the stage's own input."""
        if features is None:
            return None
        specs = []
        for name in features.names:
            rec = self.stages.get(name)
            if rec is None or rec.kind != "table":
                tables = [r.name for r in self.stages.values() if r.kind == "table"]
                raise FusionError(f"{head}: its features read table {name!r}, which is not a "
                                  f"table stage; the tables are {tables} (define it with "
                                  f"fk.table first)")
            if on is not None and rec.spec.on != on:
                raise FusionError(
                    f"{head}: table {name!r} is kept from {rec.spec.on!r}, not from {on!r}. "
                    f"A train stage meets each of its events with the tables kept from its "
                    f"own input, as of just before the event; train on {rec.spec.on!r}, or "
                    f"keep the table from {on!r}")
            specs.append(rec.spec)
        try:
            return features.resolved(specs)
        except ValueError as exc:
            raise FusionError(f"{head}: {exc}") from None

    def define_train(self, spec: TrainSpec) -> StageSummary:
        with self.lock:
            up = self.stages.get(spec.on)
            if up is None or up.kind != "join":  # a stream's (or the error listing them)
                up = self.stages.record(spec.on, "stream")
            if spec.enrich is not None:
                spec = dataclasses.replace(spec, enrich=self._features(
                    spec.enrich, f"train stage {spec.name!r}", on=spec.on))
            old = self.stages.get(spec.name)
            _check_kind(old, "train")
            gen = self.stages.next_generation()
            options = placement(spec)
            check_feasible(spec.name, options)
            (actor,) = self.pool.hosts([train_assignment(spec, self.monitor, self.registry)],
                                       options)
            sample = up.sample
            if sample is None:
                peeks = ray.get([a.peek.remote(200) for a in up.actors])
                sample = next((p for p in peeks if p is not None), None)
            probe = ray.get(actor.probe.remote(sample))
            _check_probe(spec.name, probe, [actor])
            # with features, its copies of the tables start from them as they are, at a
            # clean cut of its input: every batch after it reaches both
            with self._settled(up if spec.enrich is not None else None):
                if spec.enrich is not None:
                    ray.get(actor.seed_tables.remote({
                        t.name: [s["table"] for s in ray.get(
                            [a.get_state.remote() for a in self.stages[t.name].actors])]
                        for t in spec.enrich.specs}))
                if old is not None:
                    teardown(old)
                    self.checkpoints.clear_failed([old])
                ray.get(self.registry.register.remote(spec.name, spec.keep, spec.guard))
                rec = StageRecord(spec.name, "train", spec, [actor], None, gen)
                self.stages[spec.name] = rec
                ray.get(actor.start.remote())
                self.stages.rewire(spec.on)
            self._wake_if_read(spec.on)  # its first consumer: the stream reads now
            self.persist()
            return _status.summary(rec)

    @contextlib.contextmanager
    def _settled(self, rec: StageRecord | None) -> Iterator[None]:
        """Hold stream ``rec`` at a clean cut while the block runs: its readers stop
        between two batches, and every batch it handed on has been taken by its consumers
        (``StreamWorker.settle``), so a consumer wired in the block gets every batch after
        what the others hold. A stage that cannot settle (an actor gone) is not held."""
        if rec is None or rec.kind != "stream" or not rec.readers:
            yield
            return
        readers = list(rec.readers)
        ops = list(rec.actors) if rec.source is not None else []
        try:
            settled = (all(ray.get([r.settle.remote() for r in readers], timeout=SETTLE_WAIT))
                       and all(ray.get([a.settle.remote() for a in ops], timeout=SETTLE_WAIT)))
            why = None if settled else "a consumer of it took no batch meanwhile (paused?)"
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            log.warning("fusionkit: stream %r could not be held at a clean cut for the stage "
                        "defined on it (its copies of the tables may miss a batch): %s",
                        rec.name, why)
        try:
            yield
        finally:
            try:
                ray.get([r.unsettle.remote() for r in readers], timeout=SETTLE_WAIT)
            except Exception:  # an actor gone: it holds no loop; the others let go in time
                pass

    def _wake_if_read(self, name: str) -> None:
        """The stream ``name`` (or a join's input streams) waiting for a consumer: read now
        if something takes their events."""
        for stream in self.stages.streams_under(name):
            up = self.stages[stream]
            if up.spec.waiting is None:
                continue
            why = self.stages.wait_reason(up.spec)
            if why is None:
                self.respec(up, waiting=None)
                ray.get([a.wake.remote() for a in up.all_actors])
            elif why != up.spec.waiting:  # still waiting, for another reason (a join's)
                self.respec(up, waiting=why)

    def define_serve(self, spec: Any, wait: bool = True) -> StageSummary:
        """Deploy a serve stage. Starting Ray Serve takes seconds the first time; with
        ``wait=False`` this returns at once and the stage shows ``starting`` until ready."""
        from fusionkit.serving.deploy import deploy
        from fusionkit.serving.routing import routing_of

        with self.lock:
            self.stages.record(spec.model, "train")
            _check_kind(self.stages.get(spec.name), "serve")
            if spec.enrich is not None:
                spec = dataclasses.replace(spec, enrich=self._features(
                    spec.enrich, f"serve stage {spec.name!r}"))
            rec = StageRecord(spec.name, "serve", spec, [], None, 0,
                              extra={"url": f"http://{spec.host}:{spec.port}{spec.route}",
                                     "route": spec.route, "deploying": True})
            self.stages[spec.name] = rec
            self.persist()
            # who answers what, before a replica starts: each reads it first
            ray.get(self.registry.set_route.remote(spec.name, routing_of(spec)))

        def run() -> None:
            try:
                rec.extra.update(deploy(spec))
            except Exception as exc:
                rec.extra["error"] = f"{type(exc).__name__}: {exc}"
                rec.extra["traceback"] = "".join(traceback.format_exception(exc))
            finally:
                rec.extra["deploying"] = False

        if wait:
            run()
            if "error" in rec.extra:
                raise StageFailedError(spec.name, rec.extra["error"], rec.extra["traceback"],
                                       "serve deployment")
        else:
            threading.Thread(target=run, daemon=True, name=f"fk-deploy-{spec.name}").start()
        return _status.summary(rec)

    def respec_serve(self, spec: Any) -> int:
        """A serve stage's definition with a new routing, its replicas left running: they
        follow it through the registry. Returns the routing's generation there."""
        from fusionkit.serving.routing import routing_of

        with self.lock:
            rec = self.stages.record(spec.name, "serve")
            generation = ray.get(self.registry.set_route.remote(spec.name, routing_of(spec)))
            rec.spec = spec
            self.persist()
            return generation

    # -- operating stages -----------------------------------------------------------------
    def stop(self, name: str | None = None) -> list[str]:
        with self.lock:
            names = [name] if name is not None else list(self.stages)
            recs = [self.stages.record(n) for n in names]
            # downstream first, so nothing pushes into a stopped stage
            for rec in sorted(recs, key=lambda r: KIND_ORDER.get(r.kind, 3)):
                teardown(rec)
                del self.stages[rec.name]
                if rec.kind in CONSUMERS:
                    for up in rec.inputs:
                        self.stages.rewire(up)
                        for stream in self.stages.streams_under(up):  # a join's inputs too
                            self._hold_if_unread(stream, rec.name, names)
                self.monitor.forget.remote(rec.name)
            self.persist()
            return names

    def _hold_if_unread(self, stream: str | None, stopped: str, stopping: list[str]) -> None:
        """``stopped`` was a consumer of ``stream``: if it was the last, the stream waits."""
        up = self.stages.get(stream) if stream is not None else None
        if (up is None or up.kind != "stream" or up.name in stopping
                or up.spec.waiting is not None):
            return
        waiting = self.stages.wait_reason(up.spec, stopped)
        if waiting is not None:
            self.respec(up, waiting=waiting)
            ray.get([a.hold.remote() for a in up.all_actors])

    def pause(self, name: str) -> str:
        rec = self.stages.record(name)
        if rec.kind == "serve":
            raise FusionError(f"{name!r} is a serve stage; serve stages cannot be paused")
        ray.get([a.pause.remote() for a in rec.all_actors])
        if rec.kind == "stream":  # a restored pipeline comes back paused too
            self.respec(rec, paused=True)
            self.persist()
        self.monitor.event.remote(Event(name, "pause"))
        return "paused"

    def resume(self, name: str) -> str:
        rec = self.stages.record(name)
        ray.get([a.resume.remote() for a in rec.all_actors])
        if rec.kind == "stream" and (rec.spec.paused or rec.spec.waiting is not None):
            # told to run with nothing downstream: it runs alone
            alone = {"start": True} if not self.stages.takers(rec.spec) else {}
            self.respec(rec, paused=False, waiting=None, **alone)
            self.persist()
        self.monitor.event.remote(Event(name, "resume"))
        return "running"

    def scale(self, name: str, n: int) -> StageSummary:
        if n < 1:
            raise FusionError(f"parallelism must be at least 1, got {n}")
        rec = self.stages.record(name)
        if rec.kind == "stream":
            # the readers stop first, and what they sent on is taken before the states are:
            # a reader still running would read on past the position taken (filing its dead
            # letters and sending its events), which the new actors would take again
            ray.get([a.stop.remote() for a in rec.readers])
            deadline = now() + 30.0
            while now() < deadline and any(
                    r.inflight for r in ray.get([a.info.remote() for a in rec.readers])):
                time.sleep(0.02)
            states = ray.get([a.get_state.remote() for a in rec.all_actors])  # readers first
            read = states[:len(rec.readers)]
            position = functools.reduce(later, [st["offset"] for st in read], None)
            spec = dataclasses.replace(rec.spec, parallelism=n)
            dead = DeadLetters.merge([st.get("dead") for st in states])
            return self.define_stream(spec, {"offset": position or 0}, dead=dead)
        if rec.kind == "serve":
            from fusionkit.serving.deploy import scale as serve_scale

            self.respec(rec, replicas=n)
            serve_scale(rec.spec)
            return _status.summary(rec)
        if rec.kind == "join":
            raise FusionError(f"{name!r} is a join stage: its parallelism is set when it is "
                              f"defined (fk.join(..., parallelism=N) again replaces it)")
        if rec.kind == "table":
            raise FusionError(f"{name!r} is a table stage: its parallelism is set when it is "
                              f"defined (fk.table(..., parallelism=N) again replaces it)")
        raise FusionError(f"{name!r} is a train stage: a train stage runs one learner and "
                          "cannot be scaled; scale its stream or its serve stage instead")

    def watch_drift(self, name: str, spec: Any) -> dict[str, Any] | None:
        """Attach a drift watch to a train stage (``None`` removes it); kept in its spec, so
        a restarted actor watches again."""
        rec = self.stages.record(name, "train")
        up = self.stages.get(rec.upstream)
        out = ray.get(rec.actors[0].watch_drift.remote(spec, up.sample if up else None))
        if not out["ok"]:
            raise FusionError(out["error"])
        self.respec(rec, drift=spec)
        self.persist()
        return out["watch"]
