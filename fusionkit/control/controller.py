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

This class is the actor's face: its methods are what drivers and stage actors call by name.
The work is done by the parts it holds, one concept each: the warm host pool
(``control.pool``, placed by ``control.placement``), the stage table and its wiring
(``control.table``), stage reports (``control.status``), the checkpoint coordinator
(``control.checkpoints``), recovery (``control.recovery``), the table on disk and its
re-adoption (``control.persistence``) and starting stages from a checkpoint
(``control.launch``).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from fusionkit import _signing
from fusionkit._clock import now
from fusionkit._rpc import get, through_restart
from fusionkit.control import status as _status
from fusionkit.control.actors import MONITOR, NAMESPACE, REGISTRY, MonitorActor, Registry
from fusionkit.control.checkpoints import CheckpointCoordinator
from fusionkit.control.launch import find_checkpoint, launch, load_checkpoint, offsets
from fusionkit.control.lifecycle import Lifecycle
from fusionkit.control.persistence import TableFile, adopt, table
from fusionkit.control.placement import on_head, placement
from fusionkit.control.pool import HOST_PREFIX, HostPool
from fusionkit.control.recovery import Recovery
from fusionkit.control.table import CONSUMERS, KIND_ORDER, StageRecord, StageTable
from fusionkit.errors import FusionError, StorageKeyError
from fusionkit.runtime.checkpoint import CheckpointStore
from fusionkit.runtime.records import Assignment, Event
from fusionkit.runtime.specs import JoinSpec, StreamSpec, TableSpec, TrainSpec
from fusionkit.streaming.tables import merge_parts, split_keys

__all__ = ["HOST_PREFIX", "Controller", "StageRecord", "on_head"]
_placement = placement  # the name tests and older callers know
LOOKUP_WAIT = 60.0  # how long a lookup waits for a table actor Ray is restarting


def _reconstructed() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


def _preload() -> None:
    """Import what unpickling a train stage's spec needs (River, the learner adapters) while
    nobody waits: the first ``fk.train`` would otherwise pay about a second for it."""
    import river.compose  # noqa: F401
    import river.linear_model  # noqa: F401
    import river.preprocessing  # noqa: F401

    import fusionkit.training.worker  # noqa: F401


class Controller:
    """The controller actor (``connect()`` starts it, named, detached, restarted by Ray):
    every remote method here is what drivers and stage actors call by name."""

    def __init__(self, storage: str | None = None, checkpoint_every: float | None = 5.0):
        self.storage = storage
        self.started, self.stages, self.restarts = now(), StageTable(), 0
        self.storage_error: str | None = None
        if storage:
            try:  # a folder signed by another key: refused before anything in it is read
                _signing.claim_folder(storage)
            except StorageKeyError as exc:
                self.storage_error = str(exc)  # connect() raises it and ends this actor
                return
        self._lock = threading.RLock()
        # detached: they outlive a controller restart, and every handle to them stays valid
        head = on_head()
        self.monitor = MonitorActor.options(name=MONITOR, namespace=NAMESPACE, lifetime="detached",
                                            get_if_exists=True, **head).remote()
        self.registry = Registry.options(name=REGISTRY, namespace=NAMESPACE, lifetime="detached",
                                         get_if_exists=True, **head).remote(storage, self.monitor)
        self.pool = HostPool()
        self.file = TableFile(storage)
        store = CheckpointStore(Path(storage) / "checkpoints") if storage else None
        self.checkpoints = CheckpointCoordinator(store, checkpoint_every, self.stages, self._lock,
                                                 self.monitor, self.registry,
                                                 self._snapshot, self._persist)
        self.recovery = Recovery(self.stages, self.pool, self.checkpoints, self.monitor,
                                 self._lock, self._persist, self._launch)
        self.lifecycle = Lifecycle(self.stages, self.pool, self.checkpoints, self.recovery,
                                   self.monitor, self.registry, self._lock, self._persist)
        self.started = now()
        lost = self._adopt() if _reconstructed() else []
        self.pool.start()
        if lost or self.restarts:
            threading.Thread(target=self.recovery.after_restart, args=(lost, self.started),
                             daemon=True, name="fk-adopt").start()
        threading.Thread(target=_preload, daemon=True, name="fk-preload").start()
        self.checkpoints.start()

    def ping(self) -> dict[str, Any]:
        return {"started": self.started, "stages": list(self.stages), "storage": self.storage,
                "restarts": self.restarts, "storage_error": self.storage_error}

    def pid(self) -> int:
        import os

        return os.getpid()

    def close(self) -> None:
        """Before the controller is killed for good: end the spares and every stage host left
        behind, the registry and the monitor (they are detached, nothing else ends them)."""
        self.pool.close()
        self.pool.kill_orphans(keep=set())
        for actor in (self.registry, self.monitor):
            try:
                ray.kill(actor, no_restart=True)
            except Exception:
                pass

    def handles(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "registry": self.registry}

    def wait_warm(self, timeout: float = 60.0) -> int:
        """Wait until the warm pool is full (connect() does, so the first stage is quick)."""
        return self.pool.wait_warm(timeout)

    def actors(self) -> dict[str, list[str]]:
        """Actor ids: per stage, and the warm spares."""
        out = {name: [a._actor_id.hex() for a in r.all_actors] for name, r in self.stages.items()}
        out["(spare)"] = [a._actor_id.hex() for a in self.pool.spares]
        return out

    # -- defining and operating stages (``control.lifecycle``) --------------------------------
    def define_stream(self, spec: StreamSpec, state: dict | None = None,
                      dead: dict | None = None) -> dict[str, Any]:
        """Define (or replace) a stream stage; ``state``: where a scaled stage starts."""
        return self.lifecycle.define_stream(spec, state, dead).to_dict()

    def define_train(self, spec: TrainSpec) -> dict[str, Any]:
        return self.lifecycle.define_train(spec).to_dict()

    def define_join(self, spec: JoinSpec) -> dict[str, Any]:
        """Define (or replace) a join stage of two stream stages."""
        return self.lifecycle.define_join(spec).to_dict()

    def define_table(self, spec: TableSpec) -> dict[str, Any]:
        """Define (or replace) a table stage kept from a stream stage."""
        return self.lifecycle.define_table(spec).to_dict()

    def lookup(self, name: str, keys: list[Any]) -> pd.DataFrame:
        """The values of ``keys`` in table ``name``: one call to each actor holding some of
        them, all at once (waiting through a restart of a process)."""
        actors = self.stages.record(name, "table").actors
        where = split_keys(keys, len(actors))

        def ask() -> pd.DataFrame:  # every part is asked (its lookups and misses count)
            return merge_parts(get([a.lookup.remote([keys[i] for i in at])
                                    for a, at in zip(actors, where, strict=True)]), where)

        return through_restart(ask, LOOKUP_WAIT)

    def table_actors(self, name: str) -> list[Any]:
        """The actors of table ``name`` (actor ``i`` keeps part ``i`` of the keys), for a
        serve replica to read it directly."""
        return list(self.stages.record(name, "table").actors)

    def define_serve(self, spec: Any, wait: bool = True) -> dict[str, Any]:
        """Deploy a serve stage (``wait=False``: at once, ``starting`` until ready)."""
        return self.lifecycle.define_serve(spec, wait).to_dict()

    def respec_serve(self, spec: Any) -> int:
        """Record a serve stage's new routing (``fk.canary``, ``fk.promote``): its replicas
        follow it through the registry; a restart or ``fk.restore`` starts from it."""
        return self.lifecycle.respec_serve(spec)

    def stop(self, name: str | None = None) -> list[str]:
        return self.lifecycle.stop(name)

    def pause(self, name: str) -> str:
        return self.lifecycle.pause(name)

    def resume(self, name: str) -> str:
        return self.lifecycle.resume(name)

    def scale(self, name: str, n: int) -> dict[str, Any]:
        return self.lifecycle.scale(name, n).to_dict()

    def watch_drift(self, name: str, spec: Any) -> dict[str, Any] | None:
        """Attach a drift watch to a train stage (``None`` removes it)."""
        return self.lifecycle.watch_drift(name, spec)

    def publish_now(self, name: str) -> int:
        rec = self.stages.record(name, "train")
        return ray.get(rec.actors[0].publish_now.remote())

    # -- looking ---------------------------------------------------------------------------
    # The stage reports are records (``runtime.reports``) up to here; the controller's
    # callers (the API, the notebook) get the plain dicts they always had.
    def infos(self, name: str) -> list[dict[str, Any]]:
        """What each actor (or serve replica) of stage ``name`` reports, one dict each."""
        return [r.to_dict() for r in _status.infos(self.stages.record(name))]

    def status(self) -> list[dict[str, Any]]:
        """Every stage's row of ``fk.status()``, as dicts."""
        with self._lock:
            recs = list(self.stages.values())
        return [_status.summary(r).to_dict() for r in recs]

    def summary(self, name: str) -> dict[str, Any]:
        """One stage's row of ``status()``, asking only that stage's actors."""
        return _status.summary(self.stages.record(name)).to_dict()

    def stage_names(self) -> list[str]:
        return list(self.stages)

    def spec(self, name: str) -> Any:
        return self.stages.record(name).spec

    def peek(self, name: str, n: int = 5) -> pd.DataFrame | None:
        rec = self.stages.record(name)
        if rec.kind not in ("stream", "join", "train"):
            raise FusionError(f"{name!r} is a {rec.kind} stage: peek shows the events of a "
                              f"stream, join or train stage")
        frames = [f for f in ray.get([a.peek.remote(n) for a in rec.actors]) if f is not None]
        if not frames and rec.sample is not None:  # nothing emitted yet (waiting): the
            return rec.sample.head(n)              # first events, read at its definition
        return pd.concat(frames).tail(n) if frames else None

    def dead_letters(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        rec = self.stages.record(name)
        if rec.kind == "serve":
            return []
        out = []
        for items in ray.get([a.dead_letters.remote(limit) for a in rec.all_actors]):
            out.extend(items)
        return sorted(out, key=lambda d: d["time"])[-limit:] if limit else out

    # -- checkpoints and recovery: what stage actors and drivers call ------------------------
    def checkpoint(self, timeout: float = 30.0) -> int | None:
        """Take a consistent checkpoint of every pipeline now; return its id when complete."""
        return self.checkpoints.checkpoint(timeout)

    def ack(self, stage: str, slot: str, k: int, state: Any) -> None:
        """An actor's state for checkpoint ``k``; the last one completes the checkpoint."""
        self.checkpoints.ack(stage, slot, k, state)

    def stage_failed(self, stage: str, error: str, actor_id: str | None = None) -> None:
        """An actor of ``stage`` failed: its pipeline is not checkpointed until it is defined
        again, restored or recovered (``CheckpointCoordinator.stage_failed``)."""
        self.checkpoints.stage_failed(stage, error, actor_id)

    def refuse(self, k: int, stage: str, reason: str) -> None:
        """An actor refused checkpoint ``k`` (it is failed): the checkpoint is abandoned."""
        self.checkpoints.refuse(k, stage, reason)

    def checkpoint_info(self) -> dict[str, Any]:
        return {**self.checkpoints.info(), "recoveries": list(self.recovery.recoveries)}

    def host_restarted(self, actor_id: str) -> Assignment | None:
        """A stage host was restarted by Ray: tell it what it became (its assignment), then
        roll its pipeline back."""
        return self.recovery.host_restarted(actor_id)

    def restore(self, path: str | None = None) -> dict[str, Any]:
        """Start the pipeline a checkpoint holds: its stream and train stages on fresh hosts,
        each with its checkpointed state (sources seek to their offsets), and its serve
        stages. Stages of the same names are replaced; the others are left alone."""
        folder, k = find_checkpoint(self.checkpoints.store, path)
        self.checkpoints.forget_offsets()  # offsets of the pipeline it replaces
        store, k, states, entries = load_checkpoint(folder, k, path,
                                                    self.checkpoints.report_fallback)
        with self._lock:
            for e in sorted(entries, key=lambda e: KIND_ORDER.get(e["kind"], 3)):
                if e["name"] in self.stages:
                    self.stop(e["name"])
            self.checkpoints.abandon()
            self._launch([e for e in entries
                          if e["kind"] in ("stream", *CONSUMERS)], states)
            own = self.checkpoints.store
            same = own is not None and store.folder.resolve() == own.folder.resolve()
            self.checkpoints.last = (k, store.manifest(k)["time"]) if same else None
            serve_errors = {}
            for e in entries:
                if e["kind"] == "serve" and e["name"] not in self.stages:
                    try:
                        self.define_serve(e["spec"], wait=False)
                    except Exception as exc:
                        serve_errors[e["name"]] = f"{type(exc).__name__}: {exc}"
            self._persist()
            for e in entries:
                self.monitor.event.remote(Event(e["name"], "restored",
                                                f"from checkpoint {k} ({folder})"))
        return {"checkpoint": k, "folder": str(store._dir(k)), "stages": [e["name"] for e in entries],
                "offsets": offsets(states), "serve_errors": serve_errors}

    # -- the stage table on disk -----------------------------------------------------------
    def _table(self, only: set[str] | None = None) -> dict[str, Any]:
        return table(self.stages, self.pool, self.checkpoints.saved(), self.restarts,
                     self.recovery.recoveries, only)

    def _snapshot(self, only: set[str]) -> bytes | None:
        """The table of the stages named in ``only``, pickled and signed, for a checkpoint."""
        return self.file.dumps(self._table(only))

    def _persist(self) -> None:
        """Write the stage table atomically (what a restarted controller reads back)."""
        self.file.write(self._table)

    def _launch(self, entries: list[dict[str, Any]], states: dict) -> None:
        launch(entries, states, self.stages, self.pool, self.monitor, self.registry)

    def _adopt(self) -> list[str]:
        """Ray restarted this controller: read the stage table back and adopt the stage actors
        by name. Returns the stages whose actors are gone (their pipelines start again from
        the last checkpoint)."""
        self.restarts = 1
        saved = self.file.read()
        if saved is not None:
            self.restarts = saved.get("restarts", 0) + 1
            self.checkpoints.adopt(saved)
            self.recovery.recoveries = list(saved.get("recoveries", []))
        return adopt(saved, self.stages, self.pool, self.monitor, self.registry)
