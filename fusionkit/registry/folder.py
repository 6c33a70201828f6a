"""A model registry's folder on disk: a state file and a signed sidecar per version, an index.

``v000001.bin`` holds a version's state bytes, ``v000001.json`` its record and an HMAC of the
bytes under fusionkit's key (``fusionkit._signing``): the bytes are unpickled by whoever
loads the model, and a checksum next to them would stop no one who can write the folder.
``registry.json`` (the index) holds what the records alone do not: which version is live or
pinned, the held and rolled-back ones, the generation and the history. Each file is written
to a temporary file and renamed into place; a restarted registry resumes from the folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fusionkit import _signing
from fusionkit._files import make_private_dir
from fusionkit._files import write_atomic as _write_atomic
from fusionkit.errors import CorruptCheckpointError, RegistryError
from fusionkit.registry.records import STATUSES, VersionRecord, from_sidecar

__all__ = ["INDEX", "CheckpointFolder", "Resumed", "index_of", "resume"]

INDEX = "registry.json"


class CheckpointFolder:
    """One model's folder: ``v000001.bin`` + ``v000001.json`` per version, ``registry.json``.

    Every file is written to a temporary file and renamed into place, so a reader (or a
    restart) sees the old file or the whole new one, never part of one.
    """

    def __init__(self, path: Path):
        self.path = path
        make_private_dir(path)
        self._lock = threading.Lock()  # index writes, in the order of their snapshots
        self._written = 0  # the number of the newest index snapshot on disk

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

    def write_index(self, seq: int, index: dict[str, Any]) -> None:
        """Write index snapshot number ``seq`` unless a newer one is on disk already (a
        registry takes snapshots under its lock and writes them after releasing it)."""
        with self._lock:
            if seq > self._written:
                # compact: json's C encoder, ~10x faster than indented output for a long history
                _write_atomic(self.path / INDEX, json.dumps(index, sort_keys=True,
                                                            separators=(",", ":")).encode())
                self._written = seq

    def read(self) -> tuple[dict[str, Any], list[VersionRecord]]:
        """The index (``{}`` if none) and every version's record, oldest first."""
        index_path = self.path / INDEX
        index = json.loads(index_path.read_text()) if index_path.exists() else {}
        sidecars = sorted(self.path.glob("v[0-9]*.json"))
        return index, [from_sidecar(json.loads(p.read_text())) for p in sidecars]


def index_of(model: str, records: Mapping[int, VersionRecord], live: int | None,
             pinned: int | None, generation: int, history: Iterable[dict[str, Any]]
             ) -> dict[str, Any]:
    """The index of a registry in this state."""
    by_status = {s: [v for v, r in records.items() if r.status == s] for s in STATUSES}
    return {
        "model": model,
        "last_version": max(records, default=0),
        "live": live,
        "pinned": pinned,
        "generation": generation,
        "held": by_status["held"],
        "rolled_back": by_status["rolled-back"],
        "history": list(history),
    }


@dataclasses.dataclass(frozen=True)
class Resumed:
    """What a registry takes up from its folder."""

    records: dict[int, VersionRecord]
    live: int | None
    pinned: int | None
    generation: int
    history: list[dict[str, Any]]


def resume(folder: Path, model: str, index: dict[str, Any],
           records: list[VersionRecord]) -> Resumed:
    """A folder's content: records from sidecars, statuses and pointers from the index.

    A version newer than the index (its publish was interrupted) keeps ``held`` or
    becomes ``published``; the live version stays what the index says.
    """
    if index.get("model", model) != model:
        raise RegistryError(f"{folder} holds model {index['model']!r}, not {model!r}")
    last = index.get("last_version", 0)
    live = index.get("live")
    special = {v: "held" for v in index.get("held", [])}
    special.update({v: "rolled-back" for v in index.get("rolled_back", [])})
    out: dict[int, VersionRecord] = {}
    for record in records:
        if record.model != model:
            raise RegistryError(f"{folder} holds v{record.version} of {record.model!r}")
        v = record.version
        held = v > last and record.status == "held"
        status = "live" if v == live else special.get(v, "held" if held else "published")
        out[v] = dataclasses.replace(record, status=status)
    if live is not None and live not in out:
        raise CorruptCheckpointError(f"{folder}: live v{live} has no files")
    return Resumed(out, live, index.get("pinned"), index.get("generation", 0),
                   list(index.get("history", [])))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode()
