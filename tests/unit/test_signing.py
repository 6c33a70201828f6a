"""What fusionkit unpickles from storage is signed with a key kept outside the folder.

Each tampering test writes a pickle whose ``__reduce__`` would create a marker file, and
fixes up whatever checksum sits next to it (as anyone who can write the folder can): the
file must be refused before it is unpickled, so the marker never appears.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fusionkit import _signing
from fusionkit._names import check_name
from fusionkit.errors import CorruptCheckpointError, InvalidNameError, StorageKeyError
from fusionkit.registry.actor import RegistryActor
from fusionkit.registry.store import ModelRegistry
from fusionkit.runtime.checkpoint import CheckpointStore


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A fusionkit home of its own (where the secret file goes), no key in the environment."""
    folder = tmp_path / "home"
    monkeypatch.setenv("FUSIONKIT_HOME", str(folder))
    monkeypatch.delenv(_signing.ENV, raising=False)
    return folder


class Payload:
    """Unpickling this creates ``marker``: the code an attacker's pickle would run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def evil(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


def test_tampered_checkpoint_state_is_refused_before_unpickling(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, {("clicks", "fused0"): {"offset": 10}}, {})
    d = tmp_path / "checkpoints" / "ckpt-000001"
    marker = tmp_path / "ran"
    blob = evil(marker)
    (d / "clicks.fused0.bin").write_bytes(blob)
    manifest = json.loads((d / "MANIFEST.json").read_text())  # the sum next to it, fixed up
    manifest["files"]["clicks.fused0.bin"]["sha256"] = hashlib.sha256(blob).hexdigest()
    manifest["files"]["clicks.fused0.bin"]["bytes"] = len(blob)
    (d / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptCheckpointError, match="does not match its signature"):
        store.load(1)
    k, states, skipped = store.load_newest()
    assert (k, states) == (None, {}) and skipped[0][0] == 1
    assert not marker.exists()


def test_tampered_stage_table_blob_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(1, {}, {}, blobs={"stages.pkl": _signing.dumps({"stages": []})})
    marker = tmp_path / "ran"
    blob = evil(marker)
    (tmp_path / "ckpt-000001" / "stages.pkl").write_bytes(blob)
    with pytest.raises(CorruptCheckpointError):
        _signing.loads(store.blob(1, "stages.pkl"), "stages.pkl")
    # a sealed file rewritten as a bare pickle, or re-sealed under a made-up tag
    with pytest.raises(CorruptCheckpointError, match="no fusionkit signature"):
        _signing.loads(blob, "stages.pkl")
    forged = _signing.MAGIC + f"{_signing.key_id()}:{'0' * 64}".encode() + b"\n" + blob
    with pytest.raises(CorruptCheckpointError, match="does not match its signature"):
        _signing.loads(forged, "stages.pkl")
    assert not marker.exists()


def test_tampered_registry_version_is_refused_before_unpickling(tmp_path):
    reg = ModelRegistry("ctr", folder=tmp_path, keep=1)
    meta = dict(newest_ingest_ts=1.0, oldest_new_ingest_ts=1.0, metrics={})
    reg.publish(pickle.dumps([1, 2]), events_seen=1, new_events=1, **meta)
    reg.publish(pickle.dumps([3, 4]), events_seen=2, new_events=1, **meta)  # v1 off memory
    marker = tmp_path / "ran"
    blob = evil(marker)
    (tmp_path / "v000001.bin").write_bytes(blob)
    sidecar = json.loads((tmp_path / "v000001.json").read_text())
    sidecar.update(checksum=hashlib.sha256(blob).hexdigest(), size_bytes=len(blob))
    (tmp_path / "v000001.json").write_text(json.dumps(sidecar))
    again = ModelRegistry("ctr", folder=tmp_path, keep=1)  # a restarted registry
    with pytest.raises(CorruptCheckpointError, match="does not match its signature"):
        pickle.loads(again.state(1))  # what a serve replica does with the bytes
    assert not marker.exists()
    assert pickle.loads(again.state(2)) == [3, 4]


def test_tampered_schema_is_not_unpickled_by_a_restarted_registry(tmp_path):
    storage = tmp_path / "storage"
    registry = RegistryActor(str(storage), monitor=None)
    registry.register("ctr")
    registry.set_schema("ctr", {"x": "numeric"})
    meta = dict(events_seen=1, new_events=1, newest_ingest_ts=1.0, oldest_new_ingest_ts=1.0,
                metrics={})
    registry.publish("ctr", pickle.dumps([1]), meta)

    def served_schema():  # what a restarted registry hands a serve replica with the version
        return RegistryActor(str(storage), monitor=None).follow("ctr", -1, timeout=0)[3]

    assert served_schema() == {"x": "numeric"}
    marker = tmp_path / "ran"
    (storage / "models" / "ctr" / "schema.pkl").write_bytes(evil(marker))
    assert served_schema() is None
    assert not marker.exists()


def test_other_key_is_refused_with_one_sentence(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path / "checkpoints")
    store.save(1, {("clicks", "fused0"): {"offset": 10}}, {})
    _signing.claim_folder(tmp_path)
    sealed = _signing.dumps({"a": 1})
    monkeypatch.setenv(_signing.ENV, "another key")
    with pytest.raises(StorageKeyError) as err:
        _signing.claim_folder(tmp_path)
    message = str(err.value)
    assert message.startswith(f"the storage folder {tmp_path} was written with a different "
                              f"fusionkit secret (key id ")
    assert message.endswith("; set FUSIONKIT_SECRET to that key or use another storage folder")
    assert "$FUSIONKIT_SECRET" in message and message.count(". ") == 0
    with pytest.raises(StorageKeyError, match="written with a different fusionkit secret"):
        store.load(1)
    with pytest.raises(StorageKeyError):  # not taken for corruption: no fallback hides it
        store.load_newest()
    with pytest.raises(StorageKeyError):
        _signing.loads(sealed, "x")
    monkeypatch.delenv(_signing.ENV)  # the key it was written with: readable again
    assert store.load(1) == {("clicks", "fused0"): {"offset": 10}}
    _signing.claim_folder(tmp_path)


def test_environment_key_equals_the_file_key(home, monkeypatch):
    sealed = _signing.dumps([1, 2, 3])
    monkeypatch.setenv(_signing.ENV, (home / "secret").read_text())
    assert _signing.loads(sealed, "x") == [1, 2, 3]


def test_secret_file_is_made_once_private_and_shared_by_processes(home):
    """Four processes ask for the key at once: one file is made, all read the same key."""
    code = "from fusionkit import _signing; print(_signing.key().decode())"
    children = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                 text=True, env=dict(os.environ)) for _ in range(4)]
    keys = {child.communicate(timeout=120)[0].strip() for child in children}
    keys = {k.encode() for k in keys}
    path = home / "secret"
    assert keys == {_signing.key()} and len(_signing.key()) == 64  # 32 random bytes, in hex
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert [p.name for p in home.iterdir()] == ["secret"]  # no temporary files left behind


def test_storage_folders_are_private(tmp_path):
    storage = tmp_path / "storage"
    _signing.claim_folder(storage)
    CheckpointStore(storage / "checkpoints").save(1, {("a", "fused0"): 1}, {})
    registry = RegistryActor(str(storage), monitor=None)
    registry.register("ctr")
    registry.set_schema("ctr", {"x": "numeric"})
    folders = [storage, storage / "checkpoints", storage / "checkpoints" / "ckpt-000001",
               storage / "models", storage / "models" / "ctr"]
    assert {str(f): oct(stat.S_IMODE(f.stat().st_mode)) for f in folders} == {
        str(f): oct(0o700) for f in folders}
    files = [p for p in storage.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)


@pytest.mark.parametrize("name", ["ctr-api", "clicks", "fr-clicks", "keep1", "late_fail",
                                  "model.v2", "_x", "A" * 64])
def test_names_that_are_accepted(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["../x", "..", ".hidden", "a/b", "a\\b", "", "-x", "x" * 65,
                                  "café", "a b", "x\n", None, 3])
def test_names_that_are_refused(name):
    with pytest.raises(InvalidNameError, match="cannot be used: a name is 1 to 64 letters"):
        check_name(name)


def test_definitions_refuse_a_path_as_name():
    """Refused at definition, before anything is sent anywhere (no connection needed)."""
    import fusionkit as fk

    src = fk.sources.synthetic("clicks", rate=10, seed=1, max_events=10)
    with pytest.raises(InvalidNameError, match="stage name '../x' cannot be used"):
        fk.stream("../x", source=src)
    with pytest.raises(InvalidNameError):
        fk.train("../../etc", on="clicks", model=None, label="clicked")
    with pytest.raises(ValueError):  # InvalidNameError is a ValueError too
        fk.serve("a/b", model="ctr")
