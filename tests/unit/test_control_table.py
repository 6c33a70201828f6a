"""The controller's stage table without Ray: lookups, pipelines, why a stream waits; and
specs that cannot change under an actor or a checkpoint that holds them."""

from __future__ import annotations

import dataclasses

import pytest

from fusionkit.control.table import StageRecord, StageTable, slots
from fusionkit.errors import StageNotFoundError
from fusionkit.runtime.specs import ServeSpec, StreamSpec, TrainSpec


def _table() -> StageTable:
    table = StageTable()
    for spec, kind in ((StreamSpec("clicks", source=None), "stream"),
                       (StreamSpec("views", source=None), "stream"),
                       (TrainSpec("ctr", on="clicks", model=None, label="y"), "train"),
                       (ServeSpec("ctr-api", model="ctr"), "serve")):
        table[spec.name] = StageRecord(spec.name, kind, spec, generation=table.next_generation())
    return table


def test_specs_are_frozen_and_changed_by_replacing():
    spec = StreamSpec("clicks", source=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.paused = True  # type: ignore[misc]
    paused = dataclasses.replace(spec, paused=True)
    assert paused.paused and not spec.paused
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainSpec("ctr", on="clicks", model=None, label="y").drift = "watch"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServeSpec("api", model="ctr").replicas = 2  # type: ignore[misc]


def test_pipelines_and_lookups():
    table = _table()
    assert table.generation == 4
    assert [sorted(r.name for r in g) for g in table.groups()] == [["clicks", "ctr"], ["views"]]
    assert table.stream_of(table["ctr"]) == "clicks"
    assert table.stream_of(table["ctr-api"]) is None
    assert table.record("ctr", "train").name == "ctr"
    with pytest.raises(StageNotFoundError, match=r"no train stage named 'ctx'.*ctr"):
        table.record("ctx", "train")


def test_a_stream_waits_until_something_takes_its_events():
    table = _table()
    assert table.wait_reason(table["clicks"].spec) is None  # ctr learns from it
    reason = table.wait_reason(table["views"].spec)
    assert "no stage reads 'views' yet" in reason and "fk.resume('views')" in reason
    assert table.wait_reason(dataclasses.replace(table["views"].spec, start=True)) is None
    assert "since 'ctr' was stopped" in table.wait_reason(table["views"].spec, "ctr")


def test_slots_name_each_actor_for_checkpoints():
    train = StageRecord("ctr", "train", None, actors=["a"])
    assert slots(train) == [("train0", "a")]
    fused = StageRecord("s", "stream", None, actors=["a", "b"])
    assert slots(fused) == [("fused0", "a"), ("fused1", "b")]
    split = StageRecord("s", "stream", None, actors=["a", "b"], source="r")
    assert slots(split) == [("source0", "r"), ("ops0", "a"), ("ops1", "b")]


def test_a_table_is_a_consumer_of_its_stream_and_in_its_pipeline():
    from fusionkit.runtime.specs import TableSpec

    table = _table()
    spec = TableSpec("user-stats", on="views", window=None, key="user_id")
    assert table.wait_reason(table["views"].spec) is not None  # nothing reads it yet
    table["user-stats"] = StageRecord("user-stats", "table", spec, actors=["t"],
                                      generation=table.next_generation())
    assert table.wait_reason(table["views"].spec) is None  # the table takes its events
    assert table.takers(table["views"].spec) == ["user-stats"]
    assert table.downstream_targets("views") == {"user-stats": ["t"]}
    assert [sorted(r.name for r in g) for g in table.groups()] == [["clicks", "ctr"],
                                                                   ["user-stats", "views"]]
    assert table.stream_of(table["user-stats"]) == "views"
    assert table["user-stats"].inputs == ["views"]
    assert slots(table["user-stats"]) == [("table0", "t")]
    assert spec.slots() == ["table0"]
