"""Stream ids as offsets, and broker records decoded into batches (no broker needed)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit.sources._redis import MAX_MS, SEQ_MASK, id_to_offset, offset_to_id, safe_url
from fusionkit.sources.decode import decode_batch

ids = st.tuples(st.integers(0, MAX_MS), st.integers(0, SEQ_MASK))


@given(ids, ids)
def test_offsets_keep_the_order_of_stream_ids(a, b):
    oa, ob = id_to_offset(f"{a[0]}-{a[1]}"), id_to_offset(f"{b[0]}-{b[1]}")
    assert (oa < ob) == (a < b) and (oa == ob) == (a == b)
    assert 0 <= oa < 2**63
    assert offset_to_id(oa) == f"{a[0]}-{a[1]}"


def test_ids_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        id_to_offset(f"1-{SEQ_MASK + 1}")
    with pytest.raises(ValueError, match="not a stream id"):
        id_to_offset("12")


def test_passwords_are_masked():
    assert "secret" not in safe_url("redis://:secret@host:1/0")


def test_json_records_become_a_batch_and_the_rest_dead_letters():
    good = [json.dumps({"x": i, "name": f"n{i}", "ts": 100.0 + i}).encode() for i in range(3)]
    records = [good[0], b"\xff", b"42", None, good[1], json.dumps({"x": 9}).encode(), good[2]]
    offsets = list(range(10, 17))
    d = decode_batch(records, offsets, [1.0] * 7, "json", time_field="ts")
    assert d.batch["x"].tolist() == [0, 1, 2]
    assert d.batch["_offset"].tolist() == [10, 14, 16]
    assert d.batch["_event_time"].tolist() == [100.0, 101.0, 102.0]
    reasons = {off: why for _, why, off in d.dead}
    assert reasons == {11: "payload is not UTF-8 text",
                       12: "JSON payload is int, not an object",
                       13: "entry was deleted before it was read",
                       15: "missing event time field 'ts'"}


def test_field_maps_become_typed_columns():
    records = [{b"price": b"1.5", b"device": b"mobile"}, {b"price": b"2", b"device": b"web"},
               {b"price": b"oops", b"device": b"web"}]
    d = decode_batch(records, [1, 2, 3], [5.0, 5.0, 6.0], "fields")
    assert d.batch["price"].tolist() == [1.5, 2.0, "oops"]  # the schema names the odd one
    assert d.batch["device"].tolist() == ["mobile", "web", "web"]
    assert np.array_equal(d.batch["_event_time"], [5.0, 5.0, 6.0])
    assert d.dead == []


# -- no record can stop the decoder ------------------------------------------------------------
NOW = 1_800_000_000.0  # the wall clock the event-time tests decode at


def event(i: int, **extra) -> bytes:
    return json.dumps({"i": i, "ts": NOW - 1.0, **extra}).encode()


def decoded(records, **kwargs):
    return decode_batch(records, list(range(len(records))), [NOW] * len(records), "json",
                        time_field="ts", at=NOW, **kwargs)


def reasons_by_offset(d) -> dict[int, str]:
    return {off: why for _, why, off in d.dead}


def test_deep_nesting_and_giant_integers_are_dead_letters_not_errors():
    nested = b"[" * 200_000  # json.loads raises RecursionError, not JSONDecodeError
    digits = b'{"i": 9, "ts": 1, "x": ' + b"1" * 5000 + b"}"  # ValueError: int too long
    d = decoded([event(0), nested, event(2), digits, event(4)])
    assert d.batch["i"].tolist() == [0, 2, 4]
    assert d.batch["_offset"].tolist() == [0, 2, 4]
    why = reasons_by_offset(d)
    assert set(why) == {1, 3}
    assert why[1].startswith("cannot decode the payload: RecursionError")
    assert why[3].startswith("cannot decode the payload: ValueError: Exceeds the limit")


def test_a_record_that_breaks_the_whole_batch_is_found_and_dead_lettered():
    # pandas raises on the batch, not on a record: a date past 2262, an integer no float holds
    records = [event(i) for i in range(40)]
    records[7] = json.dumps({"i": 7, "ts": "9999-12-31"}).encode()
    records[30] = b'{"i": 30, "ts": ' + b"9" * 400 + b"}"
    d = decoded(records)
    assert d.batch["i"].tolist() == [i for i in range(40) if i not in (7, 30)]
    assert d.batch["_offset"].tolist() == d.batch["i"].tolist()
    why = reasons_by_offset(d)
    assert set(why) == {7, 30}
    assert all(w.startswith("cannot make an event of the payload: ") for w in why.values())


def test_payloads_over_max_bytes_are_dead_letters_unread():
    huge = json.dumps({"i": 1, "ts": NOW, "pad": "x" * 2_000_000}).encode()
    d = decoded([event(0), huge, event(2)])
    assert d.batch["i"].tolist() == [0, 2]
    (payload, why, off), = d.dead
    assert off == 1 and why == f"payload of {len(huge)} bytes is over the limit of 1048576 " \
                               f"(max_bytes); not read"
    assert len(payload) < 2000  # a preview, not the payload
    assert decoded([huge], max_bytes=None).batch["i"].tolist() == [1]
    fields = decode_batch([{b"k": b"v" * 100}, {b"k": b"v"}], [1, 2], [NOW] * 2, "fields",
                          max_bytes=50, at=NOW)
    assert fields.batch["k"].tolist() == ["v"] and fields.dead[0][2] == 1


def test_event_times_must_be_finite_and_not_far_ahead_of_the_clock():
    times = [b"Infinity", b"-Infinity", b"NaN", str(NOW * 1000).encode(),  # milliseconds
             str(NOW + 7200).encode(), str(NOW + 600).encode(), b'"2024-01-01T00:00:00Z"']
    records = [b'{"i": %d, "ts": %s}' % (i, t) for i, t in enumerate(times)]
    d = decoded(records)
    assert d.batch["i"].tolist() == [5, 6]  # ten minutes ahead, and any time in the past
    assert d.batch["_event_time"].tolist() == [NOW + 600, 1704067200.0]
    why = reasons_by_offset(d)
    assert why == {0: "event time in 'ts' is not finite: inf",
                   1: "event time in 'ts' is not finite: -inf",
                   2: "invalid event time in 'ts': nan",
                   3: f"event time in 'ts' is {NOW * 1000 - NOW:.0f} s ahead of the clock "
                      f"(max_future=3600 s)",
                   4: "event time in 'ts' is 7200 s ahead of the clock (max_future=3600 s)"}
    assert len(decoded(records, max_future=None).batch) == 4  # finite times all pass
    assert len(decoded(records, max_future=60.0).batch) == 1
    # the broker's own time is bounded too (a Kafka producer sets its messages' timestamps)
    d = decode_batch([event(0), event(1)], [0, 1], [NOW, NOW + 1e6], at=NOW)
    assert d.batch["i"].tolist() == [0]
    assert d.dead[0][1] == "the broker's time is 1000000 s ahead of the clock (max_future=3600 s)"


poison = st.one_of(
    st.binary(max_size=64),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"i": 1, "ts": ' + b"[" * n + b"1" + b"]" * n + b"}"),
    st.sampled_from([b'{"ts": Infinity}', b'{"ts": NaN}', b'{"ts": "9999-12-31"}',
                     b'{"ts": 1e300}', b'{"ts": [1, 2]}', b'{"ts": {"a": 1}}', b'{"ts": true}',
                     b'{"ts": ' + b"7" * 500 + b"}", b'{"_offset": "x"}', b"\xff\xfe"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 10**6).map(lambda i: event(i)), poison), max_size=30))
def test_every_record_is_an_event_or_a_dead_letter(records):
    d = decoded(records)  # never raises
    got = d.batch["_offset"].tolist()
    dead = [off for _, _, off in d.dead]
    assert sorted(got + dead) == list(range(len(records)))
    assert all(isinstance(why, str) and why for _, why, _ in d.dead)
    t = d.batch["_event_time"].to_numpy()
    assert np.isfinite(t).all() and (t <= NOW + 3600).all()


def test_limits_are_checked():
    from fusionkit.sources import Kafka, Redis
    from fusionkit.sources.decode import limits

    with pytest.raises(ValueError, match="max_bytes"):
        Redis(max_bytes=0)
    with pytest.raises(ValueError, match="max_future"):
        Kafka(max_future=-1)

    assert limits(10, "10min") == (10, 600.0) and limits(None, None) == (None, None)
    with pytest.raises(ValueError, match="not a duration"):
        limits(10, "soon")


# -- the schema check never raises on a value ---------------------------------------------------
def test_schema_split_dead_letters_values_it_cannot_hold():
    from fusionkit.streaming.validate import Schema

    class Odd:
        def __repr__(self):
            raise RuntimeError("no repr")

    frame = pd.DataFrame({"i": pd.Series([1, 10**400, 2**63, 3, "x", 5], dtype=object),
                          "x": pd.Series([1.0, 2.0, 3.0, -(10**400), 4.0, Odd()], dtype=object),
                          "_offset": range(6)})
    good, bad, why = Schema({"i": "integer", "x": "number"}).split(frame)
    assert good["i"].tolist() == [1] and good["i"].dtype == "int64"
    assert good["x"].dtype == "float64"
    assert dict(zip(bad["_offset"], why, strict=True)) == {
        1: "number out of range in 'i'", 2: "integer out of range in 'i'",
        3: "number out of range in 'x'", 4: "wrong type in 'i': 'x'",
        5: "cannot check the event: RuntimeError: no repr"}


# -- the consumer group defaults to the stage's name --------------------------------------------
@pytest.mark.parametrize("make", ["redis", "kafka"])
def test_broker_sources_default_their_group_to_the_stage(make):
    import pickle

    from fusionkit.sources import Kafka, Redis

    cls = Redis if make == "redis" else Kafka
    src = cls(stream="ev") if make == "redis" else cls(topic="ev", partitions="all")
    assert src.consumer_group == "fusionkit"  # read outside a stage
    src.bind("clicks")
    again = pickle.loads(pickle.dumps(src))  # as the stage's actors get it
    assert again.consumer_group == "clicks" and again.describe()["group"] == "clicks"
    if make == "kafka":
        assert again.share(1, 2).consumer_group == "clicks"
    mine = cls(group="shared")
    mine.bind("clicks")
    assert mine.consumer_group == "shared"
    assert (cls(max_future="2h", max_bytes=10).max_future,
            cls(max_future=None).max_future) == (7200.0, None)
