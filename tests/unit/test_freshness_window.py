"""Freshness over a window: the monitor's ``since`` and the samples behind it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit.monitor.monitor import Monitor
from fusionkit.monitor.recent import RecentSamples


def test_since_counts_only_versions_served_after_it():
    m = Monitor()
    m.report_freshness("ctr", 1, 100.0, np.full(50, 90.0))     # waited 10 s: start-up
    m.report_freshness("ctr", 2, 200.0, np.full(100, 199.95))  # 50 ms each
    m.report_freshness("ctr", 3, 300.0, np.full(100, 299.93))  # 70 ms each
    everything = m.freshness_summary("ctr")
    assert everything["events"] == 250 and everything["p99_ms"] > 9_000
    window = m.freshness_summary("ctr", since=150.0)
    assert window["events"] == 200
    assert 49 < window["p50_ms"] < 71 and window["p99_ms"] < 71
    assert m.freshness_summary("ctr", since=300.0)["events"] == 0
    assert np.isnan(m.freshness_summary("nope", since=0.0)["p50_ms"])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=8), st.integers(0, 2**16))
def test_weighted_quantiles_match_the_full_data(sizes, seed):
    """Chunks larger than ``per_chunk`` are subsampled and weighted; the quantiles stay close
    to those of all the values."""
    rng = np.random.default_rng(seed)
    r = RecentSamples(per_chunk=500, seed=seed)
    chunks = [rng.exponential(0.05 * (i + 1), size=n) for i, n in enumerate(sizes)]
    for t, values in enumerate(chunks):
        r.add(float(t), values)
    everything = np.concatenate(chunks)
    assert r.count(since=-1.0) == everything.size
    q = r.quantiles_ms(since=-1.0)
    spread = np.quantile(everything, [0.4, 0.6]) * 1000
    assert spread[0] - 1e-9 <= q["p50_ms"] <= spread[1] + 1e-9 or everything.size < 20


def test_old_chunks_are_dropped():
    r = RecentSamples(chunks=3)
    for t in range(5):
        r.add(float(t), np.full(10, float(t)))
    assert r.count() == 30 and r.quantiles_ms()["p50_ms"] == 3000.0
