"""Prediction drift with the model held fixed: do the inputs move the model's answers?

A train stage's model learns from every batch, so its answers change on a stream that does
not: comparing a window's predictions with the reference's predictions, made by the model
of back then, measures the model's learning as much as the inputs. On stationary synthetic
clicks, River's ``StandardScaler | LogisticRegression`` gave a prediction PSI of up to 0.11
between the first 10,000 events and later windows when learned event by event (a constant
learning rate never settles), and 1.2-4.0 when learned once per 500-event batch: a
"prediction drift" alarm in every one of 20 streams where nothing drifted.

So both sides of a test are scored by one model: this monitor keeps a uniform sample of the
reference's inputs and of each window's inputs, and when a window completes it scores both
samples with the model as it is then and compares the two sets of answers as the feature
monitor compares a column (PSI on the reference's quantiles and KS, chi-squared for class
labels; the same alarm rule and thresholds). Learning, a reset or a rollback changes both
sides alike and cannot raise an alarm; inputs that move the model's answers do. The question
it answers is "would the model answer this window differently from the reference?", which is
what a prediction drift alarm is for: a warning, before any label says so, that the model
now works on inputs unlike those it was checked on.

Scoring is the cost: ``2 * sample`` predictions per window (the default 500 + 500 rows per
5,000-event window is 0.2 predictions per event; a River model predicts a row in about a
third of the time it takes to predict and learn it). With samples of 500 the PSI that noise
alone exceeds with probability 1% is 0.09, under the default alarm threshold of 0.2.

Measured (benchmarks/drift_detection.py, part 5: 20 seeds of 60,000 stationary events,
``fk.watch_drift``'s defaults): no prediction alarm with any of three learning models (20
before, with the mini-batch one), the largest prediction PSI 0.11; false alarms of every
kind 0.08-0.25 per 100k events, all concept alarms. A shift of an input the model leans on
(dwell time, +1 sd) is flagged in its first window in 20 of 20 streams, as before; a price
shift of +1 sd moves this model's answers by a PSI of about 0.15-0.23, so it is flagged in
the first window in 14 of 20 and within three windows in all (comparing with the model of
back then, which added its learning to the shift, flagged it in the first window in all).
The cost is about 5% more of the learning time (River's models, per-event).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._clock import now
from fusionkit.batch import EVENT_TIME, OFFSET
from fusionkit.drift_detection import reference as ds
from fusionkit.drift_detection.records import Alarm, DriftResult

__all__ = ["PredictionDriftMonitor", "Scorer"]

NAN = float("nan")

#: scores a DataFrame of inputs with the model as it is now: one value per row (for a binary
#: classifier the positive class's probability, else the prediction)
Scorer = Callable[[pd.DataFrame], Any]


class PredictionDriftMonitor:
    """Prediction drift: a sample of the reference's inputs and of each window's inputs,
    scored by the same model when the window completes.

    ``reference``, ``window``, ``psi_alarm``, ``ks_alpha`` and ``sliding_reference`` mean what
    they mean for :class:`~fusionkit.drift_detection.feature.FeatureDriftMonitor`, so the windows are
    the feature monitor's. A reference DataFrame is scored itself when the model can score
    it (it holds the model's inputs); otherwise the first ``len(reference)`` events are the
    reference. ``sample`` rows of each are kept (uniformly, by a generator seeded with
    ``seed``, part of the monitor's state so a replay keeps the same rows).
    As for the feature monitor, the settings are one
    :class:`~fusionkit.drift_detection.reference.WindowSettings` (``self.settings``), built
    from the parameters or taken as ``settings``.

    Examples
    --------
    A model that learns from the stream, here a running mean subtracted from ``x``: its
    answers on a stationary stream move while it learns, yet there is no alarm; a shift of
    the inputs moves them and is flagged.

    >>> class Centred:
    ...     total, n = 0.0, 0
    ...     def learn(self, x): self.total, self.n = self.total + x.sum(), self.n + len(x)
    ...     def score(self, X): return X["x"].to_numpy() - self.total / max(self.n, 1)
    >>> model, rng = Centred(), np.random.default_rng(0)
    >>> mon = PredictionDriftMonitor(reference=2000, window=1000)
    >>> def feed(x):
    ...     batch = pd.DataFrame({"x": x})
    ...     rows = mon.update(batch, model.score).rows
    ...     model.learn(batch["x"])
    ...     return [r["alarm"] for r in rows]
    >>> feed(rng.normal(5, 1, 4000))
    [False, False]
    >>> feed(rng.normal(6, 1, 1000))
    [True]
    """

    def __init__(
        self,
        reference: str | int | pd.DataFrame = "first 10000 events",
        window: int = 5000,
        psi_alarm: float = 0.2,
        ks_alpha: float = 0.01,
        sliding_reference: bool = False,
        sample: int = 500,
        bins: int = 10,
        floor: float = 1e-4,
        stage: str = "",
        seed: int = 0,
        columns: list[str] | None = None,
        *,
        settings: ds.WindowSettings | None = None,
    ):
        self.settings = settings if settings is not None else ds.WindowSettings(
            reference, window, psi_alarm, ks_alpha, sliding_reference, sample, bins, floor)
        self.stage = stage
        self.columns = columns
        self.seen = 0  # events seen
        self.windows = 0  # windows tested
        self.alarmed = False
        self._rng = np.random.default_rng(seed)
        self._started = False
        self._ref: pd.DataFrame | None = None  # the reference's kept inputs
        self._ref_pos = np.empty(0, dtype="int64")  # their positions in the stream
        self._in_reference = True  # the segment being filled is the reference
        self._end = 0  # where the segment being filled ends (events since the start)
        self._picks = np.empty(0, dtype="int64")  # positions of the segment to keep
        self._parts: list[dict[str, Any]] = []  # kept rows of the segment so far, by column
        self._part_pos: list[np.ndarray] = []

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(ds.settings_in_state(state))

    # -- filling -----------------------------------------------------------------------------
    def update(self, batch: pd.DataFrame, score: Scorer) -> DriftResult:
        """Add a batch; test each window it completes, scoring both samples with ``score``."""
        result = DriftResult()
        if not self._started:
            self._start(score)
        n, first, i = len(batch), self.seen, 0
        while i < n:
            stop = min(n, self._end - first)  # rows of this batch in the segment
            pos = self._picks[np.searchsorted(self._picks, first + i):
                              np.searchsorted(self._picks, first + stop)]  # fmt: skip
            if pos.size:
                self._parts.append(_take(batch, self.columns, pos - first))
                self._part_pos.append(pos)
            i = stop
            if first + i == self._end:
                self._complete(batch, i - 1, score, result)
        self.seen += n
        return result

    def _start(self, score: Scorer) -> None:
        """The first segment: the reference, unless a reference DataFrame can be scored."""
        self._started = True
        ref = self.settings.reference
        if isinstance(ref, pd.DataFrame) and len(ref):
            kept = self._choose(len(ref))
            frame = ref.iloc[kept]
            try:
                values = np.asarray(score(frame))
                usable = values.shape == (len(frame),)
            except Exception:  # not the model's inputs: the stream's first events are
                usable = False
            if usable:
                self._ref, self._ref_pos = frame, kept - len(ref)  # before the stream
                self._in_reference = False
        self._next_segment(0)

    def _choose(self, length: int) -> np.ndarray:
        """Sorted positions of a uniform sample of ``sample`` of ``length`` events."""
        k = min(self.settings.sample, length)
        return np.sort(self._rng.choice(length, size=k, replace=False)).astype("int64")

    def _next_segment(self, start: int) -> None:
        s = self.settings
        length = s.n_reference if self._in_reference else s.window
        self._end = start + length
        self._picks = start + self._choose(length)
        self._parts, self._part_pos = [], []

    def _kept(self) -> tuple[pd.DataFrame, np.ndarray]:
        """The rows kept of the segment, as one DataFrame, and their positions."""
        parts, names = self._parts, list(self._parts[0])
        if any(list(p) != names for p in parts):  # the stream's columns changed
            frame = pd.concat([pd.DataFrame(p) for p in parts], ignore_index=True)
        else:
            frame = pd.DataFrame({c: _concat([p[c] for p in parts]) for c in names})
        return frame, np.concatenate(self._part_pos)

    def _complete(self, batch: pd.DataFrame, last: int, score: Scorer,
                  result: DriftResult) -> None:
        """The segment ends at row ``last`` of ``batch``: keep the reference, or test."""
        end = self._end
        rows, pos = self._kept() if self._parts else (batch.iloc[0:0], np.empty(0, "int64"))
        rows.index = pos  # the stream's positions: kept rows of two segments do not clash
        if self._in_reference:
            self._ref, self._ref_pos, self._in_reference = rows, pos, False
        else:
            self._test(rows, batch, last, score, result)
            if self.settings.sliding_reference:  # the kept rows of the last n_reference events
                frame = pd.concat([self._ref, rows]) if self._ref is not None else rows
                positions = np.concatenate([self._ref_pos, pos])
                keep = np.flatnonzero(positions >= end - self.settings.n_reference)
                if keep.size > self.settings.sample:
                    keep = keep[self._choose(keep.size)]
                self._ref, self._ref_pos = frame.iloc[keep], positions[keep]
        self._next_segment(end)

    # -- testing -----------------------------------------------------------------------------
    def _test(self, current: pd.DataFrame, batch: pd.DataFrame, last: int, score: Scorer,
              result: DriftResult) -> None:  # fmt: skip
        if self._ref is None or len(self._ref) == 0 or len(current) == 0:
            return
        ref_values = _answers(score(self._ref), len(self._ref))
        cur_values = _answers(score(current), len(current))
        categorical = ds.is_categorical(ref_values, labels=True) or ds.is_categorical(
            cur_values, labels=True
        )
        reference = ds.Reference(ds.column_values(ref_values, categorical), categorical,
                                 self.settings.bins)  # fmt: skip
        c = self.settings.test(reference, ds.column_values(cur_values, categorical))
        value, threshold, alarm, p_value = c["psi"], c["threshold"], c["alarm"], c["p_value"]
        self.windows += 1
        offset = int(batch[OFFSET].iloc[last]) if OFFSET in batch.columns else self._end - 1
        etime = float(batch[EVENT_TIME].iloc[last]) if EVENT_TIME in batch.columns else NAN
        t = now()
        result.rows.append({
            "time": t, "offset": offset, "event_time": etime, "window": self.windows,
            "kind": "prediction", "feature": "prediction", "test": c["test"], "psi": value,
            "psi_threshold": threshold, "statistic": c["statistic"], "p_value": p_value,
            "alarm": alarm,
        })  # fmt: skip
        if alarm and not self.alarmed:
            result.alarms.append(Alarm(t, self.stage, "prediction", "prediction", "psi", value,
                                       threshold, offset, etime, p_value))  # fmt: skip
        self.alarmed = alarm


def _answers(values: Any, n: int) -> pd.Series:
    """A scorer's answers as a Series (numbers stay numbers, anything else is labels)."""
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise ValueError(f"the model gave {arr.size} answers for {n} rows")
    return pd.Series(arr if arr.dtype.kind in "biufO" else arr.astype(object), copy=False)


def _take(batch: pd.DataFrame, columns: list[str] | None, rows: np.ndarray) -> dict[str, Any]:
    """The ``rows`` of ``batch``'s ``columns`` (all when ``None``), one array per column:
    taking rows column by column from the arrays costs a tenth of ``batch.iloc[rows]``."""
    names = list(batch.columns) if columns is None else columns
    get = getattr(batch, "_get_column_array", None)
    out = {}
    for name in names:
        loc = batch.columns.get_loc(name)
        out[name] = get(loc)[rows] if get is not None and isinstance(loc, int) \
            else batch[name].to_numpy()[rows]  # fmt: skip
    return out


def _concat(arrays: list[Any]) -> Any:
    """Arrays of one column from several batches as one (NumPy or a pandas extension array)."""
    first = arrays[0]
    if len(arrays) == 1:
        return first
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np.concatenate(arrays)
    if all(type(a) is type(first) and a.dtype == first.dtype for a in arrays):
        return type(first)._concat_same_type(arrays)
    return pd.concat([pd.Series(a) for a in arrays], ignore_index=True)
