"""The fast paths of the drift statistics compute what the plain ones do."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fusionkit.drift_detection.categories import category_counts
from fusionkit.drift_detection.concept import ConceptDriftMonitor
from fusionkit.drift_detection.ks import KSReference
from fusionkit.drift_detection.reference import Reference


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
    from fusionkit.drift_detection.psi import binned_counts, psi, quantile_edges

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


def _without_time(rows):  # in the order of the columns' windows
    rows = sorted(rows, key=lambda r: (r["kind"], r["feature"], r.get("window", 0), r["offset"]))
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def _same(a, b):  # equal, NaN equal to NaN
    return pd.DataFrame(a).equals(pd.DataFrame(b))


def _mixed_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    x = rng.normal(size=n)
    x[n // 2 :] += 0.6  # a shift half way, so windows alarm too
    x[rng.random(n) < 0.02] = np.nan
    return pd.DataFrame({
        "x": x,
        "k": rng.integers(0, 6, n),
        "s": pd.array(rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]), dtype="str"),
        "o": rng.choice(np.array(["u", None, 3], dtype=object), n),
        "f": rng.random(n) < 0.3,
        "_offset": np.arange(100, 100 + n),
        "_event_time": np.arange(n) * 0.25,
    })  # fmt: skip


@pytest.mark.parametrize("batch", [1_000, 700, 4_000])
def test_feature_windows_of_batches_are_those_of_the_concatenated_stream(batch):
    """The window's columns are taken from the batches without concatenating them; what
    is compared must be what the concatenated stream holds, whatever the batching."""
    from fusionkit.drift_detection.feature import FeatureDriftMonitor

    rng = np.random.default_rng(batch)
    frame = _mixed_frame(rng, 12_000)
    preds = rng.integers(0, 3, len(frame))
    whole = FeatureDriftMonitor(reference=3_000, window=1_500).update(frame, preds)
    parts = FeatureDriftMonitor(reference=3_000, window=1_500)
    rows, alarms = [], []
    for s in range(0, len(frame), batch):
        res = parts.update(frame.iloc[s : s + batch], preds[s : s + batch])
        rows, alarms = rows + res.rows, alarms + res.alarms
    assert len(rows) == len(whole.rows) == 6 * 6 and any(r["alarm"] for r in rows)
    assert _same(_without_time(rows), _without_time(whole.rows))
    assert sorted((a.feature, a.offset, a.value) for a in alarms) == sorted(
        (a.feature, a.offset, a.value) for a in whole.alarms
    )


@pytest.mark.parametrize("change", ["types", "event_time"])
def test_batches_of_other_column_types_are_compared_as_their_concatenation(change):
    """Batches whose columns differ in type (or lack the event times) are concatenated as
    pandas does it: the window holds the same values as the concatenated frame."""
    from fusionkit.drift_detection.feature import FeatureDriftMonitor

    rng = np.random.default_rng(3)
    frame = _mixed_frame(rng, 6_000)
    first, second = frame.iloc[:3_000].copy(), frame.iloc[3_000:].copy()
    if change == "types":  # booleans then integers: objects (categories) once concatenated
        second["f"] = second["f"].astype("int64")
    else:
        second = second.drop(columns=["_event_time"])
    batches = [first.iloc[:1_000], first.iloc[1_000:2_500], first.iloc[2_500:], second]
    whole, mon = (FeatureDriftMonitor(reference=2_000, window=2_000) for _ in range(2))
    want = []  # the last two batches make the last window: given as one
    for part in [*batches[:2], pd.concat(batches[2:])]:
        want += whole.update(part).rows
    got = []
    for part in batches:
        got += mon.update(part).rows
    assert _same(_without_time(got), _without_time(want)) and len(got) == 2 * 5


def test_a_batch_without_a_watched_column_is_refused_after_good_ones():
    from fusionkit.drift_detection.feature import FeatureDriftMonitor

    frame = _mixed_frame(np.random.default_rng(5), 1_000)
    mon = FeatureDriftMonitor(features=["x", "k"], reference=400, window=200)
    mon.update(frame.iloc[:100])
    mon.update(frame.iloc[100:200])  # the same columns: checked once
    with pytest.raises(ValueError, match="no column"):
        mon.update(frame.iloc[200:300].drop(columns=["k"]))
    mon.features.append("missing")  # the same columns, but another name watched
    with pytest.raises(ValueError, match="missing"):
        mon.update(frame.iloc[300:400])


def test_boolean_and_float_errors_give_the_same_concept_rows():
    from fusionkit.drift_detection.monitor import DriftMonitor

    rng = np.random.default_rng(6)
    frame = _mixed_frame(rng, 20_000)
    wrong = rng.random(len(frame)) < np.r_[np.full(12_000, 0.1), np.full(8_000, 0.3)]
    as_float = wrong.astype(float)
    as_float[::97] = np.nan  # events not predicted yet: left out of the error stream
    kept = ~np.isnan(as_float)
    a, b = DriftMonitor(features=["x"]), DriftMonitor(features=["x"])
    rows_a, rows_b = [], []
    for s in range(0, len(frame), 500):
        part = frame.iloc[s : s + 500]
        rows_a += a.update(part, errors=as_float[s : s + 500]).rows
        known = kept[s : s + 500]
        rows_b += b.update(part[known], errors=wrong[s : s + 500][known]).rows
    concept = [[r for r in rows if r["kind"] == "concept"] for rows in (rows_a, rows_b)]
    assert any(r["alarm"] for r in concept[0])
    assert _same(_without_time(concept[0]), _without_time(concept[1]))


def test_the_window_test_is_the_two_proportion_z_of_the_two_windows():
    """Every ``test_every`` events, z compares the last ``test_window`` errors with the
    ``reference_window`` before them; a batch's row holds the largest (0/1 errors: exact)."""
    from fusionkit.drift_detection.ztest import increase_z

    rng = np.random.default_rng(7)
    errors = (rng.random(9_000) < 0.2).astype(float)
    mon = ConceptDriftMonitor(test_window=300, reference_window=900, test_every=40)
    for s in range(0, errors.size, 350):
        row = mon.update(errors[s : s + 350]).rows[0]
        assert not row["alarm"]
        ends = [t for t in range(1_200, s + 351, 40) if s < t <= s + 350]
        want = max((increase_z(errors[t - 1_200 : t - 300], errors[t - 300 : t]) for t in ends),
                   default=np.nan)  # fmt: skip
        assert row["z"] == want or (np.isnan(want) and np.isnan(row["z"])), s


def test_the_z_of_the_window_test_is_that_of_increase_z_from_sums():
    from fusionkit.drift_detection.ztest import _increase_z, increase_z_from_sums

    rng = np.random.default_rng(8)
    s_ref, s_cur = rng.random(50) * 900, rng.random(50) * 300
    s_cur[:5] = 0.0  # no spread: z is 0
    s_ref[:5] = 0.0
    ss_ref, ss_cur = s_ref * rng.random(50) * 2, s_cur * rng.random(50) * 2
    got = _increase_z(900, s_ref, ss_ref, 300, s_cur, ss_cur)
    want = increase_z_from_sums(900, s_ref, ss_ref, 300, s_cur, ss_cur)
    assert np.array_equal(got, want) and (got[:5] == 0).all()
