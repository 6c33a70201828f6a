"""synthetic_feedback: impressions and delayed outcomes from one hidden truth, exact on replay."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import fusionkit as fk
from fusionkit.sources.feedback import PAGE, synthetic_feedback
from fusionkit.sources.synthetic import Synthetic
from fusionkit.streaming.join import IntervalJoin

N = 60_000


def read_all(src, size):
    parts = []
    while (b := src.read(size)) is not None:
        parts.append(b)
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def stream():
    ads, clicks = synthetic_feedback("ads", rate=None, seed=3, max_events=N, start_time=0.0)
    return read_all(ads, 5000), read_all(clicks, 5000)


def test_exported_from_fk_sources():
    assert fk.sources.synthetic_feedback is synthetic_feedback


def test_impressions_carry_features_and_an_id_but_no_label(stream):
    imp, _ = stream
    truth = read_all(Synthetic("ads", rate=None, seed=3, max_events=N, start_time=0.0), 5000)
    assert "clicked" not in imp.columns and imp["request_id"].is_unique
    pd.testing.assert_frame_equal(imp.drop(columns="request_id"),
                                  truth.drop(columns="clicked"))


def test_every_outcome_is_a_click_of_one_impression_after_it(stream):
    imp, out = stream
    truth = read_all(Synthetic("ads", rate=None, seed=3, max_events=N, start_time=0.0), 5000)
    assert out["request_id"].is_unique and (out["clicked"] == 1).all()
    clicked = set(truth.loc[truth["clicked"] == 1, "_offset"])
    assert set(out["request_id"]) == clicked  # every click arrives, no non-click does
    m = out.merge(imp[["request_id", "_event_time"]], on="request_id", suffixes=("", "_imp"))
    assert len(m) == len(out) and (m["_event_time"] >= m["_event_time_imp"]).all()
    assert out["_event_time"].is_monotonic_increasing and out["_offset"].is_monotonic_increasing


def test_delays_follow_the_stated_distribution(stream):
    imp, out = stream
    m = out.merge(imp[["request_id", "_event_time"]], on="request_id", suffixes=("", "_imp"))
    d = (m["_event_time"] - m["_event_time_imp"]).to_numpy()
    on_time, late = d[d <= 30.0], d[d > 30.0]
    # on time: exponential with mean 5 s truncated to [0, 30]
    cdf = lambda x: stats.expon.cdf(x, scale=5.0) / stats.expon.cdf(30.0, scale=5.0)  # noqa: E731
    assert stats.kstest(on_time, cdf).pvalue > 1e-3
    # late: 30 s plus the same, within (30, 60]; about 2% of the outcomes
    assert late.max() <= 60.0 and stats.kstest(late - 30.0, cdf).pvalue > 1e-3
    assert stats.binomtest(len(late), len(d), 0.02).pvalue > 1e-3


def test_late_fraction_and_delay_are_parameters():
    ads, clicks = synthetic_feedback("x", rate=None, seed=1, max_events=20_000, start_time=0.0,
                                     delay="1s", late_fraction=0.3, horizon="4s")
    imp, out = read_all(ads, 4096), read_all(clicks, 4096)
    m = out.merge(imp, on="request_id", suffixes=("", "_imp"))
    d = m["_event_time"] - m["_event_time_imp"]
    assert stats.binomtest(int((d > 4).sum()), len(d), 0.3).pvalue > 1e-3
    assert d.max() <= 8.0 and d[d <= 4].mean() == pytest.approx(1.0, rel=0.1)


@settings(max_examples=15, deadline=None, derandomize=True, database=None)
@given(sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=6),
       cut=st.integers(0, 40))
def test_same_outcomes_however_read_and_replayed(sizes, cut):
    """Deterministic by (seed, offset): any read sizes give the same rows, and a fresh
    source (pickled, as an actor gets it) seeking to the last offset read plus one
    continues exactly."""
    _, clicks = synthetic_feedback("ads", rate=None, seed=5, max_events=20_000,
                                   start_time=0.0, horizon="2s")
    whole = read_all(pickle.loads(pickle.dumps(clicks)), 100_000)
    parts, i = [], 0
    src = pickle.loads(pickle.dumps(clicks))
    while (b := src.read(sizes[i % len(sizes)])) is not None:
        parts.append(b)
        i += 1
        if i == cut:  # a crash: a new source resumes after the last offset read
            src = pickle.loads(pickle.dumps(clicks))
            src.seek(int(parts[-1]["_offset"].iloc[-1]) + 1 if len(parts[-1]) else 0)
            if not len(parts[-1]):
                parts = []
    got = pd.concat(parts, ignore_index=True)
    pd.testing.assert_frame_equal(got, whole)
    assert whole["_offset"].max() < (whole["_offset"].max() // PAGE + 1) * PAGE


def test_same_seed_same_streams_other_seed_other():
    a = synthetic_feedback("a", rate=None, seed=2, max_events=8000, start_time=5.0)
    b = synthetic_feedback("a", rate=None, seed=2, max_events=8000, start_time=5.0)
    c = synthetic_feedback("a", rate=None, seed=9, max_events=8000, start_time=5.0)
    outcomes = read_all(a[1], 999)
    pd.testing.assert_frame_equal(outcomes, read_all(b[1], 2000))
    pd.testing.assert_frame_equal(read_all(a[0], 999), read_all(b[0], 2000))
    assert not read_all(c[1], 999)["request_id"].equals(outcomes["request_id"])


def test_concept_drift_changes_who_clicks():
    ads, clicks = synthetic_feedback("d", rate=None, seed=0, max_events=40_000,
                                     start_time=0.0,
                                     drift=[fk.sources.ConceptDrift(at=20_000)])
    imp, out = read_all(ads, 5000), read_all(clicks, 5000)
    truth = read_all(Synthetic("d", rate=None, seed=0, max_events=40_000, start_time=0.0,
                               drift=[fk.sources.ConceptDrift(at=20_000)]), 5000)
    assert set(out["request_id"]) == set(truth.loc[truth["clicked"] == 1, "_offset"])
    y = imp["request_id"].isin(out["request_id"])
    before = imp["position"][:20_000].groupby(y[:20_000]).mean()
    after = imp["position"][20_000:].groupby(y[20_000:]).mean()
    assert before[True] < before[False] and after[True] > after[False]  # the concept flipped


def test_live_outcomes_wait_for_their_time():
    _, clicks = synthetic_feedback("live", rate=1000, seed=0, start_time=1e12)
    assert clicks.read(100).empty  # their event times are far in the future
    _, clicks = synthetic_feedback("live", rate=1000, seed=0, start_time=0.0)
    assert len(clicks.read(100)) == 100


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="late_fraction"):
        synthetic_feedback(late_fraction=1.5)
    with pytest.raises(ValueError, match="delay"):
        synthetic_feedback(delay="-1s")
    with pytest.raises(ValueError, match="horizon"):
        synthetic_feedback(horizon=0)


def test_a_join_within_the_horizon_takes_exactly_the_on_time_outcomes():
    """The two streams through IntervalJoin (within = horizon): every impression becomes
    one example, the positives are the outcomes within the horizon, the rest are late."""
    ads, clicks = synthetic_feedback("j", rate=None, seed=4, max_events=30_000,
                                     start_time=1.7e9, delay="1s", late_fraction=0.1,
                                     horizon="3s")
    j = IntervalJoin(on="request_id", within="3s", label="clicked", default=0)
    examples, now = [], 0.0
    imp, out = ads.read(1000), clicks.read(150)
    while imp is not None or out is not None:  # the one further behind in event time first
        left_first = out is None or (imp is not None and imp["_event_time"].iloc[-1]
                                     <= out["_event_time"].iloc[-1])
        if left_first:
            examples.append(j.process_left(imp, now=now))
            imp = ads.read(1000)
        else:
            examples.append(j.process_right(out, now=now))
            out = clicks.read(150)
        now += 1
    examples.append(j.flush())
    ex = pd.concat(examples, ignore_index=True)
    assert len(ex) == 30_000 and ex["request_id"].is_unique
    ads.seek(0)
    clicks.seek(0)
    imp, out = read_all(ads, 30_000), read_all(clicks, 30_000)
    m = out.merge(imp[["request_id", "_event_time"]], on="request_id", suffixes=("", "_imp"))
    on_time = set(m.loc[m["_event_time"] - m["_event_time_imp"] <= 3.0, "request_id"])
    assert set(ex.loc[ex["clicked"] == 1, "request_id"]) == on_time
    s = j.stats()
    assert s["late"] == len(out) - len(on_time) > 0 and s["orphans"] == 0
    assert j.side_outputs()["late"]["_reason"].str.startswith("late: more than 3s").all()
