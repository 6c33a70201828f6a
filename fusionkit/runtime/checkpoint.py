"""Consistent checkpoints: barriers through the data path, and a store for their states.

The controller asks each stream stage's reading actor for checkpoint ``k``. At a batch
boundary that actor snapshots its source offset and operator state and sends a
``Barrier(k)`` downstream through the same ordered channel as the data. An actor that
receives the barrier from every one of its upstream senders (aligned: a sender whose
barrier has arrived is held back until the others' arrive) snapshots its own state and
passes the barrier on. So checkpoint ``k`` holds, for every actor, state that reflects
exactly the events before the offsets recorded with it. On a failure every actor of the
pipeline goes back to the last complete checkpoint and the sources replay from there:
delivery is at least once, state is exactly once.

Files are written atomically (temporary file, fsync, rename, fsync of the folder) and
carry a sha256 in the manifest, which is signed with fusionkit's key (``fusionkit._signing``):
a file whose checksum does not match, or a manifest whose signature does not, is refused
before anything is unpickled. A checkpoint that cannot be loaded (corrupt, missing, cut
short) is skipped for the previous complete one (``load_newest``); folders a crash left
without a manifest are pruned once a newer checkpoint is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fusionkit import _moved, _signing
from fusionkit._clock import now
from fusionkit._files import write_atomic
from fusionkit.errors import CorruptCheckpointError

MANIFEST = "MANIFEST.json"
# what a checkpoint that cannot be loaded raises (a different key is not among them: every
# checkpoint of the folder has it, so falling back would only hide it)
UNUSABLE = (CorruptCheckpointError, OSError, ValueError, KeyError, pickle.UnpicklingError,
            EOFError)


@dataclass(frozen=True)
class Barrier:
    """A checkpoint marker travelling with the data."""

    checkpoint: int


@dataclass(frozen=True)
class EndOfStream:
    """Sent after a stream stage's last batch (its bounded source is exhausted): a stage
    with several inputs (a join) learns that this input holds nothing back any more."""

    stage: str


class CheckpointStore:
    """Checkpoints in a folder: ``ckpt-000007/`` with one file per actor and a manifest.

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(tempfile.mkdtemp())
    >>> _ = store.save(1, {("clicks", 0): {"offset": 10}}, {"note": "x"})
    >>> store.latest()
    1
    >>> store.load(1)[("clicks", 0)]
    {'offset': 10}
    """

    def __init__(self, folder: str | os.PathLike[str], keep: int = 3):
        self.folder = Path(folder)
        self.keep = keep

    def _dir(self, k: int) -> Path:
        return self.folder / f"ckpt-{k:06d}"

    def save(self, k: int, states: dict[tuple[str, int], Any], meta: dict[str, Any],
             blobs: dict[str, bytes] | None = None) -> Path:
        """Write every actor's state (and ``blobs``, files kept as they are: the stage table),
        then the manifest that makes the checkpoint complete."""
        d = self._dir(k)
        files = {}
        extra = {}
        for name, blob in (blobs or {}).items():
            write_atomic(d / name, blob)
            extra[name] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        for (stage, index), state in states.items():
            blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
            name = f"{stage}.{index}.bin"
            write_atomic(d / name, blob)
            files[name] = {"stage": stage, "index": index,
                           "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        manifest = {"checkpoint": k, "time": now(), "files": files, "blobs": extra, **meta}
        manifest = _signing.sign_record(manifest)
        write_atomic(d / MANIFEST, json.dumps(manifest, indent=1).encode())
        self._prune()
        return d

    def _prune(self) -> None:
        """Keep the last ``keep`` complete checkpoints; remove the folders older than the
        newest complete one that have no manifest (a crash cut their writing short)."""
        done = self.complete()
        for k in done[: max(0, len(done) - self.keep)]:
            shutil.rmtree(self._dir(k), ignore_errors=True)
        if not done:
            return
        for k in self._ids():
            if k < done[-1] and k not in done:
                shutil.rmtree(self._dir(k), ignore_errors=True)

    def _ids(self) -> list[int]:
        """Every ``ckpt-*`` folder's id, complete or not."""
        if not self.folder.is_dir():
            return []
        out = []
        for d in self.folder.glob("ckpt-*"):
            try:
                out.append(int(d.name.split("-")[1]))
            except ValueError:
                continue
        return sorted(out)

    def complete(self) -> list[int]:
        """Checkpoint ids that have a manifest, oldest first."""
        return [k for k in self._ids() if (self._dir(k) / MANIFEST).exists()]

    def latest(self) -> int | None:
        done = self.complete()
        return done[-1] if done else None

    def manifest(self, k: int) -> dict[str, Any]:
        """Checkpoint ``k``'s manifest, its signature verified."""
        path = self._dir(k) / MANIFEST
        try:
            manifest = json.loads(path.read_text())
        except ValueError:
            raise CorruptCheckpointError(f"checkpoint manifest {path} is not valid JSON (corrupt "
                                         f"or cut short); it was not loaded") from None
        _signing.verify_record(manifest, f"checkpoint manifest {path}")
        return manifest

    def blob(self, k: int, name: str) -> bytes | None:
        """A file saved with ``blobs`` (None if checkpoint ``k`` has none), checksum verified."""
        entry = self.manifest(k).get("blobs", {}).get(name)
        if entry is None:
            return None
        path = self._dir(k) / name
        blob = path.read_bytes()
        if hashlib.sha256(blob).hexdigest() != entry["sha256"]:
            raise CorruptCheckpointError(f"checkpoint file {path} is corrupt: its sha256 does "
                                         f"not match the manifest's; it was not loaded")
        return blob

    def load(self, k: int) -> dict[tuple[str, int], Any]:
        """Every actor's state of checkpoint ``k``: the manifest's signature and every file's
        checksum verified before anything is unpickled."""
        d = self._dir(k)
        out = {}
        manifest = self.manifest(k)
        for name in manifest.get("blobs", {}):  # checked too: a checkpoint is whole or refused
            self.blob(k, name)
        for name, entry in manifest["files"].items():
            blob = (d / name).read_bytes()
            actual = hashlib.sha256(blob).hexdigest()
            if actual != entry["sha256"]:
                raise CorruptCheckpointError(
                    f"checkpoint file {d / name} is corrupt: sha256 {actual[:12]}… does not "
                    f"match the manifest's {entry['sha256'][:12]}…; it was not loaded")
            out[(entry["stage"], entry["index"])] = _moved.loads(blob)
        return out

    def load_newest(self, newest: int | None = None,
                    accept: Callable[[dict[str, Any]], bool] | None = None,
                    ) -> tuple[int | None, dict[tuple[str, int], Any], list[tuple[int, str]]]:
        """The newest complete checkpoint up to ``newest`` that loads: its id and states, and
        the newer ones skipped because they could not be loaded, each with why. A checkpoint
        whose manifest ``accept`` refuses ends the search: ``(None, {}, skipped)``."""
        skipped: list[tuple[int, str]] = []
        candidates = [k for k in self.complete() if newest is None or k <= newest]
        if newest is not None and newest not in candidates:
            skipped.append((newest, f"{self._dir(newest)} is missing or has no manifest"))
        for k in reversed(candidates):
            try:
                manifest = self.manifest(k)
                if accept is not None and not accept(manifest):
                    return None, {}, skipped
                return k, self.load(k), skipped
            except UNUSABLE as exc:
                skipped.append((k, f"{type(exc).__name__}: {exc}"))
        return None, {}, skipped
