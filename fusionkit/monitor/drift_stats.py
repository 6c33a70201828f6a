"""Drift statistics and detectors: how far a window of values is from a reference window.

PSI (population stability index) measures the size of a shift; KS and chi-squared tell
whether it is more than sampling noise. fusionkit's feature monitor alarms only when both
agree (see :mod:`fusionkit.monitor.drift`), because on a small window a size measure
alone fires on noise and a test alone fires on shifts too small to matter.

All functions take array-likes and are vectorized; missing values (NaN/None) are kept as a
bin or category of their own, so a rise in missing values is drift too.
:class:`ColumnWindow` cuts a column into the reference and the windows to compare. The concept
drift detectors are River's, made by name with :func:`make_detector`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
from river import base as river_base
from river import drift as river_drift
from scipy import special, stats

from fusionkit._suggest import closest

OTHER = "__other__"


def _finite_split(values: Any) -> tuple[np.ndarray, int]:
    """The non-missing values as float64 and the count of missing ones."""
    arr = np.asarray(values, dtype="float64").ravel()
    missing = np.isnan(arr)
    n_missing = int(missing.sum())
    return (arr[~missing] if n_missing else arr), n_missing


def _missing_last(values: Any) -> np.ndarray:
    """Values as float64 with missing ones as +inf: a value above all others for KS."""
    arr = np.asarray(values, dtype="float64").ravel()
    return np.where(np.isnan(arr), np.inf, arr)


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


def _binned_counts_sorted(values: np.ndarray, edges: np.ndarray, n_missing: int) -> np.ndarray:
    """:func:`binned_counts` of sorted non-missing ``values`` (and ``n_missing`` missing)."""
    below = np.searchsorted(values, edges, side="left")  # values below each edge
    counts = np.diff(np.concatenate([[0], below, [values.size]])).astype("float64")
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
    index, ref_counts = _categories(reference)
    return _counts_on(index, ref_counts, current)


def _categories(reference: Any) -> tuple[pd.Index, np.ndarray]:
    """The reference's categories (missing values included) and their counts."""
    vc = pd.Series(np.asarray(reference, dtype=object).ravel()).value_counts(dropna=False)
    return vc.index, vc.to_numpy(dtype="float64")


def _object_index(index: pd.Index) -> pd.Index:
    """``index`` as an object Index: looking objects up in it needs no conversion."""
    return index if index.dtype == object else pd.Index(index.to_numpy(dtype=object), dtype=object)


# what pandas infers for an Index of objects of these kinds is objects, unconverted
_KEPT_AS_OBJECTS = ("mixed", "mixed-integer")


def _counts_on(
    index: pd.Index, ref_counts: np.ndarray, current: Any, lookup: pd.Index | None = None
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    # looked up as objects in an object Index (``lookup``, from _object_index(index)):
    # otherwise pandas infers a dtype for ``current`` and casts it, several times the cost
    lookup = _object_index(index) if lookup is None else lookup
    target = np.asarray(current, dtype=object).ravel()
    if index.dtype != object:  # a string Index, whose only missing value is NaN
        codes = lookup.get_indexer(pd.Index(target, dtype=object, copy=False))
        if (codes >= 0).all():  # all found: as they would be after any conversion
            return _with_other(index, ref_counts, codes)
    kind = pd.api.types.infer_dtype(target, skipna=True)
    if kind == "string":  # as a string Index would hold them: every missing value is NaN
        missing = pd.isna(target)
        if missing.any():
            target = np.where(missing, np.nan, target)
    if kind == "string" or kind in _KEPT_AS_OBJECTS:
        codes = lookup.get_indexer(pd.Index(target, dtype=object, copy=False))  # -1: unseen
    else:  # numbers, booleans, ...: pandas converts them as it infers their dtype
        codes = index.get_indexer(target)
    return _with_other(index, ref_counts, codes)


def _with_other(index: pd.Index, ref_counts: np.ndarray, codes: np.ndarray) -> tuple:
    cur = np.bincount(codes + 1, minlength=len(index) + 1).astype("float64")
    return np.append(ref_counts, 0.0), np.append(cur[1:], cur[0]), [*index, OTHER]


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
    """Two-sample Kolmogorov-Smirnov test: (statistic, p-value).

    Missing values count as one value above all others, so a change in the share of missing
    values is a shift too.

    >>> rng = np.random.default_rng(0)
    >>> stat, p = ks(rng.normal(size=2000), rng.normal(1, 1, size=2000))
    >>> p < 1e-6
    True
    """
    return KSReference(reference).test(current)


class KSReference:
    """A reference sample summarized for two-sample KS tests against it.

    The statistic is ``max |F_ref(x) - F_cur(x)|`` over the values of both samples, in
    floating point as scipy's ``ks_2samp`` computes it (``cdf_ref - cdf_cur``), so it is
    bit for bit scipy's statistic in its asymptotic mode. It is evaluated at the window's
    values only, each found once in the reference's distinct values by a binary search:
    ``F_cur - F_ref`` is largest at a window value, ``F_ref - F_cur`` just below one
    (or above all, where it is <= 0), so no merge with the reference is needed.

    >>> ref = KSReference([1.0, 2.0, 2.0, 3.0])
    >>> ref.statistic(np.array([2.0, 2.5, 4.0]))  # F_ref - F_cur just below 2.5: 3/4 - 1/3
    0.4166666666666667
    """

    def __init__(self, values: Any):
        self.sorted = np.sort(_missing_last(values))
        self.n = self.sorted.size
        first = np.flatnonzero(np.r_[self.n > 0, self.sorted[1:] != self.sorted[:-1]])  # of runs
        self.values = self.sorted[first]  # the distinct values, as np.unique gives them
        counts = np.diff(np.append(first, self.n))
        # F_ref at or below the (j-1)-th distinct value, as scipy divides the counts: for a
        # value at position j of the distinct values F_ref just below it is cdf[j], at it
        # cdf[j + 1] if it equals the j-th value and cdf[j] if not (cdf[0] = 0, cdf[-1] = 1)
        self._cdf = np.append(0, np.cumsum(counts)) / max(self.n, 1)
        self._match = np.append(self.values, np.nan)  # NaN: equal to no value
        self._steps: tuple[int, np.ndarray, np.ndarray] = (0, np.empty(0), np.empty(0))

    def statistic(self, current_sorted: np.ndarray) -> float:
        """The KS statistic of a sorted, non-empty window (floats, missing as +inf)."""
        m = current_sorted.size
        if self._steps[0] != m:  # windows have one size: F_cur's steps are kept
            k = np.arange(m)
            self._steps = (m, k / m, (k + 1) / m)
        _, f_below, f_at = self._steps
        # over a run of equal window values F_ref stays put, so F_cur - F_ref is largest at
        # the run's last value and F_ref - F_cur at its first: a window of few distinct
        # values (an hour of the day, a count) needs a binary search per run only
        change = current_sorted[1:] != current_sorted[:-1]
        values = current_sorted
        if 4 * (int(np.count_nonzero(change)) + 1) < m:
            first = np.flatnonzero(np.r_[True, change])
            last = np.r_[first[1:] - 1, m - 1]
            values, f_below, f_at = current_sorted[first], f_below[first], f_at[last]
        pos = np.searchsorted(self.values, values, side="left")
        below = self._cdf[pos]  # F_ref just below each window value
        pos += self._match[pos] == values
        at = self._cdf[pos]  # F_ref at each window value
        # F_cur just below the k-th value is k/m at the first of equal values (less at the
        # others), F_cur at it (k + 1)/m at the last of them (more at the others)
        return float(max((below - f_below).max(), (f_at - at).max()))

    def test(self, current: Any, is_sorted: bool = False) -> tuple[float, float]:
        """(statistic, p-value) of ``current`` (missing values as +inf, sorted if
        ``is_sorted``): scipy's ``ks_2samp`` for small samples; for large ones the statistic
        by :meth:`statistic` and the asymptotic Kolmogorov p-value (a little conservative),
        which is what makes a test per window cheap next to training."""
        cur = current if is_sorted else np.sort(_missing_last(current))
        n, m = self.n, cur.size
        if n == 0 or m == 0:
            return float("nan"), float("nan")
        if n * m <= 1_000_000:
            res = stats.ks_2samp(self.sorted, cur)
            return float(res.statistic), float(res.pvalue)
        d = self.statistic(cur)
        return d, float(special.kolmogorov(d * np.sqrt(n * m / (n + m))))


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
    return _chi2_counts(ref_counts, cur_counts, min_expected)


def _chi2_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, min_expected: float = 5.0):
    """Chi-squared homogeneity test of two count vectors (as ``chi2_contingency`` without
    continuity correction), rare categories pooled."""
    n_ref, n_cur = ref_counts.sum(), cur_counts.sum()
    if n_ref == 0 or n_cur == 0:
        return float("nan"), float("nan")
    total = ref_counts + cur_counts
    rare = total * min(n_ref, n_cur) / (n_ref + n_cur) < min_expected
    if rare.any():
        ref_counts = np.append(ref_counts[~rare], ref_counts[rare].sum())
        cur_counts = np.append(cur_counts[~rare], cur_counts[rare].sum())
    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    stat = float(((table - expected) ** 2 / expected).sum())
    return stat, float(special.chdtrc(table.shape[1] - 1, stat))


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
    return float(special.chdtri(n_bins - 1, alpha) * scale)


def increase_z(reference: np.ndarray, current: np.ndarray) -> float:
    """One-sided two-sample z statistic for "the mean of ``current`` is higher".

    Uses the pooled variance, so on 0/1 errors it is the two-proportion z-test.

    >>> round(increase_z(np.r_[np.zeros(900), np.ones(100)], np.r_[np.zeros(70), np.ones(30)]), 2)
    5.91
    """
    return float(
        increase_z_from_sums(
            reference.size,
            reference.sum(),
            np.square(reference).sum(),
            current.size,
            current.sum(),
            np.square(current).sum(),
        )
    )


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
    z = np.zeros(np.broadcast(diff, se).shape)
    return np.divide(diff, se, out=z, where=se > 0)  # 0 where there is no spread


def reference_size(reference: str | int | pd.DataFrame) -> int:
    """Events in a reference given as ``"first N events"``, an int, or a DataFrame."""
    if isinstance(reference, pd.DataFrame):
        return len(reference)
    if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        if reference < 2:
            raise ValueError(f"reference must hold at least 2 events, got {reference}")
        return int(reference)
    m = re.fullmatch(r"\s*first\s+([\d_,]+)\s+events?\s*", str(reference), flags=re.IGNORECASE)
    if not m:
        raise ValueError(
            f"reference must be 'first N events', an int or a DataFrame, got {reference!r}"
        )
    return reference_size(int(m.group(1).replace("_", "").replace(",", "")))


def is_categorical(values: pd.Series, labels: bool = False) -> bool:
    """Non-numeric and boolean columns are categories; integer predictions are class labels."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        return True
    return labels and pd.api.types.is_integer_dtype(dtype)


def column_values(values: pd.Series, categorical: bool) -> np.ndarray:
    """A column as float64 with NaN for missing, or as objects for a categorical one."""
    if categorical:
        return values.to_numpy(dtype=object)
    return values.to_numpy(dtype="float64", na_value=np.nan)


class Reference:
    """A reference window, summarized once so that comparing a window with it is cheap.

    Examples
    --------
    >>> ref = Reference(np.random.default_rng(0).normal(size=1000), categorical=False)
    >>> c = ref.compare(np.full(100, 3.0))
    >>> c["test"], c["psi"] > 1, c["p_value"] < 1e-10
    ('ks', True, True)
    """

    def __init__(self, values: np.ndarray, categorical: bool, bins: int = 10):
        self.values, self.categorical, self.bins = values, categorical, bins
        if categorical:
            self.index, self.counts = _categories(values)
            self.lookup = _object_index(self.index)
        else:
            self.ks = KSReference(values)
            # the sorted values serve the bins too (missing values, last there, left out)
            n_missing = int(np.isnan(np.asarray(values, dtype="float64")).sum())
            present = self.ks.sorted[: self.ks.n - n_missing]
            self.edges = quantile_edges(present, bins)
            self.bin_counts = _binned_counts_sorted(present, self.edges, n_missing)

    def __len__(self) -> int:
        return len(self.values)

    def compare(self, current: np.ndarray, floor: float = 1e-4) -> dict[str, Any]:
        """PSI and the test (KS or chi-squared) of ``current`` against this reference."""
        if self.categorical:
            ref_counts, cur_counts, _ = _counts_on(self.index, self.counts, current, self.lookup)
            stat, p = _chi2_counts(ref_counts, cur_counts)
            test = "chi2"
        else:
            # one sort of the window serves the KS test and the PSI bins; it puts the
            # missing values (NaN) last, where KS wants them as +inf
            cur = np.sort(np.asarray(current, dtype="float64").ravel())
            present = int(np.searchsorted(cur, np.nan))  # the first NaN, sorted last
            n_missing = cur.size - present
            if n_missing:
                cur[present:] = np.inf
            ref_counts = self.bin_counts
            cur_counts = _binned_counts_sorted(cur[: cur.size - n_missing], self.edges, n_missing)
            stat, p = self.ks.test(cur, is_sorted=True)
            test = "ks"
        value = psi_from_counts(ref_counts, cur_counts, floor)
        n_bins = (
            int(np.count_nonzero(ref_counts + cur_counts))
            if self.categorical
            else self.edges.size + 1
        )
        return {"psi": value, "statistic": stat, "p_value": p, "test": test, "n_bins": n_bins}


class ColumnWindow:
    """The reference and the filling window of one watched column.

    The first ``n_reference`` values become the reference (unless one is set), then values
    fill tumbling windows of ``window``; with ``sliding`` the reference moves to the last
    ``n_reference`` values before each window.

    Examples
    --------
    >>> col = ColumnWindow("x", "feature", categorical=False, n_reference=4, bins=2)
    >>> [(w.tolist(), last) for w, last, _ in col.push(np.arange(9.0), window=2, sliding=False)]
    [([4.0, 5.0], 5), ([6.0, 7.0], 7)]
    >>> col.due(window=2)
    1
    """

    def __init__(self, name: str, kind: str, categorical: bool, n_reference: int, bins: int):
        self.name, self.kind, self.categorical = name, kind, categorical
        self.n_reference, self.bins = n_reference, bins
        self.reference: Reference | None = None
        self.alarmed = False
        self.windows = 0
        self._parts: list[np.ndarray] = []
        self._filled = 0

    def set_reference(self, values: np.ndarray) -> None:
        self.reference = Reference(values, self.categorical, self.bins)

    def due(self, window: int) -> int:
        """Values still needed to complete the reference or the current window."""
        return (self.n_reference if self.reference is None else window) - self._filled

    def push(self, values: np.ndarray, window: int, sliding: bool) -> list[tuple]:
        """Add values; each completed window as (window, index of its last value, the
        :class:`Reference` it is to be compared with)."""
        done, i, n = [], 0, len(values)
        while i < n:
            target = self.n_reference if self.reference is None else window
            take = min(target - self._filled, n - i)
            self._parts.append(values[i : i + take])
            self._filled += take
            i += take
            if self._filled < target:
                break
            full = np.concatenate(self._parts)
            self._parts, self._filled = [], 0
            if self.reference is None:
                self.set_reference(full)
                continue
            done.append((full, i - 1, self.reference))
            if sliding:
                kept = np.concatenate([self.reference.values, full])[-self.n_reference :]
                self.set_reference(kept)
        return done


DETECTORS: dict[str, type] = {
    "adwin": river_drift.ADWIN,
    "ddm": river_drift.binary.DDM,
    "eddm": river_drift.binary.EDDM,
    "hddm_a": river_drift.binary.HDDMA,
    "hddm_w": river_drift.binary.HDDMW,
    "fhddm": river_drift.binary.FHDDM,
    "pagehinkley": river_drift.PageHinkley,
    "kswin": river_drift.KSWIN,
}
# fusionkit's defaults where River's do not fit an error stream (see ConceptDriftMonitor)
DETECTOR_DEFAULTS: dict[str, dict[str, Any]] = {"pagehinkley": {"mode": "up"}}


def _key(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_BY_KEY = {_key(k): k for k in DETECTORS} | {"ph": "pagehinkley"}


def make_detector(detector: str | Any = "adwin", **params: Any) -> Any:
    """A fresh River drift detector by name (case, ``_`` and ``-`` ignored), or a clone.

    >>> type(make_detector("HDDM_A", drift_confidence=1e-4)).__name__
    'HDDMA'
    """
    if isinstance(detector, str):
        name = _BY_KEY.get(_key(detector))
        if name is None:
            close = closest(_key(detector), _BY_KEY)
            hint = f" Did you mean {_BY_KEY[close]!r}?" if close is not None else ""
            raise ValueError(
                f"unknown drift detector {detector!r}: choose one of {', '.join(DETECTORS)}.{hint}"
            )
        try:
            return DETECTORS[name](**{**DETECTOR_DEFAULTS.get(name, {}), **params})
        except TypeError as e:
            raise ValueError(f"bad parameter for drift detector {name!r}: {e}") from None
    if isinstance(detector, (river_base.DriftDetector, river_base.BinaryDriftDetector)):
        if params:
            raise ValueError("detector parameters go with a detector name, not an instance")
        return detector.clone()
    raise TypeError(f"detector must be a name or a River drift detector, got {detector!r}")
