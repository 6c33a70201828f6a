"""The model registry: lineage, memory and disk, rollback, pin, guard, checksums, restarts."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit import _clock
from fusionkit.errors import CorruptCheckpointError, FusionError, ModelNotFoundError, RegistryError
from fusionkit.registry.folder import INDEX
from fusionkit.registry.guard import Guard
from fusionkit.registry.records import VersionRecord
from fusionkit.registry.store import ModelRegistry


def publish(reg: ModelRegistry, n: int, accuracy: float = 0.9, **extra) -> VersionRecord:
    """Publish version-like state ``n`` with simple, recognisable lineage values."""
    return reg.publish(
        f"state-{n}".encode(),
        events_seen=1000 * n,
        newest_ingest_ts=100.0 + n,
        oldest_new_ingest_ts=99.0 + n,
        new_events=1000,
        metrics={"accuracy_recent": accuracy},
        **extra,
    )


def disk_files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.fixture
def clock(monkeypatch):
    ticks = iter(range(1_000, 10_000))
    monkeypatch.setattr(_clock, "now", lambda: float(next(ticks)))


def test_lineage_fields_and_numbering(clock):
    reg = ModelRegistry("ctr")
    assert reg.live() is None and reg.live_version() is None and reg.generation == 0
    first = reg.publish(
        b"abc",
        events_seen=500,
        newest_ingest_ts=12.5,
        oldest_new_ingest_ts=10.0,
        new_events=500,
        metrics={"accuracy": np.float64(0.75)},
    )
    second = publish(reg, 2)
    assert (first.version, first.parent, second.version, second.parent) == (1, None, 2, 1)
    assert first.model == "ctr" and first.created == 1000.0 and second.created > first.created
    assert (first.events_seen, first.new_events) == (500, 500)
    assert (first.newest_ingest_ts, first.oldest_new_ingest_ts) == (12.5, 10.0)
    assert first.metrics == {"accuracy": 0.75} and type(first.metrics["accuracy"]) is float
    assert first.checksum == hashlib.sha256(b"abc").hexdigest() and first.size_bytes == 3
    assert [reg.get(v).status for v in (1, 2)] == ["published", "live"]
    assert reg.live() == reg.get(2) and reg.generation == 2
    assert reg.versions() == [1, 2] and len(reg) == 2
    assert publish(reg, 3, parent=1).parent == 1
    assert [h["action"] for h in reg.history()] == ["publish"] * 3


def test_unknown_version_names_known_versions():
    reg = ModelRegistry("ctr")
    with pytest.raises(ModelNotFoundError, match="no version 1; known versions: none yet"):
        reg.get(1)
    publish(reg, 1)
    publish(reg, 2)
    with pytest.raises(ModelNotFoundError) as err:
        reg.state(7)
    assert str(err.value) == "model 'ctr' has no version 7; known versions: 1-2"
    with pytest.raises(ModelNotFoundError, match="known versions: 1-2"):
        reg.rollback(9)
    with pytest.raises(ModelNotFoundError):
        publish(reg, 3, parent=9)


def test_keep_k_in_memory_while_disk_serves_older_versions(tmp_path):
    reg = ModelRegistry("ctr", folder=tmp_path, keep=2)
    for n in range(1, 6):
        publish(reg, n, ingest_sample=np.array([n, n + 0.5]))
    table = reg.table()
    assert table.loc[table["in_memory"], "version"].tolist() == [4, 5]
    assert reg.state(1) == b"state-1" and reg.state(5) == b"state-5"
    assert reg.table()["in_memory"].sum() == 2  # reading an old version does not keep it
    assert reg.ingest_sample(1) is None
    sample = reg.ingest_sample(5)
    assert sample.tolist() == [5.0, 5.5] and not sample.flags.writeable


def test_without_folder_evicted_state_is_gone_but_lineage_stays():
    reg = ModelRegistry("ctr", keep=1)
    for n in range(1, 4):
        publish(reg, n)
    assert reg.get(1).events_seen == 1000
    with pytest.raises(
        ModelNotFoundError, match="no longer in memory .keep=1.*versions with state: v3"
    ):
        reg.state(1)


def test_live_and_pinned_stay_in_memory(tmp_path):
    reg = ModelRegistry("ctr", folder=tmp_path, keep=1)
    publish(reg, 1)
    reg.pin(1)
    for n in range(2, 5):
        publish(reg, n)
    assert reg.table().set_index("version")["in_memory"].to_dict() == {
        1: True,
        2: False,
        3: False,
        4: True,
    }


def test_rollback_keeps_later_versions_and_later_publishes_go_live():
    reg = ModelRegistry("ctr")
    for n in range(1, 4):
        publish(reg, n)
    assert reg.generation == 3
    record = reg.rollback(1)
    assert record.status == "live" and reg.live_version() == 1 and reg.generation == 4
    assert [reg.get(v).status for v in (1, 2, 3)] == ["live", "rolled-back", "rolled-back"]
    assert reg.state(3) == b"state-3"
    last = reg.history()[-1]
    assert (last["action"], last["version"], last["detail"], last["live"]) == (
        "rollback",
        1,
        "from v3",
        1,
    )
    assert publish(reg, 4).status == "live" and reg.generation == 5
    assert reg.get(1).status == "published"


def test_pin_holds_new_versions_until_unpin():
    reg = ModelRegistry("ctr")
    for n in range(1, 4):
        publish(reg, n)
    reg.pin(2)
    assert reg.live_version() == 2 and reg.pinned_version() == 2
    fourth = publish(reg, 4)
    assert fourth.status == "published" and fourth.reason == "stored while v2 is pinned"
    assert reg.live_version() == 2
    with pytest.raises(RegistryError, match="v2 of 'ctr' is pinned; unpin"):
        reg.rollback(1)
    reg.pin(1)  # moving the pin is allowed
    assert reg.live_version() == 1 and reg.pinned_version() == 1
    generation = reg.generation
    assert reg.unpin().version == 4
    assert reg.live_version() == 4 and reg.pinned_version() is None
    assert reg.generation == generation + 1
    assert reg.unpin().version == 4  # unpinned already: nothing changes
    assert publish(reg, 5).status == "live"


def test_unpin_does_not_bring_back_rolled_back_versions():
    reg = ModelRegistry("ctr")
    for n in range(1, 4):
        publish(reg, n)
    reg.rollback(1)
    reg.pin(1)
    assert reg.unpin().version == 1


def test_guard_holds_back_worse_and_lets_equal_or_better_through():
    reg = ModelRegistry("ctr", guard=Guard(metric="accuracy_recent", margin=0.02, min_events=0))
    publish(reg, 1, accuracy=0.86)
    held = publish(reg, 2, accuracy=0.81)
    assert held.status == "held"
    assert held.reason == "accuracy_recent 0.81 < live 0.86 - margin 0.02"
    assert reg.live_version() == 1 and reg.generation == 1
    assert publish(reg, 3, accuracy=0.86).status == "live"  # equal
    assert publish(reg, 4, accuracy=0.85).status == "live"  # worse, within the margin
    assert publish(reg, 5, accuracy=0.95).status == "live"  # better
    assert reg.get(2).status == "held"
    assert reg.history()[1]["detail"].startswith("held: accuracy_recent 0.81")
    reg.rollback(2)  # an explicit rollback may choose a held version
    assert reg.live_version() == 2


def test_guard_rules():
    lower = Guard(metric="loss", margin=0.1, higher_is_better=False, min_events=0)
    assert lower.judge({"loss": 0.45}, {"loss": 0.4}, 10) == (True, "")
    assert lower.judge({"loss": 0.6}, {"loss": 0.4}, 10) == (
        False,
        "loss 0.6 > live 0.4 + margin 0.1",
    )
    warm = Guard(min_events=1000)
    assert warm.judge({"accuracy_recent": 0.1}, {"accuracy_recent": 0.9}, 999)[0]
    assert not warm.judge({"accuracy_recent": 0.1}, {"accuracy_recent": 0.9}, 1000)[0]
    assert warm.judge({}, None, 5000) == (True, "")  # no champion yet
    assert warm.judge({"accuracy_recent": 0.1}, {}, 5000) == (True, "")  # champion unmeasured
    allowed, reason = warm.judge({"accuracy_recent": float("nan")}, {"accuracy_recent": 0.9}, 5000)
    assert not allowed and "no finite accuracy_recent" in reason


def test_guard_is_off_by_default():
    reg = ModelRegistry("ctr")
    assert reg.guard is None
    publish(reg, 1, accuracy=0.99)
    assert publish(reg, 2, accuracy=0.01).status == "live"


def test_corrupted_file_is_refused(tmp_path):
    reg = ModelRegistry("ctr", folder=tmp_path, keep=1)
    publish(reg, 1)
    publish(reg, 2)
    path = tmp_path / "v000001.bin"
    data = bytearray(path.read_bytes())
    data[3] ^= 0xFF
    path.write_bytes(bytes(data))
    expected = hashlib.sha256(b"state-1").hexdigest()
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(CorruptCheckpointError) as err:
        reg.state(1)
    message = str(err.value)
    assert "v000001.bin" in message and expected in message and actual in message
    with pytest.raises(CorruptCheckpointError):
        reg.rollback(1)
    with pytest.raises(CorruptCheckpointError):
        reg.pin(1)
    assert reg.live_version() == 2 and reg.pinned_version() is None and reg.generation == 2
    path.unlink()
    with pytest.raises(CorruptCheckpointError, match="missing"):
        reg.state(1)


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path, monkeypatch):
    reg = ModelRegistry("ctr", folder=tmp_path)
    publish(reg, 1)
    publish(reg, 2)
    expected = {"v000001.bin", "v000001.json", "v000002.bin", "v000002.json", INDEX}
    assert disk_files(tmp_path) == expected

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        publish(reg, 3)
    assert disk_files(tmp_path) == expected
    assert reg.versions() == [1, 2] and reg.live_version() == 2


def test_from_folder_round_trip(tmp_path, clock):
    guard = Guard(min_events=0)
    reg = ModelRegistry("ctr", folder=tmp_path, keep=2, guard=guard)
    publish(reg, 1, accuracy=0.9)
    publish(reg, 2, accuracy=0.5)  # held
    publish(reg, 3, accuracy=0.9)
    publish(reg, 4, accuracy=0.9)
    reg.rollback(3)
    reg.pin(1)
    publish(reg, 5, accuracy=0.9)

    again = ModelRegistry.from_folder(tmp_path, keep=2, guard=guard)
    assert again.model == "ctr" and again.keep == 2
    assert [again.get(v) for v in again.versions()] == [reg.get(v) for v in reg.versions()]
    assert [again.get(v).status for v in range(1, 6)] == [
        "live",
        "held",
        "published",
        "rolled-back",
        "published",
    ]
    assert (again.live_version(), again.pinned_version(), again.generation) == (
        1,
        1,
        reg.generation,
    )
    assert again.history() == reg.history()
    assert [again.state(v) for v in range(1, 6)] == [f"state-{n}".encode() for n in range(1, 6)]
    pd.testing.assert_frame_equal(
        again.table().drop(columns="in_memory"), reg.table().drop(columns="in_memory")
    )
    assert publish(again, 6).version == 6  # numbering continues
    assert ModelRegistry("ctr", folder=tmp_path).versions() == [1, 2, 3, 4, 5, 6]


def test_folder_of_another_model_is_refused(tmp_path):
    publish(ModelRegistry("ctr", folder=tmp_path), 1)
    with pytest.raises(RegistryError, match="'ctr', not 'churn'"):
        ModelRegistry("churn", folder=tmp_path)
    with pytest.raises(ModelNotFoundError, match="no checkpoint folder"):
        ModelRegistry.from_folder(tmp_path / "missing")
    assert issubclass(RegistryError, FusionError)


def test_interrupted_publish_is_kept_but_not_made_live(tmp_path):
    reg = ModelRegistry("ctr", folder=tmp_path)
    publish(reg, 1)
    index = (tmp_path / INDEX).read_bytes()
    publish(reg, 2)
    (tmp_path / INDEX).write_bytes(index)  # as if the process died before the index write
    again = ModelRegistry.from_folder(tmp_path)
    assert again.live_version() == 1 and again.get(2).status == "published"
    assert again.unpin().version == 1


def test_get_state_set_state_without_folder():
    reg = ModelRegistry("ctr", keep=2)
    for n in range(1, 4):
        publish(reg, n)
    reg.pin(2)
    snapshot = reg.get_state()
    assert set(snapshot["states"]) == {2, 3}
    other = ModelRegistry("ctr", keep=2)
    other.set_state(snapshot)
    assert [other.get(v) for v in (1, 2, 3)] == [reg.get(v) for v in (1, 2, 3)]
    assert (other.live_version(), other.pinned_version(), other.generation) == (2, 2, 4)
    assert other.state(3) == b"state-3" and other.history() == reg.history()
    with pytest.raises(RegistryError):
        ModelRegistry("churn").set_state(snapshot)


def test_set_state_with_folder_reads_bytes_lazily(tmp_path):
    reg = ModelRegistry("ctr", folder=tmp_path)
    publish(reg, 1)
    publish(reg, 2)
    snapshot = reg.get_state()
    assert snapshot["states"] == {}
    other = ModelRegistry("ctr", folder=tmp_path)
    other.set_state(snapshot)
    assert other.table()["in_memory"].sum() == 0
    assert other.state(2) == b"state-2" and other.table()["in_memory"].sum() == 1


def test_table_columns_and_types(clock):
    reg = ModelRegistry("ctr")
    empty = reg.table()
    assert empty.empty and {"version", "created_at", "status", "live", "pinned"} <= set(empty)
    publish(reg, 1)
    reg.publish(
        b"x",
        events_seen=1,
        newest_ingest_ts=1.0,
        oldest_new_ingest_ts=1.0,
        new_events=1,
        metrics={"status": 1.0, "loss": 0.3},
    )
    table = reg.table()
    assert table["version"].tolist() == [1, 2]
    assert table["created_at"].iloc[0] == pd.Timestamp(1000.0, unit="s", tz="UTC")
    assert table["checksum"].str.len().tolist() == [12, 12]
    assert table["live"].tolist() == [False, True] and table["pinned"].tolist() == [False, False]
    assert table["parent"].isna().tolist() == [True, False]
    assert table["accuracy_recent"].iloc[0] == 0.9 and np.isnan(table["loss"].iloc[0])
    assert table["metric_status"].tolist()[1] == 1.0 and table["status"].tolist()[1] == "live"


def test_wait_generation():
    reg = ModelRegistry("ctr")
    assert reg.wait_generation(0, timeout=0) == 0
    seen = []
    waiter = threading.Thread(target=lambda: seen.append(reg.wait_generation(0, timeout=30)))
    waiter.start()
    publish(reg, 1)
    waiter.join(timeout=30)
    assert seen == [1]


operations = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.floats(0.0, 1.0)),
        st.tuples(st.just("rollback"), st.integers(1, 12)),
        st.tuples(st.just("pin"), st.integers(1, 12)),
        st.tuples(st.just("unpin"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(ops=operations, keep=st.integers(1, 3), guarded=st.booleans())
def test_invariants_hold_under_any_sequence(ops, keep, guarded):
    with tempfile.TemporaryDirectory() as folder:
        guard = Guard(margin=0.1, min_events=0) if guarded else None
        reg = ModelRegistry("m", folder=folder, keep=keep, guard=guard)
        changes = 0
        for action, arg in ops:
            before = reg.live_version()
            try:
                if action == "publish":
                    record = publish(reg, len(reg) + 1, accuracy=arg)
                    assert record.status != "live" or record.version == reg.live_version()
                elif action == "unpin":
                    reg.unpin()
                else:
                    getattr(reg, action)(arg)
            except (ModelNotFoundError, RegistryError):
                assert reg.live_version() == before
            changes += reg.live_version() != before
            statuses = [reg.get(v).status for v in reg.versions()]
            assert reg.versions() == list(range(1, len(reg) + 1))
            assert statuses.count("live") == (reg.live_version() is not None)
            if reg.live_version() is not None:
                assert reg.get(reg.live_version()).status == "live"
            if reg.pinned_version() is not None:
                assert reg.live_version() == reg.pinned_version()
            assert reg.generation == changes
            memory = set(reg.table().query("in_memory")["version"])
            must = set(reg.versions()[-keep:]) | {reg.live_version(), reg.pinned_version()}
            assert memory == must - {None}
        again = ModelRegistry.from_folder(folder, keep=keep)
        assert [again.get(v) for v in again.versions()] == [reg.get(v) for v in reg.versions()]
        assert (again.live_version(), again.pinned_version()) == (
            reg.live_version(),
            reg.pinned_version(),
        )


def test_only_the_last_retain_versions_are_remembered(tmp_path):
    """Older versions are forgotten, records and files, except the live and a pinned one;
    a registry resumed from the folder remembers the same ones."""
    reg = ModelRegistry("ctr", folder=tmp_path, keep=2, retain=4)
    for i in range(1, 7):
        publish(reg, i)
    assert reg.versions() == [3, 4, 5, 6]
    assert sorted(p.name for p in tmp_path.glob("v*.bin")) == [
        f"v{v:06d}.bin" for v in (3, 4, 5, 6)]
    with pytest.raises(ModelNotFoundError, match="no version 1; known versions: 3-6"):
        reg.rollback(1)
    reg.pin(3)
    for i in range(7, 10):
        publish(reg, i)
    assert reg.versions() == [3, 7, 8, 9]  # the pinned version stays
    assert reg.live_version() == 3
    resumed = ModelRegistry("ctr", folder=tmp_path, keep=2, retain=4)
    assert resumed.versions() == [3, 7, 8, 9] and resumed.live_version() == 3
    assert resumed.state(9) == reg.state(9)
    smaller = ModelRegistry("ctr", folder=tmp_path, keep=1, retain=2)
    assert smaller.versions() == [3, 9]
    assert sorted(p.name for p in tmp_path.glob("v*.json")) == ["v000003.json", "v000009.json"]


def test_retain_is_at_least_keep():
    with pytest.raises(ValueError, match="retain must be at least keep"):
        ModelRegistry("ctr", keep=5, retain=2)
