"""The controller: the one source of truth of a pipeline.

A named, detached actor in the ``fusionkit`` namespace holds every stage's actors, the
monitor and the registry. Defining a stage whose name exists replaces it in place; any
driver that connects to the same cluster sees the same stages.

The controller survives its own death: Ray restarts it (``max_restarts=-1``), and it reads
its stage table back from ``<storage>/controller/stages.pkl`` (written atomically on every
define, stop, pause, resume, recovery and checkpoint). Stage hosts, the monitor and the
registry are detached named actors, so they outlive the controller's process: the restarted
controller adopts them by name and the pipeline goes on without a rollback. A pipeline that
lost an actor meanwhile is started again on fresh hosts from its last checkpoint. Every
checkpoint also holds the stage table, so ``restore()`` can start the pipeline from it, in
this cluster or in a new one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import ray.cloudpickle

from fusionkit import _signing
from fusionkit._clock import now
from fusionkit._files import write_atomic
from fusionkit._rpc import cause_of, through_restart
from fusionkit._suggest import did_you_mean
from fusionkit.control.actors import MONITOR, NAMESPACE, REGISTRY, Host, MonitorActor, Registry
from fusionkit.errors import FusionError, StageFailedError, StageNotFoundError, StorageKeyError
from fusionkit.runtime.checkpoint import CheckpointStore
from fusionkit.runtime.dead_letters import DeadLetters
from fusionkit.runtime.specs import StreamSpec, TrainSpec
from fusionkit.sources.base import later
from fusionkit.streaming.worker import OPS

STOP_TIMEOUT = 5.0
SPARE_HOSTS = 3  # warm processes kept ready, so defining a stage does not wait for one
INFO_TIMEOUT = 3.0
HEAD_RESOURCE = "node:__internal_head__"
PLACE_TIMEOUT = 120.0  # how long a stage with placement hints waits for a node with room
HOST_PREFIX = "fk-host-"  # stage hosts are named, so a restarted controller finds them
TABLE_FILE = "stages.pkl"
# checkpoint ids after a controller restart skip ahead, so a barrier still travelling from
# before the restart is never taken for a new checkpoint's; the next id is saved at least
# every CKPT_ID_GAP // 2 ids, so no id is ever handed out twice (a receiver passes over a
# barrier of an id at or below one it has seen: channel.Inbox.barrier)
CKPT_ID_GAP = 16

log = logging.getLogger("fusionkit")


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
        return getattr(self.spec, "on", None) if self.kind == "train" else None


def _wait_ready(actor: Any, timeout: float = 120.0) -> None:
    """Wait for an actor that Ray may still be restarting."""
    deadline = now() + timeout
    through_restart(lambda: ray.get(actor.ready.remote(), timeout=max(1.0, deadline - now())),
                    timeout)


def _new_host(options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """A detached, named stage host: it outlives a controller restart (then is adopted).
    ``options``: Ray options from a stage's placement hints (``_placement``)."""
    name = f"{HOST_PREFIX}{uuid.uuid4().hex[:16]}"
    return Host.options(name=name, namespace=NAMESPACE, lifetime="detached",
                        **(options or {})).remote(), name


def _placement(spec: Any) -> dict[str, Any]:
    """Ray options for a stage's hosts from its placement hints: ``resources`` (every actor
    of the stage asks for them; CPU, GPU and memory become Ray's own options) and
    ``placement="spread"`` (marked ``SPREAD`` here; ``_host_options`` gives each host its
    node). Empty: no hints, warm pool hosts do. Ray keeps these options when it restarts a
    host, on whichever node offers them."""
    options: dict[str, Any] = {}
    resources = dict(getattr(spec, "resources", None) or {})
    for key, option in (("CPU", "num_cpus"), ("GPU", "num_gpus"), ("memory", "memory")):
        if key in resources:
            options[option] = resources.pop(key)
    if resources:
        options["resources"] = resources
    if getattr(spec, "placement", "pack") == "spread":
        options["scheduling_strategy"] = "SPREAD"
    return options


SPREAD_CPU = 0.01  # a spread host's CPU: Ray 2.60 ignores a soft node affinity of 0-CPU actors


def _host_options(options: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Options for ``count`` hosts of a stage. With ``placement="spread"`` each host gets the
    next of the live nodes that offer what the stage asks for, in turn, as a soft node
    affinity: a host whose node is gone or full goes elsewhere (Ray's own SPREAD is best
    effort and put all four actors of a stage on one node of three)."""
    if options.get("scheduling_strategy") != "SPREAD":
        return [options] * count
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    base = {**options, "num_cpus": options.get("num_cpus") or SPREAD_CPU}
    nodes = sorted(n["NodeID"] for n in _offering(_needs(base)))
    if not nodes:
        return [options] * count
    return [{**base, "scheduling_strategy":
             NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True)}
            for i in range(count)]


def _needs(options: dict[str, Any]) -> dict[str, float]:
    """The resources a host started with ``options`` asks Ray for."""
    need = dict(options.get("resources", {}))
    for key, option in (("CPU", "num_cpus"), ("GPU", "num_gpus"), ("memory", "memory")):
        if options.get(option):
            need[key] = options[option]
    return need


def _offering(need: dict[str, float]) -> list[dict[str, Any]]:
    """The live nodes that offer ``need``."""
    return [n for n in ray.nodes() if n.get("Alive")
            and all(n["Resources"].get(k, 0) >= v for k, v in need.items())]


def _check_feasible(name: str, options: dict[str, Any]) -> None:
    """Raise a clear error at once if no live node offers what a stage's actors ask for
    (Ray would keep them pending for ever)."""
    need = _needs(options)
    if not need or _offering(need):
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    offered = sorted({k for n in nodes for k in n["Resources"]
                      if not k.startswith("node:") and not k.startswith("object_store")})
    raise FusionError(f"no node of the cluster offers the resources stage {name!r} asks for "
                      f"({need}); the nodes offer: {', '.join(offered) or 'nothing'}. Start a "
                      f"node with them (ray start --resources='{{\"name\": 1}}') or change "
                      f"resources=")


def on_head() -> dict[str, Any]:
    """Ray options that keep an actor on the head node: the controller, the registry and
    the monitor, so that losing a worker node costs only the stage actors it held. A sliver
    of the head's own resource (Ray 2.60 placed zero-CPU actors with a soft node affinity
    on any node). Empty if there is no head (a cluster that lost it)."""
    for node in ray.nodes():
        if node.get("Alive") and HEAD_RESOURCE in node.get("Resources", {}):
            return {"resources": {HEAD_RESOURCE: 0.001}}
    return {}


def _reconstructed() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _stream_calls(spec: StreamSpec, monitor: Any, states: dict[str, Any] | None = None
                  ) -> list[tuple]:
    """``become`` arguments of a stream stage's actors: the fused ones (one, or one per
    share of a split source), or source + operators."""
    states = states or {}
    return [("stream", spec, role, i, monitor, states.get(f"{role}{i}"))
            for role, i in spec.roles()]


def _preload() -> None:
    """Import what unpickling a train stage's spec needs (River, the learner adapters) while
    nobody waits: the first ``fk.train`` would otherwise pay about a second for it."""
    import river.compose  # noqa: F401
    import river.linear_model  # noqa: F401
    import river.preprocessing  # noqa: F401

    import fusionkit.training.worker  # noqa: F401


class Controller:
    def __init__(self, storage: str | None = None, checkpoint_every: float | None = 5.0):
        self.storage = storage
        self.started, self.stages, self.restarts = now(), {}, 0
        self.storage_error: str | None = None
        self._uncommitted: tuple | None = None  # (k, epoch, states, generations): see
        # _commit_sources
        if storage:
            try:  # a folder signed by another key: refused before anything in it is read
                _signing.claim_folder(storage)
            except StorageKeyError as exc:
                self.storage_error = str(exc)  # connect() raises it and ends this actor
                return
        self.checkpoint_every = checkpoint_every
        self.store = CheckpointStore(Path(storage) / "checkpoints") if storage else None
        self._ckpt_next = (self.store.latest() or 0) + 1 if self.store else 1
        self._ckpt_pending: dict[int, dict[str, Any]] = {}
        self._failed: dict[str, tuple[str, str]] = {}  # actor id -> (stage, error)
        self._ckpt_done = threading.Condition()
        self.last_checkpoint: tuple[int, float] | None = None
        self._become: dict[str, tuple] = {}
        self.epoch = 0
        self.recoveries: list[dict[str, Any]] = []
        self.stages: dict[str, StageRecord] = {}
        self._lock = threading.RLock()
        self._generation = 0
        # detached: they outlive a controller restart, and every handle to them stays valid
        head = on_head()
        self.monitor = MonitorActor.options(name=MONITOR, namespace=NAMESPACE, lifetime="detached",
                                            get_if_exists=True, **head).remote()
        self.registry = Registry.options(name=REGISTRY, namespace=NAMESPACE, lifetime="detached",
                                         get_if_exists=True, **head).remote(storage, self.monitor)
        self.started = now()
        self._names: dict[str, str] = {}  # actor id -> host name
        self._persist_lock = threading.Lock()
        self._closing = False
        self.restarts = 0
        self.persist_error: str | None = None
        self._spares: list[Any] = []
        self._pool_lock = threading.Lock()
        self._want_spares = threading.Event()
        self._want_spares.set()
        lost: list[str] = []
        if _reconstructed():
            lost = self._adopt()
        threading.Thread(target=self._refill, daemon=True, name="fk-pool").start()
        if lost or self.restarts:
            threading.Thread(target=self._after_restart, args=(lost, self.started), daemon=True,
                             name="fk-adopt").start()
        threading.Thread(target=_preload, daemon=True, name="fk-preload").start()
        if self.store is not None and checkpoint_every:
            threading.Thread(target=self._checkpoint_loop, daemon=True, name="fk-ckpt").start()

    def ping(self) -> dict[str, Any]:
        return {"started": self.started, "stages": list(self.stages), "storage": self.storage,
                "restarts": self.restarts, "storage_error": self.storage_error}

    def pid(self) -> int:
        import os

        return os.getpid()

    def close(self) -> None:
        """Before the controller is killed for good: end the spares and every stage host left
        behind, the registry and the monitor (they are detached, nothing else ends them)."""
        self._closing = True
        with self._pool_lock:
            spares, self._spares = self._spares, []
        for actor in spares:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass
        self._kill_orphans(keep=set())
        for actor in (self.registry, self.monitor):
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass

    def handles(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "registry": self.registry}

    # -- the warm pool ----------------------------------------------------------------------
    def _refill(self) -> None:
        while True:
            self._want_spares.wait()
            self._want_spares.clear()
            if self._closing:
                return
            missing = SPARE_HOSTS - len(self._spares)
            hosts = [self._host() for _ in range(missing)]
            for host in hosts:  # started together, taken as each becomes ready
                try:
                    ray.get(host.ready.remote())
                except Exception:
                    continue
                with self._pool_lock:
                    self._spares.append(host)

    def _host(self, options: dict[str, Any] | None = None) -> Any:
        actor, name = _new_host(options)
        self._names[actor._actor_id.hex()] = name
        return actor

    def _hosts(self, worker: str, calls: list[tuple], options: dict[str, Any] | None = None,
               fresh: list[Any] | None = None) -> list[Any]:
        """One actor per argument tuple: from the warm pool where possible, or, for a stage
        with placement hints (``options``), hosts started with them (``fresh``: started
        already). Hosts a placement hint keeps pending too long are ended with a clear error."""
        if options:
            taken = list(fresh or [])
            taken += [self._host(o) for o in _host_options(options, len(calls) - len(taken))]
        else:
            with self._pool_lock:
                taken, self._spares = self._spares[:len(calls)], self._spares[len(calls):]
            taken += [self._host() for _ in range(len(calls) - len(taken))]
            self._want_spares.set()
        refs = [h.become.remote(worker, *args) for h, args in zip(taken, calls, strict=True)]
        for h, args in zip(taken, calls, strict=True):
            self._become[h._actor_id.hex()] = (worker, *args)
        try:
            ray.get(refs, timeout=PLACE_TIMEOUT if options else None)
        except ray.exceptions.GetTimeoutError:
            for h in taken:
                ray.kill(h, no_restart=True)
            raise FusionError(f"the actors of stage {calls[0][0].name!r} were not placed within "
                              f"{PLACE_TIMEOUT:.0f}s: no node has room for {options} now "
                              f"(other actors hold the resources, or the node is gone)") from None
        except ray.exceptions.RayTaskError as err:
            for h in taken:
                ray.kill(h, no_restart=True)
            raise cause_of(err) from None
        return taken

    def wait_warm(self, timeout: float = 60.0) -> int:
        """Wait until the warm pool is full (connect() does, so the first stage is quick)."""
        deadline = now() + timeout
        while len(self._spares) < SPARE_HOSTS and now() < deadline:
            threading.Event().wait(0.1)
        return len(self._spares)

    def actors(self) -> dict[str, list[str]]:
        """Actor ids: per stage, and the warm spares."""
        out = {name: [a._actor_id.hex() for a in r.all_actors] for name, r in self.stages.items()}
        out["(spare)"] = [a._actor_id.hex() for a in self._spares]
        return out

    # -- helpers --------------------------------------------------------------------------
    def _record(self, name: str, kind: str | None = None) -> StageRecord:
        rec = self.stages.get(name)
        if rec is None or (kind is not None and rec.kind != kind):
            names = [n for n, r in self.stages.items() if kind is None or r.kind == kind]
            what = f"{kind} stage" if kind else "stage"
            listing = ", ".join(sorted(names)) or "none"
            raise StageNotFoundError(
                f"there is no {what} named {name!r} (defined: {listing}).{did_you_mean(name, names)}")
        return rec

    def _downstream_targets(self, stream: str) -> dict[str, list[Any]]:
        return {r.name: r.actors for r in self.stages.values()
                if r.kind == "train" and r.upstream == stream and r.actors}

    def _rewire(self, stream: str) -> None:
        rec = self.stages.get(stream)
        if rec is None:
            return
        targets = self._downstream_targets(stream)
        n = len(rec.actors)
        ray.get([a.set_upstream.remote(n) for hs in targets.values() for a in hs])
        ray.get([a.set_targets.remote(targets) for a in rec.actors])

    def _teardown(self, rec: StageRecord) -> None:
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

    def _check_probe(self, name: str, result: dict[str, Any], actors: list[Any]) -> None:
        if result.get("ok"):
            return
        for a in actors:
            ray.kill(a, no_restart=True)
        if result.get("kind") == "usage":
            raise FusionError(result["error"])
        raise StageFailedError(name, result["error"], result.get("traceback", ""), "probe")

    def _takers(self, spec: StreamSpec) -> list[str]:
        """What takes a stream stage's events: the train stages defined on it, a sink in its
        chain."""
        trains = [r.name for r in self.stages.values()
                  if r.kind == "train" and r.upstream == spec.name]
        return trains + [type(op).__name__ for op in spec.operators if getattr(op, "sink", False)]

    def _wait_reason(self, spec: StreamSpec, stopped: str | None = None) -> str | None:
        """Why a stream stage reads nothing (None: it reads). It reads once something takes
        its events, or when told to run alone (``start=True``, ``fk.resume``): a stream that
        read for nobody would move its source (and acknowledge a broker) past events no
        stage used. A stage whose last consumer is stopped waits again (the same rule)."""
        if spec.start or self._takers(spec):
            return None
        since = f"since {stopped!r} was stopped" if stopped else "yet"
        return (f"no stage reads {spec.name!r} {since}: define one on it, or "
                f"fk.resume({spec.name!r}) to run it alone")

    # -- defining stages ------------------------------------------------------------------
    def define_stream(self, spec: StreamSpec, state: dict | None = None,
                      dead: dict | None = None) -> dict[str, Any]:
        with self._lock:
            old = self.stages.get(spec.name)
            if old is not None and old.kind != "stream":
                raise FusionError(f"{spec.name!r} is already a {old.kind} stage; stop it first "
                                  f"or choose another name")
            if old is not None and state is None:
                states = self._taken_up(old, spec)
            else:
                # ``state`` (a scaled stage's position) goes to every actor that reads: a
                # ``{partition: offset}`` position gives each share its own partitions' offsets
                states = {slot: state for slot in spec.reading_slots()}
            if dead is not None:  # the dead letters of the actors it replaces: kept by one
                first = spec.slots()[0]
                states[first] = {**(states.get(first) or {}), "dead": dead}
            self._generation += 1
            gen = self._generation
            spec.waiting = self._wait_reason(spec)  # its actors read it: held until a consumer
            calls = [c[1:] for c in _stream_calls(spec, self.monitor, states)]
            options = _placement(spec)
            _check_feasible(spec.name, options)
            if spec.fused:
                source = None
                actors = self._hosts("stream", calls, options)
            else:
                source, *actors = self._hosts("stream", calls, options)
            new = [a for a in [source, *actors] if a is not None]
            readers = [source] if source is not None else actors
            probes = ray.get([r.probe.remote() for r in readers])  # each share opens
            for probe in probes:
                self._check_probe(spec.name, probe, new)
            probe = probes[0]
            if old is not None:
                self._teardown(old)
                self._clear_failed([old])
            rec = StageRecord(spec.name, "stream", spec, actors, source, gen,
                              sample=probe.get("sample"))
            self.stages[spec.name] = rec
            targets = self._downstream_targets(spec.name)
            ray.get([a.start.remote(targets, self.epoch) for a in actors])
            if source is not None:
                ray.get(source.start.remote({OPS: actors}, self.epoch))
            self._rewire(spec.name)
            self._persist()
            return self._summary(rec)

    def define_train(self, spec: TrainSpec) -> dict[str, Any]:
        with self._lock:
            up = self._record(spec.on, "stream")
            old = self.stages.get(spec.name)
            if old is not None and old.kind != "train":
                raise FusionError(f"{spec.name!r} is already a {old.kind} stage; stop it first "
                                  f"or choose another name")
            self._generation += 1
            gen = self._generation
            options = _placement(spec)
            _check_feasible(spec.name, options)
            (actor,) = self._hosts("train", [(spec, 0, self.monitor, self.registry)], options)
            sample = up.sample
            if sample is None:
                peeks = ray.get([a.peek.remote(200) for a in up.actors])
                sample = next((p for p in peeks if p is not None), None)
            probe = ray.get(actor.probe.remote(sample))
            self._check_probe(spec.name, probe, [actor])
            if old is not None:
                self._teardown(old)
                self._clear_failed([old])
            ray.get(self.registry.register.remote(spec.name, spec.keep, spec.guard))
            rec = StageRecord(spec.name, "train", spec, [actor], None, gen)
            self.stages[spec.name] = rec
            ray.get(actor.start.remote())
            self._rewire(spec.on)
            if up.spec.waiting is not None:  # its first consumer: the stream reads now
                up.spec.waiting = None
                ray.get([a.wake.remote() for a in up.all_actors])
            self._persist()
            return self._summary(rec)

    def define_serve(self, spec: Any, wait: bool = True) -> dict[str, Any]:
        """Deploy a serve stage. Starting Ray Serve takes seconds the first time; with
        ``wait=False`` this returns at once and the stage shows ``starting`` until ready."""
        from fusionkit.serving.deploy import deploy

        with self._lock:
            self._record(spec.model, "train")
            old = self.stages.get(spec.name)
            if old is not None and old.kind != "serve":
                raise FusionError(f"{spec.name!r} is already a {old.kind} stage; stop it first "
                                  f"or choose another name")
            rec = StageRecord(spec.name, "serve", spec, [], None, 0,
                              extra={"url": f"http://{spec.host}:{spec.port}{spec.route}",
                                     "route": spec.route, "deploying": True})
            self.stages[spec.name] = rec
            self._persist()

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
        return self._summary(rec)

    # -- operating stages -----------------------------------------------------------------
    def stop(self, name: str | None = None) -> list[str]:
        with self._lock:
            names = [name] if name is not None else list(self.stages)
            recs = [self._record(n) for n in names]
            # downstream first, so nothing pushes into a stopped stage
            order = {"serve": 0, "train": 1, "stream": 2}
            for rec in sorted(recs, key=lambda r: order.get(r.kind, 3)):
                self._teardown(rec)
                del self.stages[rec.name]
                if rec.kind == "train":
                    self._rewire(rec.upstream)
                    self._hold_if_unread(rec.upstream, rec.name, names)
                self.monitor.forget.remote(rec.name)
            self._persist()
            return names

    def _hold_if_unread(self, stream: str | None, stopped: str, stopping: list[str]) -> None:
        """``stopped`` was a consumer of ``stream``: if it was the last, the stream waits."""
        up = self.stages.get(stream) if stream is not None else None
        if up is None or up.name in stopping or up.spec.waiting is not None:
            return
        up.spec.waiting = self._wait_reason(up.spec, stopped)
        if up.spec.waiting is not None:
            ray.get([a.hold.remote() for a in up.all_actors])

    def pause(self, name: str) -> str:
        rec = self._record(name)
        if rec.kind == "serve":
            raise FusionError(f"{name!r} is a serve stage; serve stages cannot be paused")
        ray.get([a.pause.remote() for a in rec.all_actors])
        if rec.kind == "stream":  # a restored pipeline comes back paused too
            rec.spec.paused = True
            self._persist()
        self.monitor.event.remote({"stage": name, "kind": "pause", "detail": ""})
        return "paused"

    def resume(self, name: str) -> str:
        rec = self._record(name)
        ray.get([a.resume.remote() for a in rec.all_actors])
        if rec.kind == "stream" and (rec.spec.paused or rec.spec.waiting is not None):
            if not self._takers(rec.spec):
                rec.spec.start = True  # told to run with nothing downstream: it runs alone
            rec.spec.paused, rec.spec.waiting = False, None
            self._persist()
        self.monitor.event.remote({"stage": name, "kind": "resume", "detail": ""})
        return "running"

    def scale(self, name: str, n: int) -> dict[str, Any]:
        if n < 1:
            raise FusionError(f"parallelism must be at least 1, got {n}")
        rec = self._record(name)
        if rec.kind == "stream":
            states = ray.get([a.get_state.remote() for a in rec.all_actors])  # readers first
            read = states[:len(rec.readers)]
            position = functools.reduce(later, [st["offset"] for st in read], None)
            spec = dataclasses.replace(rec.spec, parallelism=n)
            dead = DeadLetters.merge([st.get("dead") for st in states])
            return self.define_stream(spec, {"offset": position or 0}, dead=dead)
        if rec.kind == "serve":
            from fusionkit.serving.deploy import scale as serve_scale

            rec.spec.replicas = n
            serve_scale(rec.spec)
            return self._summary(rec)
        raise FusionError(f"{name!r} is a train stage: a train stage runs one learner and "
                          "cannot be scaled; scale its stream or its serve stage instead")

    # -- looking ---------------------------------------------------------------------------
    def infos(self, name: str) -> list[dict[str, Any]]:
        rec = self._record(name)
        return self._infos(rec)

    def _infos(self, rec: StageRecord) -> list[dict[str, Any]]:
        if rec.kind == "serve":
            from fusionkit.serving.deploy import replica_infos

            if rec.extra.get("deploying"):
                return [{"stage": rec.name, "index": 0, "status": "starting", "error": None,
                         "traceback": "", "totals": {}, "dead_letters": 0}]
            if "error" in rec.extra:
                return [{"stage": rec.name, "index": 0, "status": "failed",
                         "error": rec.extra["error"], "traceback": rec.extra["traceback"],
                         "totals": {}, "dead_letters": 0}]
            return replica_infos(rec.spec)
        out = []
        refs = [a.info.remote() for a in rec.all_actors]
        for i, ref in enumerate(refs):
            try:
                out.append(ray.get(ref, timeout=INFO_TIMEOUT))
            except Exception as exc:
                out.append({"stage": rec.name, "index": i, "status": "failed",
                            "error": f"actor unreachable: {type(exc).__name__}: {exc}",
                            "traceback": "", "totals": {}, "dead_letters": 0})
        return out

    def _summary(self, rec: StageRecord, infos: list[dict[str, Any]] | None = None
                 ) -> dict[str, Any]:
        infos = self._infos(rec) if infos is None else infos
        statuses = [i["status"] for i in infos]
        status = next((s for s in ("failed", "starting", "paused", "waiting", "running",
                                   "finished", "stopped") if s in statuses), "running")
        failed = next((i for i in infos if i["status"] == "failed"), None)
        # a running train stage whose publishing fails says so: shown, not a failure
        warned = next((i for i in infos if i.get("publish_error")), None)
        events = sum(i.get("totals", {}).get("events_in", 0) for i in infos)
        return {
            "name": rec.name, "kind": rec.kind, "status": status,
            "reason": (getattr(rec.spec, "waiting", None) if status == "waiting"
                       else f"paused: fk.resume({rec.name!r}) resumes it" if status == "paused"
                       else None),
            "parallelism": len(rec.actors) if rec.kind != "serve" else rec.spec.replicas,
            "events": int(events),
            "dead_letters": int(sum(i.get("dead_letters", 0) for i in infos)),
            "late": int(sum(i.get("totals", {}).get("late", 0) for i in infos)),
            "shed": int(sum(i.get("totals", {}).get("shed", 0) for i in infos)),
            "on": rec.upstream or (rec.spec.model if rec.kind == "serve" else None),
            "error": failed["error"] if failed else warned["publish_error"] if warned else None,
            "traceback": failed.get("traceback") if failed else None,
            "created": rec.created,
            "restarts": int(rec.extra.get("restarts", 0)),
            "actors": [a._actor_id.hex() for a in rec.all_actors],
            **{k: v for k, v in rec.extra.items() if k in ("url", "route")},
        }

    def status(self) -> list[dict[str, Any]]:
        with self._lock:
            recs = list(self.stages.values())
        return [self._summary(r) for r in recs]

    def summary(self, name: str) -> dict[str, Any]:
        """One stage's row of ``status()``, asking only that stage's actors."""
        return self._summary(self._record(name))

    def stage_names(self) -> list[str]:
        return list(self.stages)

    def peek(self, name: str, n: int = 5) -> pd.DataFrame | None:
        rec = self._record(name, "stream")
        frames = [f for f in ray.get([a.peek.remote(n) for a in rec.actors]) if f is not None]
        if not frames and rec.sample is not None:  # nothing emitted yet (waiting): the
            return rec.sample.head(n)              # first events, read at its definition
        return pd.concat(frames).tail(n) if frames else None

    def dead_letters(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        rec = self._record(name)
        if rec.kind == "serve":
            return []
        out = []
        for items in ray.get([a.dead_letters.remote(limit) for a in rec.all_actors]):
            out.extend(items)
        return sorted(out, key=lambda d: d["time"])[-limit:] if limit else out

    def publish_now(self, name: str) -> int:
        rec = self._record(name, "train")
        return ray.get(rec.actors[0].publish_now.remote())

    def watch_drift(self, name: str, spec: Any) -> dict[str, Any] | None:
        """Attach a drift watch to a train stage (``None`` removes it); kept in its spec, so
        a restarted actor watches again."""
        rec = self._record(name, "train")
        up = self.stages.get(rec.upstream)
        out = ray.get(rec.actors[0].watch_drift.remote(spec, up.sample if up else None))
        if not out["ok"]:
            raise FusionError(out["error"])
        rec.spec.drift = spec
        self._persist()
        return out["watch"]

    def spec(self, name: str) -> Any:
        return self._record(name).spec

    # -- checkpoints ------------------------------------------------------------------------
    def _pipelines(self) -> list[tuple[StageRecord, list[StageRecord]]]:
        """Each stream stage with the train stages it feeds."""
        return [(r, [t for t in self.stages.values() if t.kind == "train" and t.upstream == r.name])
                for r in self.stages.values() if r.kind == "stream"]

    @staticmethod
    def _slots(rec: StageRecord) -> list[tuple[str, Any]]:
        if rec.kind == "train":
            return [("train0", rec.actors[0])]
        if rec.source is None:
            return [(f"fused{i}", a) for i, a in enumerate(rec.actors)]
        return [("source0", rec.source)] + [(f"ops{i}", a) for i, a in enumerate(rec.actors)]

    def checkpoint(self, timeout: float = 30.0) -> int | None:
        """Take a consistent checkpoint of every pipeline now; return its id when complete."""
        k = self._trigger()
        if k is None:
            return None
        with self._ckpt_done:
            self._ckpt_done.wait_for(lambda: k not in self._ckpt_pending, timeout=timeout)
            last = self.last_checkpoint
        # a later checkpoint that completed first ends this one (a reader that took the
        # later request first skips it) and covers everything before this call: its id
        return last[0] if last and last[0] >= k else None

    def _trigger(self) -> int | None:
        with self._lock:
            if self.store is None or not self.stages:
                return None
            expected = set()
            readers = []
            failed = self._failed_stages()
            held = []  # pipelines with a failed stage: not checkpointed, their last kept
            for stream, trains in self._pipelines():
                if failed & {stream.name, *(t.name for t in trains)}:
                    held += [stream, *trains]
                    continue
                for rec in [stream, *trains]:
                    expected |= {(rec.name, slot) for slot, _ in self._slots(rec)}
                readers += stream.readers
            if not expected:
                return None
            carried = self._carried(held)
            k = self._ckpt_next
            self._ckpt_next += 1
            self._ckpt_pending[k] = {"expected": expected, "states": {}, "started": now(),
                                     "epoch": self.epoch, "carried": carried}
            for reader in readers:  # sent in id order (readers may still see them out of it)
                reader.request_checkpoint.remote(k)
        if k % (CKPT_ID_GAP // 2) == 0:
            self._persist()  # the next id, so a restarted controller never hands out k again
        return k

    def ack(self, stage: str, slot: str, k: int, state: Any) -> None:
        """An actor's state for checkpoint ``k``; the last one completes the checkpoint."""
        with self._ckpt_done:
            pending = self._ckpt_pending.get(k)
            if pending is None or pending["epoch"] != self.epoch:
                return
            pending["states"][(stage, slot)] = state
            if set(pending["states"]) < pending["expected"]:
                return
            del self._ckpt_pending[k]
            covered = {name for name, _ in pending["expected"]}
            if covered & self._failed_stages():  # failed since the checkpoint started
                self._ckpt_done.notify_all()
                return
            registry = self._registry_state()
            carried = pending.get("carried") or {}
            covered |= {name for name, _ in carried}
            gens = {r.name: r.generation for r in self.stages.values()
                    if r.kind == "serve" or r.name in covered}
            table = self._dumps(self._table(only=covered))
            self.store.save(k, {**carried, **pending["states"]},
                            {"epoch": self.epoch, "generations": gens, "models": list(registry)},
                            blobs={TABLE_FILE: table} if table is not None else None)
            self.last_checkpoint = (k, now())
            for old in [j for j in self._ckpt_pending if j < k]:
                del self._ckpt_pending[old]
            self._ckpt_done.notify_all()
            self._commit_sources(k, pending["states"])
        self._persist()

    def _commit_sources(self, k: int, states: dict[tuple[str, str], Any]) -> None:
        """Tell each stream's reading actors that a checkpoint covers their source up to the
        position saved in it, so a broker source acknowledges what it no longer needs.

        One checkpoint late: what checkpoint ``k`` covers is acknowledged when the next one
        completes (in the same epoch), so a recovery that falls back past an unreadable
        latest checkpoint (``CheckpointStore.load_newest``) still finds at the broker every
        event after the one it restores (Redis re-reads only entries not acknowledged)."""
        gens = {r.name: r.generation for r in self.stages.values()}
        previous, self._uncommitted = self._uncommitted, (k, self.epoch, states, gens)
        if previous is None or previous[1] != self.epoch:
            return
        k, _, states, gens = previous
        failed = self._failed_stages()
        for rec in self.stages.values():
            if rec.kind != "stream" or rec.name in failed or gens.get(rec.name) != rec.generation:
                continue
            for slot, reader in zip(rec.spec.reading_slots(), rec.readers, strict=True):
                state = states.get((rec.name, slot))
                if isinstance(state, dict) and state.get("offset"):
                    reader.checkpoint_done.remote(k, state["offset"])

    # -- failed stages: their pipelines are not checkpointed ---------------------------------
    def stage_failed(self, stage: str, error: str, actor_id: str | None = None) -> None:
        """An actor of ``stage`` failed (its user function or window raised). Until the stage
        is defined again (or restored, or recovered) no checkpoint of its pipeline starts or
        completes, and its sources acknowledge nothing more to their brokers: the broker
        and the last checkpoint keep every event the failed stage has not processed."""
        with self._ckpt_done:
            self._failed[actor_id or f"?{stage}"] = (stage, error)
            for k in [k for k, p in self._ckpt_pending.items()
                      if stage in {name for name, _ in p["expected"]}]:
                del self._ckpt_pending[k]
            self._ckpt_done.notify_all()

    def refuse(self, k: int, stage: str, reason: str) -> None:
        """An actor refused checkpoint ``k`` (it is failed): the checkpoint is abandoned."""
        with self._ckpt_done:
            self._ckpt_pending.pop(k, None)
            self._ckpt_done.notify_all()

    def _failed_stages(self) -> set[str]:
        """Stages with an actor that reported a failure and is still one of theirs."""
        live = {a._actor_id.hex(): r.name for r in self.stages.values() for a in r.all_actors}
        return {stage for aid, (stage, _) in list(self._failed.items())
                if live.get(aid) == stage or aid == f"?{stage}"}

    def _clear_failed(self, recs: list[StageRecord]) -> None:
        """Forget the failures of these stages' actors (restored to a checkpoint, or gone)."""
        names = {r.name for r in recs}
        for aid in [aid for aid, (stage, _) in self._failed.items() if stage in names]:
            del self._failed[aid]

    def _taken_up(self, old: StageRecord, spec: StreamSpec) -> dict[str, Any]:
        """The states a stream stage defined again over a failed one starts from: where the
        failed one stopped (its readers' positions stay before the batch that failed, their
        operators' state as before it), so its train stages, which learned everything
        before, take every event once. Empty (the definition starts as new) unless the old
        stage failed. A stage of a source actor and operator actors goes back to its last
        checkpoint instead, with its train stages (``_rolled_back``). The operators' state
        goes along only to a chain of the same kinds of operators, read by as many actors."""
        if old.name not in self._failed_stages() or not old.readers:
            return {}
        if old.source is not None:
            return self._rolled_back(old, spec)
        try:
            olds = ray.get([a.get_state.remote() for a in old.readers], timeout=INFO_TIMEOUT)
        except Exception:
            return {}
        slots = spec.reading_slots()
        same = (spec.fused and len(olds) == len(slots)
                and [type(op) for op in old.spec.operators] == [type(op) for op in spec.operators])
        if same:
            return dict(zip(slots, olds, strict=True))
        position = functools.reduce(later, [st["offset"] for st in olds], None)
        return {slot: {"offset": position or 0} for slot in slots}

    def _rolled_back(self, old: StageRecord, spec: StreamSpec) -> dict[str, Any]:
        """A failed stage of a source actor and operator actors, defined again: its source
        actor handed batches on to an operator actor that dropped them once failed, so the
        reader's position is past events nobody processed. The pipeline goes back to its last
        checkpoint (none completes while a stage of it is failed): its train stages are
        restored to it here, in a new epoch (what the old actors still send is dropped), and
        the returned states start the new definition where the checkpoint left the source, so
        every event after it is read again and learned once. Without a checkpoint, both start
        from the beginning."""
        trains = [t for t in self.stages.values() if t.kind == "train" and t.upstream == old.name]
        k, states = self._usable_checkpoint([old, *trains])
        self.epoch += 1
        with self._ckpt_done:
            self._ckpt_pending.clear()
        for t in trains:
            ray.get(t.actors[0].restore.remote(states.get((t.name, "train0")), self.epoch))
        self.monitor.event.remote({
            "stage": old.name, "kind": "rolled back",
            "detail": f"defined again after a failure: back to "
                      f"{f'checkpoint {k}' if k is not None else 'the start'} with "
                      f"{', '.join(t.name for t in trains) or 'no train stage'}"})
        olds = {slot: states.get((old.name, slot)) for slot in old.spec.slots()}
        same = (old.spec.slots() == spec.slots()
                and [type(op) for op in old.spec.operators] == [type(op) for op in spec.operators])
        if same:
            return {slot: st for slot, st in olds.items() if st is not None}
        read = [olds.get(slot) or {} for slot in old.spec.reading_slots()]
        position = functools.reduce(later, [st.get("offset") for st in read], None)
        return {slot: {"offset": position or 0} for slot in spec.reading_slots()}

    def _carried(self, held: list[StageRecord]) -> dict[tuple[str, str], Any]:
        """The states of pipelines with a failed stage, from the last checkpoint that covers
        these very stages: a new checkpoint keeps them (so a recovery or ``restore()``
        still finds the failed pipeline as it was before it failed) instead of dropping
        them or recording what the failed stage never processed."""
        if not held or self.store is None or self.last_checkpoint is None:
            return {}
        k = self.last_checkpoint[0]
        try:
            gens = self.store.manifest(k).get("generations", {})
            if any(gens.get(r.name) != r.generation for r in held):
                return {}
            names = {r.name for r in held}
            return {key: st for key, st in self.store.load(k).items() if key[0] in names}
        except Exception:  # unreadable: the new checkpoint leaves these stages out
            return {}

    def _registry_state(self, wait: float = 30.0) -> Any:
        """The registry's state for a checkpoint, waiting through a restart of its process."""
        return through_restart(lambda: ray.get(self.registry.get_state.remote()), wait)

    def _checkpoint_loop(self) -> None:
        while True:
            threading.Event().wait(self.checkpoint_every)
            with self._ckpt_done:
                stale = [k for k, p in self._ckpt_pending.items() if now() - p["started"] > 60]
                for k in stale:
                    del self._ckpt_pending[k]
                busy = bool(self._ckpt_pending)
            if not busy:
                try:
                    self._trigger()
                except Exception:  # a stage being replaced: try again next time
                    pass

    def checkpoint_info(self) -> dict[str, Any]:
        last = self.last_checkpoint
        return {"checkpoint": last[0] if last else None,
                "age_s": now() - last[1] if last else None,
                "folder": str(self.store.folder) if self.store else None,
                "recoveries": list(self.recoveries)}

    # -- recovery ---------------------------------------------------------------------------
    def host_restarted(self, actor_id: str) -> tuple | None:
        """A stage host was restarted by Ray: tell it what it was, then roll its pipeline back."""
        again = self._become.get(actor_id)
        if again is None:
            return None
        t0 = now()
        stage = again[1].name
        threading.Thread(target=self._recover, args=(stage, t0), daemon=True,
                         name=f"fk-recover-{stage}").start()
        worker, spec, *rest = again
        return (worker, spec, *rest)

    def _usable_checkpoint(self, recs: list[StageRecord]) -> tuple[int | None, dict]:
        """The last checkpoint this controller completed that covers these very stages (the
        same definitions, not an earlier version of a re-defined stage); else none."""
        if self.store is None or self.last_checkpoint is None:
            return None, {}

        def same(manifest: dict[str, Any]) -> bool:
            gens = manifest.get("generations", {})
            return all(gens.get(r.name) == r.generation for r in recs)

        self._uncommitted = None  # a rollback: its offsets are not covered any more
        k, states, skipped = self.store.load_newest(self.last_checkpoint[0], accept=same)
        self._report_fallback(recs[0].name, k, skipped)
        return k, states

    def _report_fallback(self, stage: str, k: int | None, skipped: list[tuple[int, str]]) -> None:
        """Say (an event, a log line) that the newest checkpoints could not be loaded and
        which one was used instead."""
        for bad, why in skipped:
            used = f"checkpoint {k}" if k is not None else "no checkpoint (from the start)"
            detail = f"checkpoint {bad} could not be loaded ({why}); recovering from {used}"
            log.warning("fusionkit: %s", detail)
            self.monitor.event.remote({"stage": stage, "kind": "checkpoint fallback",
                                       "checkpoint": bad, "used": k, "detail": detail})

    def _recover(self, stage: str, t0: float) -> None:
        with self._lock:
            rec = self.stages.get(stage)
            if rec is None:
                return
            stream = self.stages.get(rec.upstream) if rec.kind == "train" else rec
            if stream is None:
                return
            trains = [t for t in self.stages.values() if t.kind == "train" and t.upstream == stream.name]
            self.epoch += 1
            self._persist()
            with self._ckpt_done:
                self._ckpt_pending.clear()
                self._clear_failed([stream, *trains])  # restored to before the failure
            k, states = self._usable_checkpoint([stream, *trains])
            steps: dict[str, float] = {"checkpoint": now() - t0}  # where the time went
            members = [*trains, stream]  # downstream first: ready before the replay starts
            for member in members:
                for slot, actor in self._slots(member):
                    t = now()
                    _wait_ready(actor)
                    steps[f"{member.name}/{slot} ready"] = now() - t
                    t = now()
                    ray.get(actor.restore.remote(states.get((member.name, slot)), self.epoch))
                    steps[f"{member.name}/{slot} restore"] = now() - t
            self._rewire(stream.name)
            if stream.source is not None:
                ray.get(stream.source.set_targets.remote({OPS: stream.actors}))
            targets = self._downstream_targets(stream.name)
            for slot, actor in self._slots(stream):
                if slot.startswith(("fused", "source")):
                    extra = {OPS: stream.actors} if stream.source is not None else targets
                    ray.get(actor.start.remote(extra))
            for member in members:
                member.extra["restarts"] = member.extra.get("restarts", 0) + (member.name == stage)
            done = now()
            self.recoveries.append({"stage": stage, "checkpoint": k, "detected": t0,
                                    "recovered": done, "seconds": done - t0,
                                    "steps": {n: round(v, 3) for n, v in steps.items()}})
            self.monitor.event.remote({"stage": stage, "kind": "recovered", "time": done,
                                       "detail": f"restored checkpoint {k} in {done - t0:.2f}s"})
            self._persist()

    # -- the stage table on disk: surviving a controller restart, restoring a checkpoint ----
    @property
    def _table_path(self) -> Path | None:
        return Path(self.storage) / "controller" / TABLE_FILE if self.storage else None

    def _entry(self, rec: StageRecord) -> dict[str, Any]:
        return {"name": rec.name, "kind": rec.kind, "spec": rec.spec,
                "generation": rec.generation, "created": rec.created, "sample": rec.sample,
                "extra": {k: v for k, v in rec.extra.items() if k in ("restarts", "url", "route")},
                "hosts": [self._names.get(a._actor_id.hex()) for a in rec.actors],
                "source": (self._names.get(rec.source._actor_id.hex())
                           if rec.source is not None else None)}

    def _table(self, only: set[str] | None = None) -> dict[str, Any]:
        last = self.last_checkpoint
        return {"version": 1, "generation": self._generation, "epoch": self.epoch,
                "ckpt_next": self._ckpt_next, "last_checkpoint": last[0] if last else None,
                "restarts": self.restarts, "recoveries": list(self.recoveries)[-100:],
                "stages": [self._entry(r) for r in list(self.stages.values())
                           if only is None or r.name in only]}

    def _dumps(self, table: dict[str, Any]) -> bytes | None:
        """The stage table pickled (cloudpickle: specs hold notebook classes) and signed."""
        try:
            blob = _signing.dumps(table, pickler=ray.cloudpickle)
        except Exception as exc:  # a spec that cannot be pickled: the pipeline still runs
            self.persist_error = f"{type(exc).__name__}: {exc}"
            log.warning("fusionkit: the stage table could not be saved: %s", self.persist_error)
            return None
        self.persist_error = None
        return blob

    def _persist(self) -> None:
        """Write the stage table atomically (what a restarted controller reads back)."""
        path = self._table_path
        if path is None:
            return
        with self._persist_lock:
            blob = self._dumps(self._table())
            if blob is not None:
                write_atomic(path, blob)

    def _lookup(self, name: str) -> Any:
        actor = ray.get_actor(name, namespace=NAMESPACE)
        self._names[actor._actor_id.hex()] = name
        return actor

    def _calls(self, rec: StageRecord) -> list[tuple]:
        """What each of a stage's actors was asked to become (for ``host_restarted``)."""
        if rec.kind == "stream":
            return _stream_calls(rec.spec, self.monitor)
        if rec.kind == "train":
            return [("train", rec.spec, 0, self.monitor, self.registry)]
        return []

    def _kill_orphans(self, keep: set[str]) -> None:
        """End every stage host of this namespace that no stage holds (spares of a controller
        that died, hosts of a definition it did not finish)."""
        try:
            named = ray.util.list_named_actors(all_namespaces=True)
        except Exception:
            return
        for entry in named:
            name = entry.get("name", "")
            if (entry.get("namespace") == NAMESPACE and name.startswith(HOST_PREFIX)
                    and name not in keep):
                try:
                    ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
                except Exception:
                    pass

    def _adopt(self) -> list[str]:
        """Ray restarted this controller: read the stage table back and adopt the stage actors
        by name. Returns the stages whose actors are gone (their pipelines start again from
        the last checkpoint)."""
        self.restarts = 1
        path = self._table_path
        table = None
        if path is not None and path.exists():
            try:
                table = _signing.loads(path.read_bytes(), str(path))
            except Exception as exc:
                log.warning("fusionkit: the stage table %s could not be read: %s", path, exc)
        if table is None:
            self._kill_orphans(keep=set())
            return []
        self.restarts = table.get("restarts", 0) + 1
        self._generation = table["generation"]
        self.epoch = table["epoch"] + 1  # above every epoch an actor may have been given
        self.recoveries = list(table.get("recoveries", []))
        if self.store is not None:
            self._ckpt_next = max(table.get("ckpt_next", 1),
                                  (self.store.latest() or 0) + 1) + CKPT_ID_GAP
            k = table.get("last_checkpoint")
            done = [j for j in self.store.complete() if k is not None and j <= k]
            if done:  # the newest one may be unreadable: recovering falls back from it
                try:
                    self.last_checkpoint = (done[-1], self.store.manifest(done[-1])["time"])
                except Exception:
                    self.last_checkpoint = (done[-1], now())
        lost, keep = [], set()
        for entry in table["stages"]:
            rec = StageRecord(entry["name"], entry["kind"], entry["spec"],
                              generation=entry["generation"], created=entry["created"],
                              sample=entry.get("sample"), extra=dict(entry.get("extra", {})))
            names = [n for n in [entry["source"], *entry["hosts"]] if n]
            keep |= set(names)
            found = {}
            for n in names:
                try:
                    found[n] = self._lookup(n)
                except ValueError:  # gone: killed, or its node lost
                    pass
            rec.source = found.get(entry["source"]) if entry["source"] else None
            rec.actors = [found[n] for n in entry["hosts"] if n in found]
            self.stages[rec.name] = rec
            if len(found) < len(names) or None in entry["hosts"]:
                lost.append(rec.name)  # the survivors are torn down when it starts again
                continue
            for actor, call in zip(rec.all_actors, self._calls(rec), strict=True):
                self._become[actor._actor_id.hex()] = call
        self._kill_orphans(keep)
        return lost

    def _stream_of(self, rec: StageRecord | None) -> str | None:
        if rec is None or rec.kind == "serve":
            return None
        return rec.upstream if rec.kind == "train" else rec.name

    def _after_restart(self, lost: list[str], t0: float) -> None:
        """Check the adopted actors; start a pipeline that lost one again from its checkpoint."""
        with self._lock:
            broken = {self._stream_of(self.stages.get(n)) for n in lost} - {None}
            for rec in list(self.stages.values()):
                stream = self._stream_of(rec)
                if stream is None or stream in broken:
                    continue
                try:
                    ray.get([a.ready.remote() for a in rec.all_actors], timeout=60)
                except Exception:
                    broken.add(stream)
            for stream in sorted(broken):
                try:
                    self._relaunch(stream)
                except Exception as exc:
                    log.warning("fusionkit: stream %r could not be started again: %s", stream, exc)
            done = now()
            k = self.last_checkpoint[0] if self.last_checkpoint else None
            self.recoveries.append({"stage": "(controller)", "checkpoint": k if broken else None,
                                    "detected": t0, "recovered": done, "seconds": done - t0})
            self.monitor.event.remote({"stage": "(controller)", "kind": "recovered", "time": done,
                                       "detail": f"controller restarted; "
                                                 f"{len(self.stages)} stages adopted, "
                                                 f"{len(broken)} pipelines restarted"})
            self._persist()

    def _relaunch(self, stream: str) -> None:
        """Start a stream and its train stages on fresh hosts from their last checkpoint."""
        rec = self.stages[stream]
        trains = [t for t in self.stages.values() if t.kind == "train" and t.upstream == stream]
        k, states = self._usable_checkpoint([rec, *trains])
        for member in [*trains, rec]:
            if member.all_actors:
                self._teardown(member)
        entries = [self._entry(r) for r in [rec, *trains]]
        self._launch(entries, states)
        for member in [rec, *trains]:
            self.stages[member.name].extra["restarts"] = member.extra.get("restarts", 0) + 1

    def _launch(self, entries: list[dict[str, Any]], states: dict) -> None:
        """Create stream and train stages from table entries on fresh hosts, each actor with
        its state from a checkpoint (``states``), keeping their generations (so that
        checkpoint stays usable for a later recovery); then start them, downstream first."""
        streams = [e for e in entries if e["kind"] == "stream"]
        trains = [e for e in entries if e["kind"] == "train"]
        size = {e["name"]: 1 if e["kind"] == "train" else len(e["spec"].slots())
                for e in streams + trains}
        # start every missing host at once, not one stage after another: the pool's for the
        # stages without placement hints, hosts with their hints for the others
        placed = {e["name"]: _placement(e["spec"]) for e in streams + trains}
        fresh = {n: [self._host(o) for o in _host_options(opts, size[n])]
                 for n, opts in placed.items() if opts}
        need = sum(size[n] for n, opts in placed.items() if not opts)
        with self._pool_lock:
            short = need - len(self._spares)
        if short > 0:
            started = [self._host() for _ in range(short)]
            with self._pool_lock:
                self._spares = self._spares + started
        for e in streams:
            spec = e["spec"]
            calls = _stream_calls(spec, self.monitor,
                                  {s: states.get((spec.name, s)) for s in spec.slots()})
            hosts = self._hosts("stream", [c[1:] for c in calls], placed[spec.name],
                                fresh.get(spec.name))
            source, actors = (None, hosts) if spec.fused else (hosts[0], hosts[1:])
            self.stages[spec.name] = StageRecord(
                spec.name, "stream", spec, actors, source, e["generation"], sample=e.get("sample"),
                extra={"restarts": e.get("extra", {}).get("restarts", 0)})
        for e in trains:
            spec = e["spec"]
            (actor,) = self._hosts("train", [(spec, 0, self.monitor, self.registry,
                                              states.get((spec.name, "train0")))],
                                   placed[spec.name], fresh.get(spec.name))
            ray.get(self.registry.register.remote(spec.name, spec.keep, spec.guard))
            self.stages[spec.name] = StageRecord(
                spec.name, "train", spec, [actor], None, e["generation"],
                extra={"restarts": e.get("extra", {}).get("restarts", 0)})
        self._generation = max([self._generation, *(e["generation"] for e in entries)])
        ray.get([self.stages[e["name"]].actors[0].start.remote() for e in trains])
        for e in streams:
            rec = self.stages[e["name"]]
            targets = self._downstream_targets(rec.name)
            self._rewire(rec.name)
            ray.get([a.start.remote(targets) for a in rec.actors])  # fused: starts reading
            if rec.source is not None:
                ray.get(rec.source.start.remote({OPS: rec.actors}))

    @staticmethod
    def _find_checkpoint(store: CheckpointStore | None, path: str | None) -> tuple[Path, int]:
        if path is None:
            k = store.latest() if store is not None else None
            if k is None:
                where = store.folder if store is not None else "(no storage)"
                raise FusionError(f"there is no complete checkpoint under {where}")
            return store.folder, k
        p = Path(path).expanduser()
        if (p / "MANIFEST.json").is_file() and p.name.startswith("ckpt-"):
            return p.parent, int(p.name.split("-")[1])
        for folder in (p / "checkpoints", p):
            k = CheckpointStore(folder).latest()
            if k is not None:
                return folder, k
        raise FusionError(f"there is no complete checkpoint in {p} (a checkpoint folder "
                          f"ckpt-NNNNNN, a checkpoints folder or a storage folder)")

    def restore(self, path: str | None = None) -> dict[str, Any]:
        """Start the pipeline a checkpoint holds: its stream and train stages on fresh hosts,
        each with its checkpointed state (sources seek to their offsets), and its serve
        stages. Stages of the same names are replaced; the others are left alone."""
        folder, k = self._find_checkpoint(self.store, path)
        store = CheckpointStore(folder)
        self._uncommitted = None  # offsets of the pipeline it replaces
        if path is None or not Path(path).expanduser().name.startswith("ckpt-"):
            # not one named checkpoint: the newest one that loads
            k, states, skipped = store.load_newest(k)
            if k is None:
                raise FusionError(f"no checkpoint under {folder} could be loaded: "
                                  + "; ".join(why for _, why in skipped))
            self._report_fallback("(restore)", k, skipped)
        else:
            states = store.load(k)
        blob = store.blob(k, TABLE_FILE)
        if blob is None:
            raise FusionError(f"checkpoint {store._dir(k)} holds no stage table "
                              f"(taken by an earlier fusionkit); it cannot be restored")
        table = _signing.loads(blob, str(store._dir(k) / TABLE_FILE))
        entries = table["stages"]
        with self._lock:
            order = {"serve": 0, "train": 1, "stream": 2}
            for e in sorted(entries, key=lambda e: order.get(e["kind"], 3)):
                if e["name"] in self.stages:
                    self.stop(e["name"])
            with self._ckpt_done:
                self._ckpt_pending.clear()
            self._launch([e for e in entries if e["kind"] in ("stream", "train")], states)
            same = self.store is not None and store.folder.resolve() == self.store.folder.resolve()
            self.last_checkpoint = (k, store.manifest(k)["time"]) if same else None
            serve_errors = {}
            for e in entries:
                if e["kind"] == "serve" and e["name"] not in self.stages:
                    try:
                        self.define_serve(e["spec"], wait=False)
                    except Exception as exc:
                        serve_errors[e["name"]] = f"{type(exc).__name__}: {exc}"
            self._persist()
            for e in entries:
                self.monitor.event.remote({"stage": e["name"], "kind": "restored",
                                           "detail": f"from checkpoint {k} ({folder})"})
        offsets: dict[str, Any] = {}
        for (stage, slot), st in states.items():
            if slot.startswith(("fused", "source")) and isinstance(st, dict):
                offsets[stage] = later(offsets.get(stage), st.get("offset"))
        return {"checkpoint": k, "folder": str(store._dir(k)), "stages": [e["name"] for e in entries],
                "offsets": offsets, "serve_errors": serve_errors}
