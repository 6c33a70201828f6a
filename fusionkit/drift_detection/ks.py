"""The two-sample Kolmogorov-Smirnov test of a numeric window against a reference.

Missing values count as one value above all others, so a change in the share of missing
values is a shift too. :class:`KSReference` summarizes the reference once, so that a test
per window is cheap next to training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special, stats

__all__ = ["KSReference", "ks"]


def _missing_last(values: Any) -> np.ndarray:
    """Values as float64 with missing ones as +inf: a value above all others for KS."""
    arr = np.asarray(values, dtype="float64").ravel()
    return np.where(np.isnan(arr), np.inf, arr)


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
