"""The model registry: the versions a train stage publishes, with lineage, and which one is live.

Each version carries where it came from (events seen, the newest ``_ingest_ts`` learned, the
prequential metrics at publish time, a sha256 of its state). The bytes of the last ``keep``
versions, plus the live and the pinned one, stay in memory; with a ``folder`` every version
is also written to disk (``v000001.bin`` and a ``v000001.json`` sidecar, each written to a
temporary file and renamed into place), so older versions stay loadable and a restarted
registry resumes from the folder. A file whose sha256 does not match its record is refused,
and so is one whose signature does not: each sidecar carries an HMAC of the state bytes
under fusionkit's key (``fusionkit._signing``), since the bytes are unpickled by whoever
loads the model and a checksum next to them would stop no one who can write the folder.

A version's ``status`` is one of

=============== ===========================================================================
``live``        the version serve stages answer with now (exactly one, once any is live)
``published``   accepted, not live now: superseded by a newer version, or stored while a pin
                held another version live (its ``reason`` then names the pin)
``held``        refused by the publish guard; ``reason`` says why; goes live only by an
                explicit ``rollback``/``pin``
``rolled-back`` newer than the target of a rollback; does not come back on its own
=============== ===========================================================================

``generation`` counts the changes of the live version, so followers can wait for a change.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionkit import _clock, _signing
from fusionkit._files import make_private_dir
from fusionkit._files import write_atomic as _write_atomic
from fusionkit.errors import CorruptCheckpointError, FusionError, ModelNotFoundError

STATUSES = ("live", "published", "held", "rolled-back")
INDEX = "registry.json"
_HISTORY_LIMIT = 1000
RETAIN = 1000  # versions a registry remembers (records and files), besides live and pinned


class RegistryError(FusionError, ValueError):
    """An operation the registry's current state does not allow (e.g. rollback while pinned)."""


@dataclasses.dataclass(frozen=True)
class VersionRecord:
    """One published version of a model and its lineage.

    ``oldest_new_ingest_ts`` and ``new_events`` describe the events learned since the previous
    version (``parent``), so freshness can be computed per version.
    """

    model: str
    version: int
    parent: int | None
    created: float
    events_seen: int
    new_events: int
    newest_ingest_ts: float
    oldest_new_ingest_ts: float
    metrics: dict[str, float]
    checksum: str
    size_bytes: int
    status: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON-able values (a registry's checkpoint holds a thousand of
        them: field by field, 20x faster than ``dataclasses.asdict``'s deep copy)."""
        out = {name: getattr(self, name) for name in _RECORD_FIELDS}
        out["metrics"] = dict(self.metrics)
        return out


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(VersionRecord))


@dataclasses.dataclass
class Guard:
    """Champion/challenger rule: a challenger may replace the live version unless worse by > margin.

    A challenger that has seen fewer than ``min_events`` events is not judged: prequential
    metrics of a young model are warm-up noise. A challenger without the metric is held (the
    guard cannot vouch for it); a champion without it is not a bar to clear.

    Examples
    --------
    >>> guard = Guard(metric="accuracy_recent", margin=0.02, min_events=0)
    >>> guard.judge({"accuracy_recent": 0.85}, {"accuracy_recent": 0.86}, events_seen=500)
    (True, '')
    >>> guard.judge({"accuracy_recent": 0.81}, {"accuracy_recent": 0.86}, events_seen=500)
    (False, 'accuracy_recent 0.81 < live 0.86 - margin 0.02')
    """

    metric: str = "accuracy_recent"
    margin: float = 0.02
    higher_is_better: bool = True
    min_events: int = 1000

    def judge(
        self,
        challenger: Mapping[str, float],
        champion: Mapping[str, float] | None,
        events_seen: int,
    ) -> tuple[bool, str]:
        """``(allowed, reason)``: may a version with ``challenger`` metrics replace ``champion``?"""
        if champion is None or events_seen < self.min_events:
            return True, ""
        best = _finite(champion.get(self.metric))
        if best is None:
            return True, ""
        value = _finite(challenger.get(self.metric))
        if value is None:
            return False, f"no finite {self.metric} in the metrics (live has {best:.4g})"
        if self.higher_is_better and value < best - self.margin:
            return False, f"{self.metric} {value:.4g} < live {best:.4g} - margin {self.margin:g}"
        if not self.higher_is_better and value > best + self.margin:
            return False, f"{self.metric} {value:.4g} > live {best:.4g} + margin {self.margin:g}"
        return True, ""


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


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

    def __init__(
        self,
        model: str,
        folder: str | os.PathLike[str] | None = None,
        keep: int = 5,
        guard: Guard | None = None,
        retain: int = RETAIN,
    ):
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
        self._disk_lock = threading.Lock()  # index writes, in the order of their snapshots
        self._index_seq = self._index_written = 0
        self._disk = _CheckpointFolder(self.folder) if self.folder is not None else None
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
    def from_folder(
        cls, folder: str | os.PathLike[str], keep: int = 5, guard: Guard | None = None
    ) -> ModelRegistry:
        """Rebuild a registry from its checkpoint folder; checksums are verified on ``state()``."""
        if not Path(folder).is_dir():
            raise ModelNotFoundError(f"no checkpoint folder {folder}")
        index, records = _CheckpointFolder(Path(folder)).read()
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
                model=self.model,
                version=version,
                parent=parent,
                created=_clock.now(),
                events_seen=int(events_seen),
                new_events=int(new_events),
                newest_ingest_ts=float(newest_ingest_ts),
                oldest_new_ingest_ts=float(oldest_new_ingest_ts),
                metrics=metrics,
                checksum=hashlib.sha256(state).hexdigest(),
                size_bytes=len(state),
                status=status,
                reason=reason,
            )
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
            records = [self._records[v].to_dict() for v in sorted(self._records)]
            flags = {"live": self._live, "pinned": self._pinned}
            in_memory = set(self._states)
        base = [f.name for f in dataclasses.fields(VersionRecord) if f.name != "metrics"]
        frame = pd.DataFrame(records, columns=[*base, "metrics"])
        metrics = pd.DataFrame(list(frame.pop("metrics")), index=frame.index)
        created_at = pd.to_datetime(frame["created"].astype("float64"), unit="s", utc=True)
        frame.insert(base.index("created") + 1, "created_at", created_at)
        frame["checksum"] = frame["checksum"].str[:12]
        frame["parent"] = frame["parent"].astype("Int64")
        for name, version in flags.items():
            frame[name] = frame["version"] == version
        frame["in_memory"] = frame["version"].isin(in_memory)
        metrics.columns = [f"metric_{c}" if c in frame.columns else c for c in metrics.columns]
        return pd.concat([frame, metrics], axis=1)

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
        keep = set(sorted(self._records)[-self.keep :])
        return keep | {v for v in (self._live, self._pinned) if v is not None}

    def _evict(self) -> None:
        retained = self._retained()
        for store in (self._states, self._samples):
            for v in [v for v in store if v not in retained]:
                del store[v]

    def _forget_old(self) -> list[VersionRecord]:
        """Drop the records beyond the last ``retain`` versions (never the live or pinned
        one); returns them, for ``_remove_files`` once the lock is released."""
        extra = len(self._records) - self.retain
        if extra <= 0:
            return []
        protected = {self._live, self._pinned}  # states and samples: _evict dropped them
        old = [v for v in sorted(self._records) if v not in protected][:extra]
        return [self._records.pop(v) for v in old]

    def _remove_files(self, records: list[VersionRecord]) -> None:
        if self._disk is not None:
            for record in records:
                self._disk.remove_version(record)

    def _log(self, action: str, version: int, detail: str) -> None:
        entry = {"time": _clock.now(), "action": action, "version": version, "detail": detail}
        self._history.append({**entry, "live": self._live})

    def _not_found(self, version: int) -> ModelNotFoundError:
        known = _ranges(sorted(self._records)) or "none yet"
        return ModelNotFoundError(
            f"model {self.model!r} has no version {version}; known versions: {known}"
        )

    def _save_index(self) -> None:
        self._write_index(self._index())

    def _write_index(self, snapshot: tuple[int, dict[str, Any]] | None) -> None:
        """Write an index snapshot unless a newer one is on disk already."""
        if snapshot is None:
            return
        seq, index = snapshot
        with self._disk_lock:
            if seq > self._index_written:
                self._disk.write_index(index)
                self._index_written = seq

    def _index(self) -> tuple[int, dict[str, Any]] | None:
        """The index as it is now, numbered (call with the lock held); None without a folder."""
        if self._disk is None:
            return None
        self._index_seq += 1
        by_status = {s: [v for v, r in self._records.items() if r.status == s] for s in STATUSES}
        return self._index_seq, (
            {
                "model": self.model,
                "last_version": max(self._records, default=0),
                "live": self._live,
                "pinned": self._pinned,
                "generation": self._generation,
                "held": by_status["held"],
                "rolled_back": by_status["rolled-back"],
                "history": list(self._history),
            }
        )

    def _resume(self, index: dict[str, Any], records: list[VersionRecord]) -> None:
        """Take up a folder's content: records from sidecars, statuses and pointers from the index.

        A version newer than the index (its publish was interrupted) keeps ``held`` or
        becomes ``published``; the live version stays what the index says.
        """
        if index.get("model", self.model) != self.model:
            raise RegistryError(f"{self.folder} holds model {index['model']!r}, not {self.model!r}")
        last = index.get("last_version", 0)
        self._live, self._pinned = index.get("live"), index.get("pinned")
        self._generation = index.get("generation", 0)
        self._history.extend(index.get("history", []))
        special = {v: "held" for v in index.get("held", [])}
        special.update({v: "rolled-back" for v in index.get("rolled_back", [])})
        for record in records:
            if record.model != self.model:
                raise RegistryError(f"{self.folder} holds v{record.version} of {record.model!r}")
            v = record.version
            held = v > last and record.status == "held"
            status = "live" if v == self._live else special.get(v, "held" if held else "published")
            self._records[v] = dataclasses.replace(record, status=status)
        if self._live is not None and self._live not in self._records:
            raise CorruptCheckpointError(f"{self.folder}: live v{self._live} has no files")
        forgotten = self._forget_old()  # a folder written before retain, or with a larger one
        self._save_index()
        self._remove_files(forgotten)


class _CheckpointFolder:
    """One model's folder: ``v000001.bin`` + ``v000001.json`` per version, ``registry.json``.

    Every file is written to a temporary file and renamed into place, so a reader (or a
    restart) sees the old file or the whole new one, never part of one.
    """

    def __init__(self, path: Path):
        self.path = path
        make_private_dir(path)

    def write_version(self, record: VersionRecord, state: bytes) -> None:
        _write_atomic(self._file(record, ".bin"), state, sync_dir=False)  # synced with:
        sidecar = {**record.to_dict(), "signature": _signing.sign(state)}
        _write_atomic(self._file(record, ".json"), _dumps(sidecar))

    def remove_version(self, record: VersionRecord) -> None:
        for suffix in (".bin", ".json"):
            self._file(record, suffix).unlink(missing_ok=True)

    def _file(self, record: VersionRecord, suffix: str) -> Path:
        return self.path / f"v{record.version:06d}{suffix}"

    def read_state(self, record: VersionRecord) -> bytes:
        """The state bytes of ``record``, refused if their sha256 differs from the record's."""
        path = self._file(record, ".bin")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CorruptCheckpointError(
                f"{path} is missing; expected a file with sha256 {record.checksum}"
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != record.checksum:
            raise CorruptCheckpointError(
                f"{path} is corrupt and was refused: expected sha256 {record.checksum}, "
                f"found {actual}"
            )
        sidecar = self._file(record, ".json")
        try:
            signature = json.loads(sidecar.read_text()).get("signature")
        except (OSError, ValueError):
            signature = None
        _signing.verify(data, signature, str(path))
        return data

    def write_index(self, index: dict[str, Any]) -> None:
        # compact: json's C encoder, ~10x faster than indented output for a long history
        _write_atomic(self.path / INDEX, json.dumps(index, sort_keys=True,
                                                    separators=(",", ":")).encode())

    def read(self) -> tuple[dict[str, Any], list[VersionRecord]]:
        """The index (``{}`` if none) and every version's record, oldest first."""
        index_path = self.path / INDEX
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        sidecars = sorted(self.path.glob("v[0-9]*.json"))
        return index, [_record(json.loads(p.read_text())) for p in sidecars]


_FIELDS = {f.name for f in dataclasses.fields(VersionRecord)}


def _record(sidecar: dict[str, Any]) -> VersionRecord:
    """A version's record from its sidecar (which also holds the state's signature)."""
    return VersionRecord(**{k: v for k, v in sidecar.items() if k in _FIELDS})


def _ranges(versions: list[int]) -> str:
    """Sorted version numbers as runs: ``[1, 2, 3, 5]`` -> ``"1-3, 5"``.

    >>> _ranges([1, 2, 3, 5, 7, 8])
    '1-3, 5, 7-8'
    """
    runs: list[list[int]] = []
    for v in versions:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()
