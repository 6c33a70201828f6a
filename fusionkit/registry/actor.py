"""The registry actor: every train stage's ModelRegistry, and what followers wait on."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionkit import _signing
from fusionkit._clock import now
from fusionkit.errors import FusionError
from fusionkit.registry.guard import Guard
from fusionkit.registry.store import RETAIN, ModelRegistry
from fusionkit.runtime.checkpoint import write_atomic
from fusionkit.runtime.records import Event


class RegistryActor:
    """Holds one ``ModelRegistry`` per model; serve replicas long-poll it for changes.

    What it notes per version is bounded, as the registry forgets all but the last
    ``RETAIN`` versions: per model, the versions not yet served (their events' freshness is
    reported when one is) are the newest ``RETAIN`` at most (~40 KB; an older one has no
    ingest sample left to report anyway), and first-served times at most ``2 * RETAIN``.
    """

    def __init__(self, storage: str | None, monitor: Any):
        self.storage = storage
        self.monitor = monitor
        self._models: dict[str, ModelRegistry] = {}
        self._served: dict[str, dict[int, float]] = {}  # model -> version -> first served at
        self._unserved: dict[str, deque[int]] = {}  # versions whose events still wait
        self._schemas: dict[str, Any] = {}
        self._lock = threading.RLock()
        # serve stage -> (its Routing, generation): who answers what, followed by its replicas
        self._routes: dict[str, tuple[Any, int]] = {}
        self._routed = threading.Condition()
        self._reload()

    def _reload(self) -> None:
        """After a restart, pick the models back up from their checkpoint folders, and the
        serve stages' routings with their generations (replicas already on one keep it)."""
        routes = Path(self.storage) / ROUTES if self.storage else None
        if routes is not None and routes.exists():
            try:
                self._routes = _signing.loads(routes.read_bytes(), str(routes))
            except FusionError as exc:  # refused, not unpickled: definitions' routings
                logging.getLogger("fusionkit").warning("fusionkit: %s", exc)
        root = Path(self.storage) / "models" if self.storage else None
        if root is None or not root.is_dir():
            return
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                keep, guard = _read_settings(folder)
                self._models[folder.name] = ModelRegistry(folder.name, folder=folder, keep=keep,
                                                          guard=guard)
            except Exception:  # a folder that is not a model's: leave it alone
                continue
            schema = folder / "schema.pkl"
            if schema.exists():
                try:
                    self._schemas[folder.name] = _signing.loads(schema.read_bytes(), str(schema))
                except FusionError as exc:  # refused, not unpickled: serve stages do without
                    logging.getLogger("fusionkit").warning("fusionkit: %s", exc)

    def register(self, model: str, keep: int = 5, guard: Guard | None = None) -> None:
        with self._lock:
            reg = self._models.get(model)
            if reg is None:
                folder = Path(self.storage) / "models" / model if self.storage else None
                reg = ModelRegistry(model, folder=folder, keep=keep, guard=guard)
                self._models[model] = reg
            else:
                reg.keep, reg.guard = keep, guard
            if reg.folder is not None:  # a restarted registry judges by the same guard
                _write_settings(reg.folder, keep, guard)

    def _reg(self, model: str) -> ModelRegistry:
        from fusionkit.errors import ModelNotFoundError

        reg = self._models.get(model)
        if reg is None:
            known = ", ".join(sorted(self._models)) or "none yet"
            raise ModelNotFoundError(f"no model {model!r} in the registry (models: {known})")
        return reg

    def pid(self) -> int:
        return os.getpid()

    def publish(self, model: str, state: bytes, meta: dict[str, Any],
                ingest_sample: np.ndarray | None = None) -> dict[str, Any]:
        reg = self._reg(model)
        # a replica may answer with the version as soon as it is live, and say so (served):
        # it is among the unserved ones by then, or its events' freshness is never reported
        with self._lock:
            rec = reg.publish(state, ingest_sample=ingest_sample, **meta)
            self._unserved.setdefault(model, deque(maxlen=RETAIN)).append(rec.version)
        t = now()
        if self.monitor is not None:
            if ingest_sample is not None and len(ingest_sample):
                self.monitor.report_freshness.remote(f"{model}:publish", rec.version, t,
                                                     ingest_sample)
            self.monitor.event.remote(Event(model, "version", rec.reason or "", rec.version,
                                            rec.status, time=t))
        return {"version": rec.version, "status": rec.status, "reason": rec.reason}

    def live(self, model: str) -> tuple[int | None, int]:
        """(live version, generation) of a model."""
        reg = self._models.get(model)
        if reg is None:
            return None, 0
        return reg.live_version(), reg.generation

    def wait_live(self, model: str, generation: int, timeout: float = 5.0) -> tuple[int | None, int]:
        """Return as soon as the live version's generation differs from ``generation``."""
        reg = self._models.get(model)
        if reg is None:
            threading.Event().wait(min(timeout, 0.5))
            return self.live(model)
        reg.wait_generation(generation, timeout=timeout)
        return reg.live_version(), reg.generation

    def follow(self, model: str, generation: int, timeout: float = 5.0
               ) -> tuple[int | None, int, bytes | None, Any]:
        """``wait_live``, and with a new live version what a serve replica swaps in: its state
        and the model's schema (one call instead of three on the way to a swap)."""
        version, gen = self.wait_live(model, generation, timeout)
        if version is None or gen == generation:
            return version, gen, None, None
        return version, gen, self._reg(model).state(version), self._schemas.get(model)

    def set_route(self, stage: str, routing: Any) -> int:
        """Serve stage ``stage``'s routing (``fusionkit.serving.routing.Routing``) from now on;
        its replicas following it swap to it. Returns its generation.

        Kept in the storage folder too (signed): a registry that restarts gives a replica
        started after it the routing of the last ``fk.promote`` or ``fk.canary``, not its
        stage's first definition."""
        with self._routed:
            gen = self._routes.get(stage, (None, 0))[1] + 1
            self._routes[stage] = (routing, gen)
            if self.storage:
                write_atomic(Path(self.storage) / ROUTES, _signing.dumps(self._routes))
            self._routed.notify_all()
            return gen

    def follow_route(self, stage: str, generation: int, timeout: float = 5.0
                     ) -> tuple[Any, int]:
        """(routing, generation) of ``stage`` as soon as its generation differs from
        ``generation`` (or after ``timeout``); ``(None, 0)`` when none was set."""
        with self._routed:
            self._routed.wait_for(lambda: self._routes.get(stage, (None, 0))[1] != generation,
                                  timeout=timeout)
            return self._routes.get(stage, (None, 0))

    def set_schema(self, model: str, schema: Any) -> None:
        """The features (and their kinds) a model learns from: serve stages check requests."""
        self._schemas[model] = schema
        if self.storage:
            write_atomic(Path(self.storage) / "models" / model / "schema.pkl",
                         _signing.dumps(schema))

    def state(self, model: str, version: int) -> bytes:
        return self._reg(model).state(version)

    def served(self, model: str, version: int, at: float) -> None:
        """A replica answered with ``version`` for the first time: the events of this and every
        earlier version not yet answered have waited until ``at``."""
        with self._lock:
            first = self._served.setdefault(model, {})
            if version in first:
                return
            first[version] = at
            if len(first) > 2 * RETAIN:  # as the registry forgets old versions
                for v in sorted(first)[: len(first) - RETAIN]:
                    del first[v]
            waiting = self._unserved.get(model, [])
            done = [v for v in waiting if v <= version]
            self._unserved[model] = deque((v for v in waiting if v > version), maxlen=RETAIN)
        reg = self._models.get(model)
        if reg is None or self.monitor is None:
            return
        samples = [reg.ingest_sample(v) for v in done]
        samples = [s for s in samples if s is not None and len(s)]
        if samples:
            self.monitor.report_freshness.remote(model, version, at, np.concatenate(samples))

    def table(self, model: str) -> pd.DataFrame:
        return self._reg(model).table()

    def rollback(self, model: str, version: int) -> dict[str, Any]:
        rec = self._reg(model).rollback(version)
        self._note(model, "rollback", version)
        return {"version": rec.version, "status": rec.status}

    def pin(self, model: str, version: int) -> dict[str, Any]:
        rec = self._reg(model).pin(version)
        self._note(model, "pin", version)
        return {"version": rec.version, "status": rec.status}

    def unpin(self, model: str) -> dict[str, Any] | None:
        rec = self._reg(model).unpin()
        self._note(model, "unpin", rec.version if rec else None)
        return None if rec is None else {"version": rec.version, "status": rec.status}

    def _note(self, model: str, action: str, version: int | None) -> None:
        if self.monitor is not None:
            self.monitor.event.remote(Event(model, action, version=version, time=now()))

    def get_state(self) -> dict[str, Any]:
        return {m: r.get_state() for m, r in self._models.items()}


SETTINGS = "settings.json"  # a model's keep and publish guard, next to its versions
ROUTES = "routes.pkl"  # serve stage -> (routing, generation), signed


def _write_settings(folder: Path, keep: int, guard: Guard | None) -> None:
    """Keep a model's settings with its versions: plain JSON (nothing to unpickle)."""
    settings = {"keep": keep, "guard": dataclasses.asdict(guard) if guard is not None else None}
    write_atomic(folder / SETTINGS, json.dumps(settings, sort_keys=True).encode())


def _read_settings(folder: Path) -> tuple[int, Guard | None]:
    """``(keep, guard)`` as ``register`` last set them (defaults if never written)."""
    path = folder / SETTINGS
    if not path.exists():
        return 5, None
    settings = json.loads(path.read_text())
    guard = settings.get("guard")
    return int(settings.get("keep", 5)), Guard(**guard) if guard is not None else None
