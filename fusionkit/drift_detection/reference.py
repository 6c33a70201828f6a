"""The windows a column is cut into: a reference, summarized once, and tumbling windows.

:class:`WindowSettings` holds what the feature and prediction monitors share (the
reference, the window, the alarm thresholds, the sample), each rule and its message once;
:class:`ColumnWindow` keeps a watched column's reference and fills its windows;
:class:`Reference` compares a window with the reference by PSI (:mod:`fusionkit.drift_detection.psi`)
and a test: KS for numbers (:mod:`fusionkit.drift_detection.ks`), chi-squared for categories
(:mod:`fusionkit.drift_detection.chi2`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fusionkit.drift_detection.categories import _categories, _counts_on, _object_index
from fusionkit.drift_detection.chi2 import chi2_counts
from fusionkit.drift_detection.ks import KSReference
from fusionkit.drift_detection.psi import (
    _binned_counts_sorted,
    psi_from_counts,
    psi_threshold,
    quantile_edges,
)
from fusionkit.errors import SettingsError

__all__ = ["ColumnWindow", "Reference", "WindowSettings", "column_values", "is_categorical",
           "reference_size", "settings_in_state"]


def reference_size(reference: str | int | pd.DataFrame) -> int:
    """Events in a reference given as ``"first N events"``, an int, or a DataFrame."""
    if isinstance(reference, pd.DataFrame):
        return len(reference)
    if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
        if reference < 2:
            raise SettingsError(f"reference must hold at least 2 events, got {reference}")
        return int(reference)
    m = re.fullmatch(r"\s*first\s+([\d_,]+)\s+events?\s*", str(reference), flags=re.IGNORECASE)
    if not m:
        raise SettingsError(
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
            stat, p = chi2_counts(ref_counts, cur_counts)
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


def _whole(value: Any) -> bool:
    """An int (NumPy's too), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class WindowSettings:
    """The settings the feature and prediction monitors share, each checked here once.

    ``reference`` is the first N events (``"first 10000 events"`` or an int) or a
    DataFrame; every ``window`` events are tested against it (with ``sliding_reference``
    against the N events before the window). A window alarms by :meth:`test`'s rule, with
    ``psi_alarm`` and ``ks_alpha``. ``sample`` is the rows of each side the prediction
    monitor scores; ``bins`` and ``floor`` are PSI's (quantile bins, smallest proportion).
    :class:`~fusionkit.drift_detection.monitor.DriftMonitor` makes one and hands it to both
    monitors; each makes its own when made alone. A value that cannot work is a
    :class:`~fusionkit.errors.SettingsError` (a ``ValueError``) naming the rule.

    Examples
    --------
    >>> WindowSettings(reference="first 2000 events", window=500).n_reference
    2000
    >>> WindowSettings(window=1)
    Traceback (most recent call last):
    ...
    fusionkit.errors.SettingsError: window must hold at least 2 events, got 1
    """

    reference: str | int | pd.DataFrame = "first 10000 events"
    window: int = 5000
    psi_alarm: float = 0.2
    ks_alpha: float = 0.01
    sliding_reference: bool = False
    sample: int = 500
    bins: int = 10
    floor: float = 1e-4
    n_reference: int = field(init=False, repr=False, compare=False)  # events in the reference

    def __post_init__(self) -> None:
        window, sample = self.window, self.sample
        if not _whole(window):
            raise SettingsError(f"window must be a number of events (int), not {window!r}")
        if window < 2:
            raise SettingsError(f"window must hold at least 2 events, got {window}")
        if not (isinstance(self.psi_alarm, int | float) and 0 < self.psi_alarm < math.inf):
            raise SettingsError(f"psi_alarm must be a positive number, not {self.psi_alarm!r}")
        if not (isinstance(self.ks_alpha, int | float) and 0 < self.ks_alpha < 1):
            raise SettingsError(f"ks_alpha must be a probability in (0, 1), not {self.ks_alpha!r}")
        n_reference = reference_size(self.reference)
        if not _whole(sample) or sample < 2:
            raise SettingsError(f"the prediction sample must be at least 2 rows, got {sample!r}")
        object.__setattr__(self, "window", int(window))
        object.__setattr__(self, "sample", int(sample))
        object.__setattr__(self, "n_reference", n_reference)

    def test(self, reference: Reference, current: np.ndarray) -> dict[str, Any]:
        """:meth:`Reference.compare` of a window with the reference, with the PSI
        ``threshold`` and whether the window alarms (``alarm``).

        The threshold is ``psi_alarm``, or the PSI that noise alone exceeds with
        probability ``ks_alpha`` at these window sizes if that is higher; a window alarms
        when its PSI reaches the threshold and the test's p-value is below ``ks_alpha``.
        """
        c = reference.compare(current, self.floor)
        threshold = max(self.psi_alarm, psi_threshold(len(reference), len(current),
                                                      c["n_bins"], self.ks_alpha))  # fmt: skip
        return {**c, "threshold": threshold,
                "alarm": bool(c["psi"] >= threshold and c["p_value"] < self.ks_alpha)}


def settings_in_state(state: dict[str, Any]) -> dict[str, Any]:
    """A drift monitor's pickled state with its settings as one :class:`WindowSettings`.

    A state saved before the record existed holds them as attributes of their own
    (:class:`~fusionkit.drift_detection.monitor.DriftMonitor` its sample as
    ``prediction_sample``, or none from before prediction drift), so checkpoints taken
    then resume.
    """
    if "settings" not in state:
        names = ("reference", "window", "psi_alarm", "ks_alpha", "sliding_reference", "sample",
                 "bins", "floor")  # fmt: skip
        given = {name: state.pop(name) for name in names if name in state}
        if "prediction_sample" in state:
            given["sample"] = state.pop("prediction_sample")
        state.pop("n_reference", None)
        state["settings"] = WindowSettings(**given)
    return state
