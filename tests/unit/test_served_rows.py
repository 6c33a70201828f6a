"""What a serve stage writes for an answered row and for a feedback row, and what it refuses."""

from __future__ import annotations

import pytest

from fusionkit.serving.inputs import BadRequest
from fusionkit.serving.replica import is_feedback
from fusionkit.serving.served_log import (
    as_floats,
    feedback_records,
    request_ids,
    served_records,
)
from fusionkit.sources.logfiles import LogFiles, LogWriter


def test_ids_given_are_kept_and_missing_ones_made_unique():
    ids = request_ids([{"request_id": "a"}, {}, {"request_id": None}], 3)
    assert ids[0] == "a" and len(set(ids)) == 3
    assert all(isinstance(i, str) and len(i) == 32 for i in ids[1:])


@pytest.mark.parametrize("rows", [[{"request_id": 5}], [{"request_id": ""}],
                                  [{"request_id": "x" * 300}], {"request_id": [1], "x": [1]},
                                  {"request_id": ["a", "b"], "x": [1]}])
def test_a_bad_request_id_is_refused(rows):
    with pytest.raises(BadRequest) as err:
        request_ids(rows, 1)
    assert err.value.status == 400 and "request_id" in err.value.message


@pytest.mark.parametrize("payload, message", [
    ({"label": 1}, "no request_id"),
    ({"request_id": "a"}, "no label"),
    ({"request_id": 3, "label": 1}, "request_id must be"),
    ({"request_id": "a", "label": "yes"}, "label must be"),
    ({"request_id": "a", "label": None}, "label must be"),
    ([{"request_id": "a", "label": 1}, 7], "feedback row 1"),
    ("clicked", "feedback is"),
    ({"rows": []}, "no feedback rows"),
])
def test_malformed_feedback_is_refused_with_the_reason(payload, message):
    with pytest.raises(BadRequest) as err:
        feedback_records(payload, 100, 1.0)
    assert err.value.status == 400 and message in err.value.message


def test_too_many_feedback_rows_are_refused_before_reading_them():
    with pytest.raises(BadRequest) as err:
        feedback_records([{"request_id": "a", "label": 1}] * 11, 10, 1.0)
    assert err.value.status == 413


def test_feedback_of_every_accepted_shape():
    one = {"request_id": "a", "label": True}
    for payload in (one, [one], {"rows": [one]}):
        assert feedback_records(payload, 10, 2.0) == [
            {"request_id": "a", "label": 1, "_event_time": 2.0}]


def test_served_rows_round_trip_through_the_log(tmp_path):
    features = as_floats([{"price": 2, "device": "m"}, {"price": 2.5, "device": "t"}], ["price"])
    recs = served_records(["a", "b"], features, [True, False], [0.7, float("nan")], "ctr", 4,
                          "r1", 50.0)
    LogWriter(tmp_path, name="r1").append(recs)
    src = LogFiles(tmp_path)
    src.open()
    batch = src.read(10)
    assert batch["request_id"].tolist() == ["a", "b"]
    assert batch["price"].dtype == "float64"  # an int sent for a number stays a float column
    assert batch["_prediction"].tolist() == [True, False]
    assert batch["_proba"].iloc[0] == 0.7 and batch["_proba"].isna().iloc[1]  # NaN as null
    assert set(batch["_version"]) == {4} and set(batch["_model"]) == {"ctr"}
    assert set(batch["_replica"]) == {"r1"} and set(batch["_event_time"]) == {50.0}


def test_the_feedback_route_is_recognised_under_the_stage_route():
    assert is_feedback("/api/feedback", "/api") and is_feedback("/api/feedback/", "/api")
    assert not is_feedback("/api", "/api") and not is_feedback("/api/", "/api")
    assert not is_feedback("/feedback", "/feedback")  # a stage routed at /feedback predicts


def test_served_rows_with_missing_values_pass_the_served_streams_check(tmp_path):
    """A nullable feature sent as null and a NaN probability are answered rows: the served
    stream keeps them (a schema inferred from a first batch would set them aside)."""
    from fusionkit.serving.served_log import LOGGED_SCHEMA
    from fusionkit.streaming.validate import Schema

    w = LogWriter(tmp_path, name="r")
    w.append(served_records(["a", "b"], [{"price": 1.0, "age": 3}, {"price": 2.0, "age": 4}],
                            [True, False], [0.5, 0.4], "m", 1, "r", 1.0))
    w.append(served_records(["c"], [{"price": float("nan"), "age": None}], [None],
                            [float("nan")], "m", 1, "r", 2.0))
    src = LogFiles(tmp_path, schema=LOGGED_SCHEMA)
    src.open()
    first, second = src.read(2), src.read(10)
    inferred = Schema.infer(first)
    assert len(inferred.split(second)[1]) == 1  # what the default would have done
    good, bad, _ = src.schema.split(second)
    assert len(bad) == 0 and good["request_id"].tolist() == ["c"]
