"""The chi-squared test of homogeneity of two categorical samples (rare categories pooled)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from fusionkit.drift_detection.categories import category_counts

__all__ = ["chi2", "chi2_counts"]


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
    return chi2_counts(ref_counts, cur_counts, min_expected)


def chi2_counts(ref_counts: np.ndarray, cur_counts: np.ndarray, min_expected: float = 5.0):
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
