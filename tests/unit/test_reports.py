"""The records a stage's actors report and a stage's row of ``fk.status()``, without Ray:
frozen, giving the public API exactly the keys it gave when they were dicts built by hand,
and a stage's row made from its actors' records (the most telling status, counts summed,
the first error)."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from fusionkit.control.status import summary
from fusionkit.control.table import StageRecord
from fusionkit.runtime.reports import (
    ActorReport,
    JoinReport,
    ReplicaReport,
    StageActorReport,
    StageSummary,
    StreamReport,
    TrainReport,
)
from fusionkit.runtime.specs import JoinSpec, ServeSpec, StreamSpec, TrainSpec
from fusionkit.streaming.join import IntervalJoin

# The keys fk.infos / fk.status() gave before the records (read off the dicts the actors,
# the placeholders, the serve replicas and status.summary built by hand).
PLACEHOLDER_KEYS = {"stage", "index", "status", "error", "traceback", "totals", "dead_letters"}
ACTOR_KEYS = PLACEHOLDER_KEYS | {"kind", "dead_letters_dropped", "pid", "node", "started",
                                 "restarted"}
STREAM_KEYS = ACTOR_KEYS | {"role", "offset", "inflight", "waiting", "held_keys", "lag"}
TRAIN_KEYS = ACTOR_KEYS | {"events_seen", "published", "metrics", "waiting", "cpu_learning",
                           "cpu_drift", "cpu_drift_reporting", "publish_error", "served",
                           "compared"}
JOIN_KEYS = ACTOR_KEYS | {"examples", "waiting", "inflight", "ended", "lefts", "rights",
                         "pending", "joined", "timed_out", "late", "orphans", "duplicates",
                         "corrections", "overflow", "late_left", "unusable", "watermark",
                         "held_left", "held_right", "label_delay_p50", "label_delay_p99"}
REPLICA_KEYS = {"replica", "version", "swaps", "generation", "totals", "pid", "model", "routing",
                "shadow_dropped"}
SUMMARY_KEYS = {"name", "kind", "status", "reason", "parallelism", "events", "dead_letters",
                "late", "shed", "on", "error", "traceback", "created", "restarts", "actors"}

PROCESS = {"kind": "stream", "pid": 4242, "node": "ab12", "started": 1.0e9}


def _stream(status: str = "running", **fields) -> StreamReport:
    return StreamReport(stage="clicks", status=status, role="ops", **PROCESS, **fields)


def _train(status: str = "running", **fields) -> TrainReport:
    return TrainReport(stage="ctr", status=status, **{**PROCESS, "kind": "train"}, **fields)


def _records() -> list:
    return [ActorReport(stage="api", status="starting"),
            StageActorReport(stage="clicks", status="running", **PROCESS),
            _stream(offset={"0": 12}, totals={"events_in": 3.0}),
            _stream(partitions=[0, 2]),
            _train(metrics={"accuracy": 0.9}, publish_error="OSError: disk full"),
            ReplicaReport(replica="r1", version=3, totals={"requests": 2.0}, pid=7),
            StageSummary(name="clicks", kind="stream", status="running", parallelism=1,
                         created=1.0e9, actors=["a1"]),
            StageSummary(name="api", kind="serve", status="running", parallelism=2,
                         created=1.0e9, url="http://127.0.0.1:8000/api", route="/api"),
            _join(joined=7, timed_out=3, ended=("impressions",))]


def _join(status: str = "running", **fields) -> JoinReport:
    delays = {"label_delay_p50": 1.5, "label_delay_p99": 4.0}  # (NaN is no value equal)
    return JoinReport(stage="examples", status=status, **{**PROCESS, "kind": "join"},
                      **{**delays, **fields})


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).__name__)
def test_records_are_frozen_and_cross_processes_whole(record):
    for f in dataclasses.fields(record):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, f.name, None)
    # no attribute it does not declare either (slots; Python 3.11 says so with a TypeError)
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        record.anything = 1
    assert pickle.loads(pickle.dumps(record)) == record


@pytest.mark.parametrize("record", _records(), ids=lambda r: type(r).__name__)
def test_to_dict_round_trips(record):
    assert type(record)(**record.to_dict()) == record


def test_to_dict_gives_the_keys_the_api_gave():
    placeholder, actor, stream, reader, train, replica, row, serve_row, join = _records()
    assert set(placeholder.to_dict()) == PLACEHOLDER_KEYS
    assert set(actor.to_dict()) == ACTOR_KEYS
    assert set(stream.to_dict()) == STREAM_KEYS  # no "partitions": not a split reader
    assert set(reader.to_dict()) == STREAM_KEYS | {"partitions"}
    assert reader.to_dict()["partitions"] == [0, 2]
    assert set(train.to_dict()) == TRAIN_KEYS
    assert train.to_dict()["publish_error"] == "OSError: disk full"
    assert set(replica.to_dict()) == REPLICA_KEYS
    assert set(row.to_dict()) == SUMMARY_KEYS  # no url/route but for a serve stage
    assert set(serve_row.to_dict()) == SUMMARY_KEYS | {"url", "route"}
    assert stream.to_dict()["totals"] == {"events_in": 3.0}
    assert set(join.to_dict()) == JOIN_KEYS


def _record(kind: str, spec, **extra) -> StageRecord:
    return StageRecord(spec.name, kind, spec, created=5.0, extra=extra)


def test_summary_picks_the_most_telling_status_and_sums_counts():
    rec = _record("stream", StreamSpec("clicks", source=None), restarts=2)
    reports = [
        _stream(totals={"events_in": 10, "late": 1}, dead_letters=2),
        _stream("failed", index=1, error="KeyError: 'x'", traceback="Traceback ...",
                totals={"events_in": 5, "shed": 4}, dead_letters=1),
        ActorReport(stage="clicks", index=2, status="failed", error="actor unreachable"),
        _stream("waiting", index=3, totals={"events_in": 1.0}),
    ]
    row = summary(rec, reports)
    assert isinstance(row, StageSummary)
    assert (row.status, row.error, row.traceback) == ("failed", "KeyError: 'x'", "Traceback ...")
    assert (row.events, row.dead_letters, row.late, row.shed) == (16, 3, 1, 4)
    assert isinstance(row.events, int) and row.restarts == 2 and row.created == 5.0
    assert row.to_dict()["name"] == "clicks" and set(row.to_dict()) == SUMMARY_KEYS

    # no failure: starting beats paused beats waiting beats running
    assert summary(rec, [_stream(), _stream("waiting"), _stream("paused")]).status == "paused"
    assert summary(rec, [_stream("paused"), _stream("starting")]).status == "starting"
    paused = summary(rec, [_stream("paused"), _stream()])
    assert paused.reason == "paused: fk.resume('clicks') resumes it" and paused.error is None
    waits = _record("stream", StreamSpec("clicks", source=None, waiting="no consumer yet"))
    assert summary(waits, [_stream("waiting")]).reason == "no consumer yet"
    assert summary(rec, []).status == "running"


def test_summary_shows_a_publishing_error_of_a_running_train_stage():
    rec = _record("train", TrainSpec("ctr", on="clicks", model=None, label="y"))
    row = summary(rec, [_train(publish_error="OSError: disk full")])
    assert (row.status, row.error, row.traceback, row.on) == (
        "running", "OSError: disk full", None, "clicks")
    failed = summary(rec, [_train("failed", error="ValueError: nan", publish_error="late")])
    assert failed.error == "ValueError: nan"  # a failure comes before a publishing error


def test_summary_of_a_serve_stage_carries_its_url():
    rec = _record("serve", ServeSpec("api", model="ctr", replicas=2),
                  url="http://127.0.0.1:8000/api", route="/api")
    row = summary(rec, [ActorReport(stage="api", index=i, status="running",
                                    totals={"events_in": 4} if i == 0 else {})
                        for i in range(2)])
    assert (row.parallelism, row.on, row.events) == (2, "ctr", 4)
    assert row.to_dict()["url"] == "http://127.0.0.1:8000/api"
    assert set(row.to_dict()) == SUMMARY_KEYS | {"url", "route"}


def test_a_join_report_takes_every_count_of_its_join():
    """Each number ``IntervalJoin.stats()`` gives is a field of the report (its ``dead``
    count as ``unusable``), so none of the join's counts is lost on the way to ``fk.infos``."""
    import pandas as pd

    j = IntervalJoin(on="k", within=5.0, label="y", default=0, idle=None)
    j.process_left(pd.DataFrame({"k": [1, 2, 3], "_event_time": [0.0, 1.0, 2.0],
                                 "_offset": [0, 1, 2]}), now=0.0)
    j.process_right(pd.DataFrame({"k": [1, 9], "_event_time": [3.0, 3.5], "y": [1, 1],
                                  "_offset": [0, 1]}), now=0.0)
    stats = j.stats()
    counts = JoinReport.counts_of(stats)
    assert set(stats) - set(counts) == {"dead"} and counts["unusable"] == stats["dead"]
    report = _join(**{**counts, "label_delay_p50": 3.0, "label_delay_p99": 3.0})
    assert (report.joined, report.pending, report.lefts, report.rights) == (1, 2, 3, 2)
    assert set(report.to_dict()) == JOIN_KEYS


def test_summary_of_a_join_names_both_inputs_and_sums_its_counts():
    rec = _record("join", JoinSpec("examples", left="impressions", right="clicks", on="k",
                                   within=5.0, label="y"))
    row = summary(rec, [_join("finished", totals={"events_in": 12, "late": 2}, dead_letters=2)])
    assert (row.kind, row.on, row.status, row.events, row.late, row.dead_letters) == (
        "join", "impressions + clicks", "finished", 12, 2, 2)
    assert set(row.to_dict()) == SUMMARY_KEYS
