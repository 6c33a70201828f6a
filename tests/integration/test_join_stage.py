"""The join stage on a real local Ray: impressions and their delayed outcomes, joined into
examples a train stage learns, every impression exactly once, through SIGKILLs too."""

from __future__ import annotations

import os
import pickle
import signal

import numpy as np
import pandas as pd
import pytest
import ray
from conftest import wait_for

from fusionkit.training.protocol import Learner, Prediction

N = 200_000
WITHIN = 30.0


class RequestLabels(Learner):
    """Counts how often it learned each request id, and sums the labels it learned for it."""

    task = "classification"

    def __init__(self, n: int):
        self.counts = np.zeros(n, dtype="int64")
        self.labels = np.zeros(n, dtype="int64")
        self.read_at = np.zeros(n)  # when its impression was read (a column the stream adds)
        self.complete_at = np.zeros(n)  # its example's _ingest_ts

    def predict(self, X: pd.DataFrame) -> Prediction:
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        ids = X["request_id"].to_numpy(dtype="int64")
        np.add.at(self.counts, ids, 1)
        np.add.at(self.labels, ids, y.to_numpy(dtype="int64"))
        if "read_at" in X.columns:
            self.read_at[ids] = X["read_at"].to_numpy()
            self.complete_at[ids] = X["_ingest_ts"].to_numpy()

    def get_state(self) -> bytes:  # its arrays only: the class travels by value
        return pickle.dumps((self.counts, self.labels, self.read_at, self.complete_at))

    def set_state(self, state: bytes) -> None:
        self.counts, self.labels, self.read_at, self.complete_at = pickle.loads(state)


def sources(fk, seed: int, rate: float | None = None, within: float = WITHIN):
    """Impressions (paced at ``rate``, or as fast as taken) and their outcomes; the same
    rows whatever the pace, given the rate the event times advance by."""
    return fk.sources.synthetic_feedback("ads", rate=rate, seed=seed, max_events=N,
                                         start_time=0.0, delay=f"{within / 6:g}s",
                                         late_fraction=0.02, horizon=f"{within:g}s")


def oracle(fk, seed: int, rate: float | None = None, within: float = WITHIN) -> np.ndarray:
    """Whether each impression has an outcome within ``within`` (a pandas merge of the
    two sources' rows, read here in full)."""
    ads, clicks = sources(fk, seed, rate, within)
    parts = []
    while (b := ads.read(50_000)) is not None and len(b):
        parts.append(b)
    imp = pd.concat(parts)
    parts = []
    while (b := clicks.read(50_000)) is not None:
        parts.append(b)
    out = pd.concat(parts)
    m = imp[["request_id", "_event_time"]].merge(out[["request_id", "_event_time"]],
                                                 on="request_id", suffixes=("", "_o"))
    hit = m[(m["_event_time"] <= m["_event_time_o"])
            & (m["_event_time_o"] <= m["_event_time"] + within)]
    positive = np.zeros(N, dtype=bool)
    positive[hit["request_id"].to_numpy()] = True
    assert len(imp) == N and imp["request_id"].is_unique
    return positive


def learned(fk, name: str) -> RequestLabels:
    registry = fk.api.handles()["registry"]
    model = RequestLabels(0)
    model.set_state(ray.get(registry.state.remote(name, fk.publish(name))))
    return model


def stamped(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(read_at=df["_ingest_ts"])


def define(fk, seed: int, rate: float | None = None, parallelism: int = 1, fn=None) -> None:
    ads, clicks = sources(fk, seed, rate)
    fk.stream("impressions", source=ads, batch_size=1000, fn=fn)
    fk.stream("clicks", source=clicks, batch_size=1000)
    fk.join("examples", left="impressions", right="clicks", on="request_id",
            within=f"{WITHIN}s", label="clicked", default=0, idle=None,
            parallelism=parallelism)
    fk.train("ctr", on="examples", label="clicked", model=RequestLabels(N),
             publish_every=None)


def seen(fk) -> int:
    return int(fk.infos("ctr")[0].get("events_seen", 0))


def check_exactly_once(fk, seed: int, rate: float | None = None, within: float = WITHIN
                       ) -> RequestLabels:
    wait_for(lambda: seen(fk) >= N, timeout=240, what="every impression learned")
    model = learned(fk, "ctr")
    assert (model.counts == 1).all(), \
        f"{(model.counts == 0).sum()} never learned, {(model.counts > 1).sum()} twice or more"
    positive = oracle(fk, seed, rate, within)
    assert positive.sum() > 0.1 * N  # the data has clicks to find
    wrong = np.flatnonzero((model.labels == 1) != positive)
    assert len(wrong) == 0, f"{len(wrong)} labels differ from the oracle, e.g. {wrong[:5]}"
    infos = fk.infos("examples")  # one per actor; the join's counts are fields of each
    assert {i["status"] for i in infos} == {"finished"}, infos
    stats = {k: sum(i[k] for i in infos)
             for k in ("pending", "joined", "timed_out", "late", "orphans", "lefts")}
    assert stats["pending"] == 0
    if len(infos) > 1:  # each actor joined a part of the impressions
        assert all(0 < i["lefts"] < N for i in infos) and stats["lefts"] == N
    assert stats["joined"] == positive.sum()
    assert stats["joined"] + stats["timed_out"] == N
    assert stats["late"] > 0 and stats["orphans"] == 0  # 2% of outcomes come too late
    letters = fk.dead_letters("examples")
    assert len(letters) == stats["late"]
    assert letters["reason"].str.startswith("late").all()
    return model


def test_every_impression_learned_once_with_its_label(fk):
    define(fk, seed=3)
    check_exactly_once(fk, seed=3)
    row = fk.status().loc["examples"]
    assert row["kind"] == "join" and row["on"] == "impressions + clicks"
    # the label delay percentiles reach the monitor (gauged with the reports)
    delays = fk.metrics("examples")[["label_delay_p50", "label_delay_p99"]].dropna()
    assert len(delays) and (delays["label_delay_p50"] > 0).all()
    assert (delays["label_delay_p50"] <= delays["label_delay_p99"]).all()
    assert (delays["label_delay_p99"] <= WITHIN).all()


def test_a_join_on_two_actors_learns_every_impression_once(fk):
    define(fk, seed=9, parallelism=2, fn=stamped)
    model = check_exactly_once(fk, seed=9)
    # an example comes in when the join completes it, not when its impression was read:
    # the train stage's freshness is the loop's, without the label's own delay
    assert (model.complete_at >= model.read_at).all()
    assert (model.complete_at != model.read_at).all()
    row = fk.status().loc["examples"]
    status = fk.status()  # each event of both inputs counted once, by the actor of its key
    assert row["parallelism"] == 2
    assert row["events"] == N + status.loc["clicks", "events"]


def kill_mid_run(fk, seed: int, victim: str, parallelism: int = 1, actor: int = 0) -> None:
    rate = 20_000.0  # impressions paced over 10 s: the kill lands while they flow
    define(fk, seed, rate, parallelism)
    wait_for(lambda: seen(fk) >= N // 10, timeout=120, what="first examples learned")
    assert fk.checkpoint(timeout=60) is not None
    wait_for(lambda: seen(fk) >= N // 4, timeout=120, what="more examples learned")
    before = len(fk.recoveries())
    os.kill(fk.infos(victim)[actor]["pid"], signal.SIGKILL)
    wait_for(lambda: len(fk.recoveries()) > before, timeout=120, what="a recovery")
    assert fk.status().loc["impressions", "status"] == "running"  # killed mid-run
    check_exactly_once(fk, seed, rate)
    assert fk.status().loc[victim, "restarts"] >= 1


def test_join_actor_killed(fk):
    kill_mid_run(fk, seed=4, victim="examples")


def test_one_of_two_join_actors_killed(fk):
    kill_mid_run(fk, seed=10, victim="examples", parallelism=2, actor=1)


POISON = 120_000  # the impression the first definition's function cannot handle


def breaks_on_poison(df: pd.DataFrame) -> pd.DataFrame:
    if (df["request_id"] == POISON).any():
        raise ValueError(f"cannot handle impression {POISON}")
    return df


@pytest.mark.parametrize("between", ["nothing", "controller restarted"])
def test_failed_input_of_a_join_defined_again_takes_its_pipeline_back(fk, between):
    """A source actor hands impressions to two operator actors, one of which fails on one
    batch: defined again with a fixed function, the stream goes back to the last checkpoint
    with the join, its train stage and the join's other input, and every impression is
    still learned once, with its label. Also when the controller restarted after the
    failure (the failed actor's report went to the controller that died): the controller
    asks the actors."""
    seed, rate = 11, 20_000.0
    ads, clicks = sources(fk, seed, rate)
    fk.stream("impressions", source=ads, fn=breaks_on_poison, batch_size=1000, parallelism=2)
    fk.stream("clicks", source=clicks, batch_size=1000)
    # two operator actors hand impressions on out of order together, each in order: the
    # join's watermark follows the slower, so no allowed lateness is needed
    fk.join("examples", left="impressions", right="clicks", on="request_id",
            within=f"{WITHIN}s", label="clicked", default=0, idle=None)
    fk.train("ctr", on="examples", label="clicked", model=RequestLabels(N),
             publish_every=None)
    wait_for(lambda: seen(fk) >= N // 10, timeout=120, what="first examples learned")
    assert fk.checkpoint(timeout=60) is not None
    wait_for(lambda: fk.status().loc["impressions", "status"] == "failed", timeout=120,
             what="the impressions stage to fail on the poison impression")
    if between == "controller restarted":
        controller = fk.controller_info()
        os.kill(controller.pid, signal.SIGKILL)
        assert fk.controller_info().restarts == controller.restarts + 1  # waits for it
    fk.stream("impressions", source=ads, fn=lambda df: df, batch_size=1000, parallelism=2)
    check_exactly_once(fk, seed, rate)


def test_two_actors_of_an_input_and_a_late_first_outcome_lose_no_label(fk):
    """Impressions from two operator actors (one may run ahead of the other) and outcomes
    that only start once impressions have flowed for longer than ``idle``: with no allowed
    lateness and the default ``idle``, the watermark follows the slower impressions actor
    and waits for the first outcome, so no window closes early and every label is the
    oracle's."""
    seed, rate, within = 12, 20_000.0, 2.0
    ads, clicks = sources(fk, seed, rate, within)
    fk.stream("impressions", source=ads, fn=stamped, batch_size=1000, parallelism=2)
    fk.stream("clicks", source=clicks, batch_size=1000)
    fk.pause("clicks")
    fk.join("examples", left="impressions", right="clicks", on="request_id",
            within=f"{within:g}s", label="clicked", default=0)  # idle: the default, 5 s
    fk.train("ctr", on="examples", label="clicked", model=RequestLabels(N),
             publish_every=None)
    # impressions flow (paced: 20k per second of event time) with no outcome for 7.5 s
    wait_for(lambda: fk.status().loc["impressions", "events"] >= 150_000, timeout=120,
             what="impressions flowing for longer than idle")
    assert fk.status().loc["clicks", "events"] == 0
    assert sum(i["timed_out"] for i in fk.infos("examples")) == 0  # nothing closed early
    fk.resume("clicks")
    check_exactly_once(fk, seed, rate, within)


def test_trainer_of_a_join_killed(fk):
    kill_mid_run(fk, seed=5, victim="ctr")


# -- definition ------------------------------------------------------------------------------
def test_join_definition_errors(fk):
    ads, clicks = sources(fk, 6)
    fk.stream("impressions", source=ads, batch_size=1000)
    with pytest.raises(fk.StageNotFoundError, match="no stage named 'clickz'"):
        fk.join("examples", left="impressions", right="clickz", on="request_id", within="30s")
    fk.stream("clicks", source=clicks, batch_size=1000)
    with pytest.raises(fk.SchemaError, match="no such column"):
        fk.join("examples", left="impressions", right="clicks", on="user", within="30s")
    with pytest.raises(fk.FusionError, match="parallelism must be a whole number"):
        fk.join("examples", left="impressions", right="clicks", on="request_id",
                within="30s", parallelism=0)
    with pytest.raises(fk.FusionError, match="two different"):
        fk.join("examples", left="clicks", right="clicks", on="request_id", within="30s")
    with pytest.raises(ValueError, match="late must be"):
        fk.join("examples", left="impressions", right="clicks", on="request_id",
                within="30s", late="sometimes")
    assert "examples" not in fk.status().index
    # the streams wait for a consumer: a join only once a train stage takes its examples
    # (they would be lost else)
    assert set(fk.status().loc[["impressions", "clicks"], "status"]) == {"waiting"}
    fk.join("examples", left="impressions", right="clicks", on="request_id", within="30s",
            label="clicked")
    row = fk.status().loc["impressions"]
    assert row["status"] == "waiting" and "join 'examples' takes" in row["reason"]
    with pytest.raises(fk.FusionError, match="is a join stage"):
        fk.scale("examples", 2)  # set at definition (not "a train stage")
    fk.train("ctr", on="examples", label="clicked", model=RequestLabels(N), publish_every=None)
    wait_for(lambda: set(fk.status().loc[["impressions", "clicks"], "status"])
             <= {"running", "finished"}, timeout=30, what="both inputs reading")
    fk.stop("ctr")  # the last consumer of the join's examples: its inputs wait again
    wait_for(lambda: set(fk.status().loc[["impressions", "clicks"], "status"])
             <= {"waiting", "finished"}, timeout=30, what="both inputs waiting again")


# -- the magic -------------------------------------------------------------------------------
def run_cell(shell, code: str):
    result = shell.run_cell(code)
    result.raise_error()
    return result.result


def test_join_magic(fk):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    run_cell(shell, "%load_ext fusionkit")
    ads, clicks = sources(fk, 7)
    fk.stream("impressions", source=ads, batch_size=1000)
    fk.stream("clicks", source=clicks, batch_size=1000)
    with pytest.raises(UsageError, match="--within"):
        run_cell(shell, "%fusion join examples --left impressions --right clicks --on request_id")
    with pytest.raises(UsageError, match="duration"):
        run_cell(shell, "%fusion join examples --left impressions --right clicks "
                        "--on request_id --within soon")
    with pytest.raises(UsageError, match="parallelism"):
        run_cell(shell, "%fusion join examples --left impressions --right clicks "
                        "--on request_id --within 30s --parallelism 0")
    handle = run_cell(shell, "%fusion join examples --left impressions --right clicks "
                             "--on request_id --within 30s --label clicked --default 0 "
                             "--parallelism 2")
    assert handle.kind == "join"
    spec = fk.stage("examples").spec
    assert (spec.left, spec.right, spec.on, spec.within, spec.label, spec.default,
            spec.parallelism) == ("impressions", "clicks", "request_id", 30.0, "clicked", 0, 2)
    shell.user_ns["model"] = RequestLabels(N)
    run_cell(shell, "%fusion train ctr --on examples --model model --publish-every 1s")
    assert fk.stage("ctr").spec.label == "clicked"  # the join's label column
    wait_for(lambda: seen(fk) > 0, timeout=60, what="examples learned")


def test_restore_a_checkpoint_of_a_join(fk):
    """fk.restore() starts both streams, the join and its train stage from a checkpoint,
    on fresh hosts: every impression is still learned once, with its label."""
    rate = 20_000.0
    define(fk, 8, rate)
    wait_for(lambda: seen(fk) >= N // 10, timeout=120, what="first examples learned")
    assert fk.checkpoint(timeout=60) is not None
    before = fk.infos("examples")[0]["pid"]
    out = fk.restore()
    assert {"impressions", "clicks", "examples", "ctr"} <= set(out["stages"])
    assert fk.infos("examples")[0]["pid"] != before  # a fresh join actor
    check_exactly_once(fk, 8, rate)
