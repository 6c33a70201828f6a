"""Sources of several partitions: positions, shares over a stage's actors, stage layouts."""

from __future__ import annotations

import pickle

import pytest

from fusionkit.runtime.specs import StreamSpec
from fusionkit.sources.base import later
from fusionkit.sources.kafka import Kafka
from fusionkit.sources.synthetic import Synthetic


def test_positions_combine_partition_by_partition():
    assert later(None, 7) == 7 and later(0, 7) == 7 and later(9, 7) == 9
    assert later({0: 5, 1: 9}, {1: 4, 2: 1}) == {0: 5, 1: 9, 2: 1}
    assert later({}, {3: 2}) == {3: 2} and later({3: 2}, None) == {3: 2}
    with pytest.raises(TypeError, match="cannot combine source positions"):
        later(5, {0: 1})


@pytest.mark.parametrize("given, kept", [
    (None, None), ("all", "all"), ([2, 0], (2, 0)), ("0, 1,3", (0, 1, 3)), (4, (4,)),
])  # fmt: skip
def test_kafka_partitions_argument(given, kept):
    assert Kafka("h:1", topic="t", partitions=given).partitions == kept


@pytest.mark.parametrize("given", [[], [1, 1], [-1], "a,b", [0.5j]])
def test_kafka_bad_partitions_are_clear_errors(given):
    with pytest.raises(ValueError, match="partitions must be"):
        Kafka("h:1", topic="t", partitions=given)


def test_kafka_shares_are_picklable_and_say_what_they_read():
    src = Kafka("h:1", topic="t", partitions=[0, 1, 2, 3, 4])
    parts = [src.share(i, 2) for i in range(2)]
    assert [p.describe()["partitions"] for p in parts] == [
        "0,1,2,3,4, every 2nd from the 1st", "0,1,2,3,4, every 2nd from the 2nd"]
    again = pickle.loads(pickle.dumps(parts[1]))
    assert again._share == (1, 2) and again.partitions == (0, 1, 2, 3, 4)
    assert src._share == (0, 1)  # sharing leaves the source itself alone
    single = Kafka("h:1", topic="t", partition=3)
    assert not single.splittable and single.describe()["partition"] == 3
    with pytest.raises(ValueError, match="cannot be split over actors"):
        single.share(0, 2)
    with pytest.raises(ValueError, match="share 2 of 2 does not exist"):
        src.share(2, 2)


def test_a_split_source_makes_every_actor_a_reader():
    split = Kafka("h:1", topic="t", partitions="all")
    spec = StreamSpec("s", split, parallelism=3)
    assert spec.readers == 3 and spec.fused
    assert spec.slots() == spec.reading_slots() == ["fused0", "fused1", "fused2"]
    assert spec.source_of(2)._share == (2, 3)
    # a key asks for a shuffle by key: one reader of every partition, N operator actors
    keyed = StreamSpec("s", split, parallelism=3, key="user")
    assert keyed.readers == 1 and not keyed.fused and keyed.source_of(0) is split
    assert keyed.slots() == ["source0", "ops0", "ops1", "ops2"]
    assert keyed.reading_slots() == ["source0"]
    # a source that does not split: the same
    plain = StreamSpec("s", Synthetic(rate=None), parallelism=2)
    assert plain.slots() == ["source0", "ops0", "ops1"]
    one = StreamSpec("s", split)
    assert one.slots() == ["fused0"] and one.source_of(0) is split


def test_the_magic_source_url_takes_partitions():
    from fusionkit.notebook.sources import connector

    src = connector("kafka://127.0.0.1:9092/events?partitions=all&group=g")
    assert (src.topic, src.group, src.partitions, src.splittable) == ("events", "g", "all", True)
    assert connector("kafka://127.0.0.1:9092/events?partitions=0,2").partitions == (0, 2)
    assert connector("kafka://127.0.0.1:9092/events?partition=1").partitions is None
