"""The model registry: the versions a train stage publishes, with lineage, and which one is live.

Each version carries where it came from (events seen, the newest ``_ingest_ts`` learned, the
prequential metrics at publish time, a sha256 of its state): a ``VersionRecord``
(``registry/records.py``, which lists the statuses). The bytes of the last ``keep``
versions, plus the live and the pinned one, stay in memory; with a ``folder`` every version
is also written to disk (``registry/folder.py``), so older versions stay loadable and a
restarted registry resumes from the folder. A file whose sha256 or signature does not match
is refused. The ``Guard`` (``registry/guard.py``) may hold a worse version back.

``generation`` counts the changes of the live version, so followers can wait for a change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionkit import _clock
from fusionkit.errors import ModelNotFoundError, RegistryError
from fusionkit.registry.folder import CheckpointFolder, index_of, resume
from fusionkit.registry.guard import Guard
from fusionkit.registry.records import VersionRecord, ranges
from fusionkit.registry.records import table as records_table
from fusionkit.registry.retention import forgotten, in_memory

__all__ = ["RETAIN", "Guard", "ModelRegistry", "RegistryError", "VersionRecord"]

_HISTORY_LIMIT = 1000
RETAIN = 1000  # versions a registry remembers (records and files), besides live and pinned


class ModelRegistry:
    """The versions of one model, which one is live, pinned, and their checkpoint files.

    Without a ``folder`` only the last ``keep`` versions (and the live and pinned one) keep
    their state; older records remain for lineage. The registry remembers the last
    ``retain`` versions (and the live and pinned one): older ones are forgotten, their
    records and files removed, so a model that publishes every 50 ms for days keeps a
    bounded folder, memory and checkpoint. A ``folder`` that already holds versions of
    ``model`` is resumed. The ``guard`` (off by default) may hold back a worse version.
    Calls are thread-safe.

    Examples
    --------
    >>> reg = ModelRegistry("ctr", keep=2)
    >>> meta = dict(newest_ingest_ts=10.0, oldest_new_ingest_ts=1.0, metrics={"accuracy": 0.9})
    >>> reg.publish(b"model-1", events_seen=100, new_events=100, **meta).status
    'live'
    >>> reg.publish(b"model-2", events_seen=200, new_events=100, **meta).parent
    1
    >>> reg.rollback(1).status, reg.get(2).status, reg.generation
    ('live', 'rolled-back', 3)
    >>> reg.state(1)
    b'model-1'
    """

    def __init__(self, model: str, folder: str | os.PathLike[str] | None = None, keep: int = 5,
                 guard: Guard | None = None, retain: int = RETAIN):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        if retain < keep:
            raise ValueError(f"retain must be at least keep ({keep}), got {retain}")
        self.model = model
        self.folder = Path(folder) if folder is not None else None
        self.keep = keep
        self.retain = retain
        self.guard = guard
        self._lock = threading.Condition(threading.RLock())
        self._index_seq = 0  # numbers the index snapshots, so the folder writes the newest
        self._disk = CheckpointFolder(self.folder) if self.folder is not None else None
        self._reset()
        if self._disk is not None:
            self._resume(*self._disk.read())

    def _reset(self) -> None:
        self._records: dict[int, VersionRecord] = {}
        self._states: dict[int, bytes] = {}
        self._samples: dict[int, np.ndarray] = {}
        self._live: int | None = None
        self._pinned: int | None = None
        self._generation = 0
        self._history: deque[dict[str, Any]] = deque(maxlen=_HISTORY_LIMIT)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str], keep: int = 5,
                    guard: Guard | None = None) -> ModelRegistry:
        """Rebuild a registry from its checkpoint folder; checksums are verified on ``state()``."""
        if not Path(folder).is_dir():
            raise ModelNotFoundError(f"no checkpoint folder {folder}")
        index, records = CheckpointFolder(Path(folder)).read()
        model = index.get("model") or (records[0].model if records else None)
        if model is None:
            raise ModelNotFoundError(f"no model versions in {folder}")
        return cls(model, folder=folder, keep=keep, guard=guard)

    # ----------------------------------------------------------------- publishing
    def publish(
        self,
        state: bytes,
        *,
        events_seen: int,
        newest_ingest_ts: float,
        oldest_new_ingest_ts: float,
        new_events: int,
        metrics: Mapping[str, float],
        ingest_sample: np.ndarray | None = None,
        parent: int | None = None,
    ) -> VersionRecord:
        """Store a new version; it goes live unless a pin or the guard holds it back.

        ``ingest_sample`` (ingest timestamps of newly learned events, possibly subsampled)
        stays in memory with the state, for freshness; ``parent`` defaults to the previous
        version.
        """
        state = bytes(state)
        if events_seen < 0 or new_events < 0:
            raise ValueError("events_seen and new_events must be >= 0")
        with self._lock:
            version = max(self._records, default=0) + 1
            if parent is None:
                parent = version - 1 if version > 1 else None
            elif parent not in self._records:
                raise self._not_found(parent)
            metrics = {str(k): float(v) for k, v in metrics.items()}
            live = self.live()
            allowed, reason = True, ""
            if self.guard is not None:
                champion = live.metrics if live is not None else None
                allowed, reason = self.guard.judge(metrics, champion, events_seen)
            if not allowed:
                status = "held"
            elif self._pinned is not None:
                status, reason = "published", f"stored while v{self._pinned} is pinned"
            else:
                status = "live"
            record = VersionRecord(
                model=self.model, version=version, parent=parent, created=_clock.now(),
                events_seen=int(events_seen), new_events=int(new_events),
                newest_ingest_ts=float(newest_ingest_ts),
                oldest_new_ingest_ts=float(oldest_new_ingest_ts), metrics=metrics,
                checksum=hashlib.sha256(state).hexdigest(), size_bytes=len(state),
                status=status, reason=reason)
            if self._disk is not None:
                self._disk.write_version(record, state)
            self._records[version] = record
            self._states[version] = state
            if ingest_sample is not None:
                sample = np.array(ingest_sample, dtype="float64").ravel()
                sample.flags.writeable = False
                self._samples[version] = sample
            if status == "live":
                self._set_live(version)
            self._log("publish", version, status + (f": {reason}" if reason else ""))
            self._evict()
            forgotten = self._forget_old()
            snapshot = self._index()
            record = self._records[version]
        self._write_index(snapshot)  # after the lock: followers already see the new version
        self._remove_files(forgotten)
        return record

    # ----------------------------------------------------------------- reading
    @property
    def generation(self) -> int:
        """How many times the live version has changed."""
        return self._generation

    def live(self) -> VersionRecord | None:
        """The live version's record, ``None`` before the first one goes live."""
        with self._lock:
            return self._records[self._live] if self._live is not None else None

    def live_version(self) -> int | None:
        """The live version number, ``None`` before the first one goes live."""
        return self._live

    def pinned_version(self) -> int | None:
        """The pinned version number, ``None`` when nothing is pinned."""
        return self._pinned

    def versions(self) -> list[int]:
        """All version numbers, oldest first."""
        with self._lock:
            return sorted(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def get(self, version: int) -> VersionRecord:
        """The record of ``version``; ``ModelNotFoundError`` if there is none."""
        with self._lock:
            if version not in self._records:
                raise self._not_found(version)
            return self._records[version]

    def state(self, version: int) -> bytes:
        """The state bytes of ``version``, from memory or else from disk, checksum verified."""
        with self._lock:
            record = self.get(version)
            if version in self._states:
                return self._states[version]
            if self._disk is None:
                kept = ", ".join(f"v{v}" for v in sorted(self._states))
                raise ModelNotFoundError(
                    f"model {self.model!r} v{version}: its state is no longer in memory "
                    f"(keep={self.keep}) and the registry has no checkpoint folder; "
                    f"versions with state: {kept or 'none'}"
                )
            data = self._disk.read_state(record)
            if version in self._retained():
                self._states[version] = data
            return data

    def ingest_sample(self, version: int) -> np.ndarray | None:
        """The ingest timestamps kept with ``version`` (read-only), ``None`` if none are kept."""
        with self._lock:
            self.get(version)
            return self._samples.get(version)

    def history(self) -> list[dict[str, Any]]:
        """Events, oldest first (``time``, ``action``, ``version``, ``detail``, ``live``)."""
        with self._lock:
            return [dict(entry) for entry in self._history]

    def wait_generation(self, after: int, timeout: float | None = None) -> int:
        """Block until ``generation`` exceeds ``after`` (or ``timeout`` passes); return it."""
        with self._lock:
            self._lock.wait_for(lambda: self._generation > after, timeout=timeout)
            return self._generation

    def table(self) -> pd.DataFrame:
        """One row per version: lineage, flattened metrics, short checksum, status, live, pinned."""
        with self._lock:
            records = [self._records[v] for v in sorted(self._records)]
            live, pinned, in_memory = self._live, self._pinned, set(self._states)
        return records_table(records, live, pinned, in_memory)

    # ----------------------------------------------------------------- control
    def rollback(self, version: int) -> VersionRecord:
        """Make ``version`` live; versions after it become ``rolled-back``. Refused while pinned.

        Later publishes go live normally again (judged by the guard against ``version``).
        """
        with self._lock:
            if self._pinned is not None:
                raise RegistryError(
                    f"v{self._pinned} of {self.model!r} is pinned; unpin() first, or pin({version})"
                )
            before = self._live
            self._go_live(version)
            for v, r in self._records.items():
                if v > version and r.status in ("live", "published"):
                    self._records[v] = dataclasses.replace(r, status="rolled-back")
            self._log("rollback", version, f"from v{before}")
            self._save_index()
            return self._records[version]

    def pin(self, version: int) -> VersionRecord:
        """Make ``version`` live until ``unpin()``; versions published meanwhile are only stored."""
        with self._lock:
            self._go_live(version)
            self._pinned = version
            self._evict()
            self._log("pin", version, "")
            self._save_index()
            return self._records[version]

    def unpin(self) -> VersionRecord | None:
        """Lift the pin: the newest ``live``/``published`` version goes live. No-op if unpinned."""
        with self._lock:
            if self._pinned is None:
                return self.live()
            eligible = [v for v, r in self._records.items() if r.status in ("live", "published")]
            newest = max(eligible)
            self._go_live(newest)
            pinned, self._pinned = self._pinned, None
            self._evict()
            self._log("unpin", pinned, f"v{newest} live")
            self._save_index()
            return self._records[newest]

    # ----------------------------------------------------------------- checkpointing
    def get_state(self) -> dict[str, Any]:
        """Records, pointers and history; state bytes only when there is no folder to hold them.
        The lock is held only to take references (records are immutable): a checkpoint never
        holds up a publish for long."""
        with self._lock:
            records = list(self._records.values())
            state = {"model": self.model, "live": self._live, "pinned": self._pinned,
                     "generation": self._generation, "history": list(self._history),
                     "states": dict(self._states) if self._disk is None else {}}
        return {**state, "records": [r.to_dict() for r in records]}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore what ``get_state`` returned; missing bytes are read from the folder lazily."""
        if state["model"] != self.model:
            raise RegistryError(f"state of model {state['model']!r} given to {self.model!r}")
        with self._lock:
            self._reset()
            self._records = {r["version"]: VersionRecord(**r) for r in state["records"]}
            self._live, self._pinned = state["live"], state["pinned"]
            self._generation = state["generation"]
            self._history.extend(state["history"])
            self._states = {int(v): bytes(b) for v, b in state["states"].items()}
            self._evict()
            forgotten = self._forget_old()
            self._save_index()
            self._lock.notify_all()
        self._remove_files(forgotten)

    # ----------------------------------------------------------------- internals
    def _go_live(self, version: int) -> None:
        """Make an existing version live, after checking its state loads with a valid checksum."""
        data = self.state(version)
        self._set_live(version)
        self._states[version] = data
        self._evict()

    def _set_live(self, version: int) -> None:
        if version == self._live:
            return
        if self._live is not None:
            old = self._records[self._live]
            self._records[self._live] = dataclasses.replace(old, status="published")
        self._records[version] = dataclasses.replace(self._records[version], status="live")
        self._live = version
        self._generation += 1
        self._lock.notify_all()

    def _retained(self) -> set[int]:
        return in_memory(sorted(self._records), self.keep, self._live, self._pinned)

    def _evict(self) -> None:
        retained = self._retained()
        for store in (self._states, self._samples):
            for v in [v for v in store if v not in retained]:
                del store[v]

    def _forget_old(self) -> list[VersionRecord]:
        """Drop the records ``retain`` no longer covers (their states and samples: ``_evict``
        dropped them); returns them, for ``_remove_files`` once the lock is released."""
        old = forgotten(sorted(self._records), self.retain, self._live, self._pinned)
        return [self._records.pop(v) for v in old]

    def _remove_files(self, records: list[VersionRecord]) -> None:
        if self._disk is not None:
            for record in records:
                self._disk.remove_version(record)

    def _log(self, action: str, version: int, detail: str) -> None:
        entry = {"time": _clock.now(), "action": action, "version": version, "detail": detail}
        self._history.append({**entry, "live": self._live})

    def _not_found(self, version: int) -> ModelNotFoundError:
        known = ranges(sorted(self._records)) or "none yet"
        return ModelNotFoundError(
            f"model {self.model!r} has no version {version}; known versions: {known}"
        )

    def _save_index(self) -> None:
        self._write_index(self._index())

    def _write_index(self, snapshot: tuple[int, dict[str, Any]] | None) -> None:
        """Write an index snapshot unless a newer one is on disk already."""
        if snapshot is not None:
            self._disk.write_index(*snapshot)

    def _index(self) -> tuple[int, dict[str, Any]] | None:
        """The index as it is now, numbered (call with the lock held); None without a folder."""
        if self._disk is None:
            return None
        self._index_seq += 1
        return self._index_seq, index_of(self.model, self._records, self._live, self._pinned,
                                         self._generation, self._history)

    def _resume(self, index: dict[str, Any], records: list[VersionRecord]) -> None:
        """Take up a folder's content (``folder.resume``), then forget what ``retain`` drops."""
        found = resume(self.folder, self.model, index, records)
        self._records, self._live, self._pinned = found.records, found.live, found.pinned
        self._generation = found.generation
        self._history.extend(found.history)
        forgotten = self._forget_old()  # a folder written before retain, or with a larger one
        self._save_index()
        self._remove_files(forgotten)
