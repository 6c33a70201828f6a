"""Stream ids as offsets, and broker records decoded into batches (no broker needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
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
