"""The one-sided two-sample z-test "the mean went up": the concept monitor's windowed test
of the error rate (on 0/1 errors, the two-proportion test)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["increase_z", "increase_z_from_sums"]


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



def _increase_z(n_ref: int, s_ref: np.ndarray, ss_ref: np.ndarray, n_cur: int,
                s_cur: np.ndarray, ss_cur: np.ndarray) -> np.ndarray:  # fmt: skip
    """:func:`increase_z_from_sums` for window sizes given
    as ints: the same operations, in the same order (so the same values), fewer calls."""
    n = float(n_ref + n_cur)
    mean = (s_ref + s_cur) / n
    var = (ss_ref + ss_cur) / n
    var -= mean * mean
    np.maximum(var, 0.0, out=var)
    diff = s_cur / float(n_cur)
    diff -= s_ref / float(n_ref)
    var *= 1.0 / n_ref + 1.0 / n_cur
    se = np.sqrt(var, out=var)
    z = np.zeros(diff.shape)
    return np.divide(diff, se, out=z, where=se > 0)  # 0 where there is no spread
