"""Categorical columns: counts over the reference's categories, and PSI over them.

A category seen only in the window counts into an ``OTHER`` bucket (reference count 0), so a
new category is drift rather than an error; missing values are a category of their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fusionkit.drift_detection.psi import psi_from_counts

__all__ = ["OTHER", "category_counts", "psi_categorical"]

OTHER = "__other__"


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
