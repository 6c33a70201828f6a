"""The fused runtime on a real local Ray: stages, replacement, backpressure, failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import wait_for

import fusionkit as fk
from fusionkit.errors import StageFailedError, StageNotFoundError


def stage_actors(stage: str | None = None) -> list[str]:
    """Actor ids the controller has for a stage (or, with no name, every actor it holds:
    the stages' and the warm spares')."""
    info = fk.controller_info()
    if stage is not None:
        return list(info.stages.get(stage, ()))
    return sorted([*(a for ids in info.stages.values() for a in ids), *info.warm_hosts])


def alive_hosts() -> list[str]:
    """Every live stage-host actor in the cluster, as Ray's GCS sees them."""
    from ray._private import state

    return sorted(aid for aid, a in state.actors().items()
                  if a["State"] == "ALIVE" and a["ActorClassName"].endswith("StageHost"))


def events_of(name: str) -> int:
    return int(fk.status().loc[name, "events"])


def test_connect_is_idempotent(fk):
    assert fk.connect() is fk.connect()


def test_stream_runs_and_reports(fk):
    src = fk.sources.synthetic("clicks", rate=20_000, seed=1)
    s = fk.stream("clicks", source=src, fn=lambda df: df.assign(x2=df["price"] * 2),
                  batch_size=500, start=True)  # nothing downstream: it runs alone
    wait_for(lambda: events_of("clicks") > 5_000, what="5k events streamed")
    st = fk.status()
    assert st.loc["clicks", "kind"] == "stream"
    assert st.loc["clicks", "status"] == "running"
    assert st.loc["clicks", "parallelism"] == 1
    wait_for(lambda: len(fk.metrics("clicks")) >= 2, what="two metric rows")
    m = fk.metrics("clicks")
    assert {"events_in", "events_out", "rate_in", "p50_ms", "p95_ms", "p99_ms"} <= set(m.columns)
    assert m["events_in"].sum() > 0
    assert (m["p99_ms"].dropna() >= m["p50_ms"].dropna()).all()
    head = s.peek(3)
    assert list(head["x2"]) == list(head["price"] * 2)
    assert {"_event_time", "_ingest_ts", "_offset"} <= set(head.columns)


def test_redefinition_replaces_in_place(fk):
    src = fk.sources.synthetic("clicks", rate=5_000, seed=1)
    fk.stream("clicks", source=src, parallelism=2, key_by="user_id")
    first = stage_actors("clicks")
    assert len(first) == 3  # one source actor, two operator actors
    for _ in range(2):  # twice: a redefinition of a redefined stage leaves nothing behind
        fk.stream("clicks", source=src, parallelism=2, key_by="user_id")
    now = stage_actors("clicks")
    assert len(now) == 3
    assert set(now).isdisjoint(first)
    assert list(fk.status().index) == ["clicks"]
    # no duplicates anywhere in the cluster: live hosts are exactly the stage's and the spares
    wait_for(lambda: alive_hosts() == stage_actors(), what="old actors gone")
    assert set(first).isdisjoint(alive_hosts())


def test_stop_one_and_all(fk):
    src = fk.sources.synthetic("a", rate=1_000, seed=1)
    fk.stream("a", source=src)
    fk.stream("b", source=src)
    a_actors = stage_actors("a")
    fk.stop("a")
    assert list(fk.status().index) == ["b"]
    wait_for(lambda: set(a_actors).isdisjoint(alive_hosts()), what="stage a's actor gone")
    fk.stop()
    assert len(fk.status()) == 0
    assert stage_actors("b") == []


def test_unknown_stage_is_a_clear_error(fk):
    fk.stream("clicks", source=fk.sources.synthetic(rate=1_000))
    with pytest.raises(StageNotFoundError, match="Did you mean 'clicks'"):
        fk.stop("clickz")


def test_the_controller_and_a_stage_report_through_the_public_api(fk):
    """What tests and benchmarks asked the controller by name is public: its process,
    restarts, storage, stages' actor ids and warm pool; a stage's definition and actors."""
    import os

    fk.stream("clicks", source=fk.sources.synthetic("clicks", rate=1_000, seed=3),
              parallelism=2, key_by="user_id", batch_size=123)
    full = fk.wait_warm()
    info = fk.controller_info()
    assert isinstance(info, fk.ControllerInfo)
    os.kill(info.pid, 0)  # a live process of this machine
    assert info.pid != os.getpid() and isinstance(info.restarts, int)
    assert info.storage == fk.connect().storage
    assert list(info.stages) == ["clicks"] and len(info.stages["clicks"]) == 3  # reader + 2
    assert len(info.warm_hosts) == full > 0
    assert set(info.warm_hosts).isdisjoint(info.stages["clicks"])
    stage = fk.stage("clicks")
    assert isinstance(stage, fk.StageHandle) and stage.kind == "stream"
    assert stage.actor_ids() == list(info.stages["clicks"])
    assert stage.spec.batch_size == 123 and stage.spec.parallelism == 2
    with pytest.raises(StageNotFoundError, match="Did you mean 'clicks'"):
        fk.stage("clickz")
    with pytest.raises(StageNotFoundError, match="Did you mean 'clicks'"):
        fk.StageHandle("clickz", "stream").actor_ids()


def test_failing_function_at_definition_raises_with_remote_traceback(fk):
    def broken(df):
        return df["no_such_column"] * 2

    with pytest.raises(StageFailedError) as err:
        fk.stream("bad", source=fk.sources.synthetic(rate=1_000), fn=broken)
    assert "no_such_column" in str(err.value)
    rendered = "\n".join(err.value._render_traceback_())
    assert "broken" in rendered and "Remote traceback" in rendered
    assert "bad" not in fk.status().index


def test_function_failing_later_marks_stage_failed(fk):
    def fails_after_offset(df):
        if df["_offset"].max() > 3_000:
            raise ValueError("bad day at the office")
        return df

    fk.stream("late_fail", source=fk.sources.synthetic(rate=20_000), fn=fails_after_offset,
              start=True)
    wait_for(lambda: fk.status().loc["late_fail", "status"] == "failed", what="failed status")
    row = fk.status().loc["late_fail"]
    assert "bad day at the office" in row["error"]
    assert "fails_after_offset" in row["traceback"]
    with pytest.raises(StageFailedError, match="bad day"):
        fk.check("late_fail")


def test_malformed_events_go_to_dead_letters(fk):
    good = pd.DataFrame({"amount": np.arange(100, dtype="float64"), "kind": ["a"] * 100})
    bad = pd.DataFrame({"amount": ["oops", None, np.inf], "kind": ["a", "b", "c"]},
                       dtype="object")
    schema = fk.Schema({"amount": "number", "kind": "string"})
    data = pd.concat([good, bad], ignore_index=True)
    fk.stream("pay", source=fk.sources.replay(data), schema=schema, batch_size=50, start=True)
    wait_for(lambda: fk.status().loc["pay", "dead_letters"] == 3, what="3 dead letters")
    dl = fk.dead_letters("pay")
    assert sorted(dl["offset"]) == [100, 101, 102]
    reasons = " | ".join(dl["reason"])
    assert "wrong type in 'amount'" in reasons
    assert "missing value in 'amount'" in reasons
    assert "non-finite value in 'amount'" in reasons
    assert fk.status().loc["pay", "status"] in ("running", "finished")
