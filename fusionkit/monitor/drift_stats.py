"""Drift statistics: how far a current window of values is from a reference window.

PSI (population stability index) measures the size of a shift; KS and chi-squared tell
whether it is more than sampling noise. fusionkit's feature monitor alarms only when both
agree (see :mod:`fusionkit.monitor.drift`), because on a small window a size measure
alone fires on noise and a test alone fires on shifts too small to matter.

All functions take array-likes and are vectorized; missing values (NaN/None) are kept as a
bin or category of their own, so a rise in missing values is drift too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

OTHER = "__other__"


def _finite_split(values: Any) -> tuple[np.ndarray, int]:
    """The non-missing values as float64 and the count of missing ones."""
    arr = np.asarray(values, dtype="float64").ravel()
    missing = np.isnan(arr)
    n_missing = int(missing.sum())
    return (arr[~missing] if n_missing else arr), n_missing


def psi_from_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, floor: float) -> float:
    """PSI = sum((c - r) * ln(c / r)) over bins, proportions floored at ``floor``."""
    n_ref, n_cur = ref_counts.sum(), cur_counts.sum()
    if n_ref == 0 or n_cur == 0:
        return float("nan")
    r = np.maximum(ref_counts / n_ref, floor)
    c = np.maximum(cur_counts / n_cur, floor)
    return float(np.sum((c - r) * np.log(c / r)))


def quantile_edges(reference: Any, bins: int = 10) -> np.ndarray:
    """Interior bin edges at the reference's quantiles (duplicates from ties removed).

    Equal-frequency bins keep every bin populated on the reference, which is what makes
    PSI's noise level on a stationary stream depend only on the number of bins and the
    window sizes (see :func:`psi_threshold`).
    """
    ref, _ = _finite_split(reference)
    if ref.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def binned_counts(values: Any, edges: np.ndarray) -> np.ndarray:
    """Counts per bin of ``edges`` (``len(edges) + 1`` bins) plus a last bin of missing."""
    arr, n_missing = _finite_split(values)
    idx = np.searchsorted(edges, arr, side="right")
    counts = np.bincount(idx, minlength=edges.size + 1).astype("float64")
    return np.append(counts, float(n_missing))


def psi(
    reference: Any,
    current: Any,
    bins: int = 10,
    floor: float = 1e-4,
    edges: np.ndarray | None = None,
) -> float:
    """Population stability index of numeric ``current`` against ``reference``.

    Bins are the reference's quantiles (``bins`` equal-frequency bins; pass ``edges`` from
    :func:`quantile_edges` to reuse them); proportions below ``floor`` are raised to it so
    a bin empty on one side gives a large but finite term. Rule of thumb: < 0.1 stable,
    0.1-0.2 moderate, > 0.2 a real shift (about a 0.5 sigma mean shift).

    >>> rng = np.random.default_rng(0)
    >>> ref = rng.normal(size=10_000)
    >>> round(psi(ref, rng.normal(size=5_000)), 3) < 0.01
    True
    >>> psi(ref, rng.normal(0.5, 1, size=5_000)) > 0.2
    True
    """
    if edges is None:
        edges = quantile_edges(reference, bins)
    return psi_from_counts(binned_counts(reference, edges), binned_counts(current, edges), floor)


def category_counts(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Counts of ``reference`` and ``current`` over the reference's categories + ``OTHER``.

    Categories seen only in ``current`` count into the ``OTHER`` bucket (reference count
    0), so a new category is drift rather than an error. Missing values are a category.
    """
    ref_vc = pd.Series(np.asarray(reference, dtype=object).ravel()).value_counts(dropna=False)
    cur_vc = pd.Series(np.asarray(current, dtype=object).ravel()).value_counts(dropna=False)
    cats = list(ref_vc.index)
    cur_on_ref = cur_vc.reindex(ref_vc.index, fill_value=0).to_numpy(dtype="float64")
    other = float(cur_vc.sum()) - float(cur_on_ref.sum())
    ref_counts = np.append(ref_vc.to_numpy(dtype="float64"), 0.0)
    cur_counts = np.append(cur_on_ref, other)
    return ref_counts, cur_counts, [*cats, OTHER]


def psi_categorical(reference: Any, current: Any, floor: float = 1e-4) -> float:
    """PSI over categories (unseen categories of ``current`` go to an "other" bucket).

    >>> ref = ["a"] * 500 + ["b"] * 500
    >>> psi_categorical(ref, ["a"] * 500 + ["b"] * 500)
    0.0
    >>> round(psi_categorical(ref, ["a"] * 800 + ["b"] * 200), 3)
    0.416
    """
    ref_counts, cur_counts, _ = category_counts(reference, current)
    return psi_from_counts(ref_counts, cur_counts, floor)


def ks(reference: Any, current: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test: (statistic, p-value); missing values dropped.

    >>> rng = np.random.default_rng(0)
    >>> stat, p = ks(rng.normal(size=2000), rng.normal(1, 1, size=2000))
    >>> p < 1e-6
    True
    """
    ref, _ = _finite_split(reference)
    cur, _ = _finite_split(current)
    if ref.size == 0 or cur.size == 0:
        return float("nan"), float("nan")
    res = stats.ks_2samp(ref, cur)
    return float(res.statistic), float(res.pvalue)


def chi2(reference: Any, current: Any, min_expected: float = 5.0) -> tuple[float, float]:
    """Chi-squared test of homogeneity of two categorical samples: (statistic, p-value).

    Categories whose expected count in the smaller sample is under ``min_expected`` are
    pooled into one, so rare categories do not make the test fire on noise.

    >>> ref = ["a"] * 500 + ["b"] * 500
    >>> stat, p = chi2(ref, ["a"] * 700 + ["b"] * 300)
    >>> p < 1e-6
    True
    """
    ref_counts, cur_counts, _ = category_counts(reference, current)
    n_ref, n_cur = ref_counts.sum(), cur_counts.sum()
    if n_ref == 0 or n_cur == 0:
        return float("nan"), float("nan")
    total = ref_counts + cur_counts
    expected_small = total * min(n_ref, n_cur) / (n_ref + n_cur)
    rare = expected_small < min_expected
    if rare.any():
        ref_counts = np.append(ref_counts[~rare], ref_counts[rare].sum())
        cur_counts = np.append(cur_counts[~rare], cur_counts[rare].sum())
    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    res = stats.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue)


def psi_threshold(n_reference: int, n_current: int, n_bins: int, alpha: float = 0.01) -> float:
    """The PSI that sampling noise alone exceeds with probability ``alpha``.

    With both windows from one distribution, PSI is close to
    ``(1/n_reference + 1/n_current) * chi2(n_bins - 1)``; its ``1 - alpha`` quantile is the
    smallest threshold that is calibrated to the window sizes. On a 200-event window with
    10 bins it is about 0.11, on 5000 events about 0.007.

    >>> round(psi_threshold(10_000, 5_000, 10), 4)
    0.0065
    """
    if n_reference <= 0 or n_current <= 0 or n_bins < 2:
        return float("inf")
    scale = 1.0 / n_reference + 1.0 / n_current
    return float(stats.chi2.ppf(1.0 - alpha, n_bins - 1) * scale)


def increase_z(reference: np.ndarray, current: np.ndarray) -> float:
    """One-sided two-sample z statistic for "the mean of ``current`` is higher".

    Uses the pooled variance, so on 0/1 errors it is the two-proportion z-test.

    >>> round(increase_z(np.r_[np.zeros(900), np.ones(100)], np.r_[np.zeros(70), np.ones(30)]), 2)
    5.91
    """
    return float(increase_z_from_sums(reference.size, reference.sum(), np.square(reference).sum(),
                                      current.size, current.sum(), np.square(current).sum()))


def increase_z_from_sums(
    n_ref: Any, s_ref: Any, ss_ref: Any, n_cur: Any, s_cur: Any, ss_cur: Any
) -> np.ndarray:
    """:func:`increase_z` from counts, sums and sums of squares (vectorized over tests)."""
    n_ref, n_cur = np.asarray(n_ref, "float64"), np.asarray(n_cur, "float64")
    n = n_ref + n_cur
    mean = (np.asarray(s_ref) + s_cur) / n
    var = np.maximum((np.asarray(ss_ref) + ss_cur) / n - mean * mean, 0.0)
    diff = np.asarray(s_cur) / n_cur - np.asarray(s_ref) / n_ref
    se = np.sqrt(var * (1.0 / n_ref + 1.0 / n_cur))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(se > 0, diff / np.where(se > 0, se, 1.0), 0.0)
