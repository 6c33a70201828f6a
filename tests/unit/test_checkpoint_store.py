"""Checkpoint files: durable renames, a fallback past an unreadable checkpoint, no leftovers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fusionkit import _files
from fusionkit.errors import CorruptCheckpointError
from fusionkit.runtime.checkpoint import CheckpointStore


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSIONKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FUSIONKIT_SECRET", raising=False)


def three(folder: Path) -> CheckpointStore:
    store = CheckpointStore(folder, keep=5)
    for k in (1, 2, 3):
        store.save(k, {("clicks", "fused0"): {"offset": 100 * k}}, {"generations": {"clicks": 1}})
    return store


def offset(states) -> int:
    return states[("clicks", "fused0")]["offset"]


def test_the_newest_checkpoint_that_loads(tmp_path):
    store = three(tmp_path)
    k, states, skipped = store.load_newest()
    assert (k, offset(states), skipped) == (3, 300, [])
    k, states, skipped = store.load_newest(2)
    assert (k, offset(states), skipped) == (2, 200, [])


@pytest.mark.parametrize("damage", ["flipped byte", "cut short", "state file gone",
                                    "manifest not JSON", "folder gone"])
def test_an_unreadable_latest_checkpoint_falls_back_to_the_previous(tmp_path, damage):
    store = three(tmp_path)
    d = tmp_path / "ckpt-000003"
    state = d / "clicks.fused0.bin"
    if damage == "flipped byte":
        data = bytearray(state.read_bytes())
        data[len(data) // 2] ^= 0xFF
        state.write_bytes(bytes(data))
    elif damage == "cut short":
        state.write_bytes(state.read_bytes()[:5])
    elif damage == "state file gone":
        state.unlink()
    elif damage == "manifest not JSON":
        (d / "MANIFEST.json").write_text('{"checkpoint": 3, "fi')
    else:
        shutil.rmtree(d)
    with pytest.raises((CorruptCheckpointError, OSError)):
        store.load(3)
    k, states, skipped = store.load_newest(3)
    assert (k, offset(states)) == (2, 200)
    assert [bad for bad, _ in skipped] == [3] and skipped[0][1]


def test_fallback_goes_back_as_far_as_needed_and_says_so(tmp_path):
    store = three(tmp_path)
    for k in (2, 3):
        (tmp_path / f"ckpt-{k:06d}" / "clicks.fused0.bin").write_bytes(b"garbage")
    k, states, skipped = store.load_newest(3)
    assert (k, offset(states)) == (1, 100)
    assert [bad for bad, _ in skipped] == [3, 2]
    assert all("corrupt" in why for _, why in skipped)
    (tmp_path / "ckpt-000001" / "clicks.fused0.bin").write_bytes(b"garbage")
    assert store.load_newest(3)[:2] == (None, {})


def test_a_checkpoint_of_other_stages_ends_the_search(tmp_path):
    """``accept`` refuses a checkpoint of an earlier definition: no older one is taken."""
    store = three(tmp_path)
    (tmp_path / "ckpt-000003" / "clicks.fused0.bin").write_bytes(b"garbage")
    k, states, skipped = store.load_newest(3, accept=lambda m: m["checkpoint"] != 2)
    assert (k, states, [bad for bad, _ in skipped]) == (None, {}, [3])


def test_partial_checkpoints_older_than_a_complete_one_are_pruned(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(1, {("a", "fused0"): 1}, {})
    for k in (2, 4):  # a crash while writing them: state files, no manifest
        (tmp_path / f"ckpt-{k:06d}").mkdir()
        (tmp_path / f"ckpt-{k:06d}" / "a.fused0.bin").write_bytes(b"x")
    (tmp_path / "ckpt-000009").mkdir()  # newer than every complete one: left alone
    store.save(5, {("a", "fused0"): 5}, {})
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == [
        "ckpt-000001", "ckpt-000005", "ckpt-000009"]
    assert store.complete() == [1, 5]


def test_the_folder_is_synced_after_each_rename(tmp_path, monkeypatch):
    """A rename is durable once its folder is synced: every file of a checkpoint, the
    manifest last, is followed by a sync of the checkpoint's folder."""
    calls: list[tuple[str, str]] = []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst):
        real_replace(src, dst)
        calls.append(("rename", Path(dst).name))

    def fsync(fd):
        real_fsync(fd)
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            calls.append(("sync folder", path.name))

    monkeypatch.setattr(_files.os, "replace", replace)
    monkeypatch.setattr(_files.os, "fsync", fsync)
    CheckpointStore(tmp_path / "checkpoints").save(1, {("a", "fused0"): 1, ("b", "train0"): 2},
                                                   {})
    renames = [i for i, c in enumerate(calls) if c[0] == "rename"]
    assert [calls[i][1] for i in renames] == ["a.fused0.bin", "b.train0.bin", "MANIFEST.json"]
    for i in renames:
        assert calls[i + 1] == ("sync folder", "ckpt-000001"), calls
    # the new folders themselves are synced into their parents
    assert ("sync folder", "checkpoints") in calls and ("sync folder", tmp_path.name) in calls
