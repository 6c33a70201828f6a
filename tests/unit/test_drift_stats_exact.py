"""The fast paths of the drift statistics compute what the plain ones do."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fusionkit.monitor.drift import ConceptDriftMonitor
from fusionkit.monitor.drift_stats import KSReference, Reference, category_counts


def _samples(rng: np.random.Generator, kind: str, n: int, m: int):
    if kind == "continuous":
        return rng.lognormal(3, 1, n), rng.lognormal(3.05, 1, m)
    if kind == "ties":
        return rng.integers(0, 24, n).astype(float), rng.integers(0, 25, m).astype(float)
    values = [0.0, 1.0, np.nan, np.inf, -np.inf, 2.5]
    return rng.choice(values, n), rng.choice(values[:-1] + [3.0], m)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # quantiles of infinities
@pytest.mark.parametrize("kind", ["continuous", "ties", "missing_and_infinite"])
@pytest.mark.parametrize("sizes", [(10_000, 5_000), (3_000, 1_500), (7, 3)])
def test_ks_statistic_equals_scipy_ks_2samp(kind, sizes):
    rng = np.random.default_rng(sum(sizes) + len(kind))
    ref, cur = _samples(rng, kind, *sizes)
    as_scipy = [np.where(np.isnan(x), np.inf, x) for x in (ref, cur)]  # missing: above all
    asymp = stats.ks_2samp(*as_scipy, method="asymp").statistic
    assert KSReference(ref).statistic(np.sort(as_scipy[1])) == asymp  # bit for bit
    compared = Reference(ref, categorical=False).compare(cur)
    assert compared["statistic"] == pytest.approx(stats.ks_2samp(*as_scipy).statistic, abs=1e-12)
    if np.prod(sizes) > 1_000_000:  # the large-sample path: no scipy call
        assert compared["statistic"] == asymp


def test_psi_bins_of_the_sorted_window_are_the_plain_counts():
    rng = np.random.default_rng(4)
    ref = np.r_[rng.normal(size=2_000), np.nan, np.inf, -np.inf]
    cur = np.r_[rng.normal(0.3, 1, size=1_000), [np.nan] * 5, np.inf]
    r = Reference(ref, categorical=False)
    from fusionkit.monitor.drift_stats import binned_counts, psi, quantile_edges

    assert np.array_equal(r.edges, quantile_edges(ref))
    assert np.array_equal(r.bin_counts, binned_counts(ref, r.edges))
    assert r.compare(cur)["psi"] == psi(ref, cur)


@pytest.mark.parametrize(
    "reference, current, expected",
    [
        # a string reference: every missing value of a string window is its NaN category
        (["a", "b", None], ["a", None, np.nan, pd.NA, "z"], [1, 0, 3, 1]),
        # a window mixing strings and numbers is compared as objects: None is not NaN
        (["a", "b", None], ["a", None, 1, "z"], [1, 0, 0, 3]),
        # a mixed reference keeps its categories as objects
        ([1, "a", None, 1], ["a", None, 1, 1, 2], [2, 1, 1, 1]),
        (["x", "y"], [np.nan, np.nan], [0, 0, 2]),
    ],
)
def test_categories_are_looked_up_as_pandas_compares_them(reference, current, expected):
    _, cur_counts, cats = category_counts(
        np.array(reference, dtype=object), np.array(current, dtype=object)
    )
    assert cur_counts.tolist() == expected, cats


def test_concept_monitor_checkpoint_keeps_only_the_sums_it_needs_and_resumes_alike():
    rng = np.random.default_rng(2)
    errors = (rng.random(30_000) < np.r_[np.full(20_000, 0.1), np.full(10_000, 0.16)]).astype(float)
    whole, resumed = ConceptDriftMonitor(), ConceptDriftMonitor()
    a = [x.offset for s in range(0, 30_000, 700) for x in whole.update(errors[s : s + 700]).alarms]
    b = []
    for s in range(0, 30_000, 700):
        if s == 14_000:
            state = pickle.dumps(resumed)
            assert len(pickle.loads(state)._c) <= resumed._keep + 1
            resumed = pickle.loads(state)
        b += [x.offset for x in resumed.update(errors[s : s + 700]).alarms]
    assert a == b and a
