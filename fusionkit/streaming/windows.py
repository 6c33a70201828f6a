"""Event-time windows with a watermark and a late-data side output.

Window ``i`` covers ``[i * slide, i * slide + size)`` (starts aligned to multiples of
``slide`` since the epoch). The watermark is the largest event time seen so far minus
``allowed_lateness``; a window fires (is emitted, then forgotten) once the watermark
reaches its end. An event whose windows have all fired when it arrives is late: it is not
aggregated, it is counted in ``late_count`` and routed to the ``late`` side output. Each
event sees the watermark left by the events before it, so where a stream is cut into
batches does not change the result.

Open windows hold partial aggregates, not events (:mod:`fusionkit.streaming.partials`).
A batch is reduced to one row per (first window, last window, key), spread over its
windows and merged into the open windows it touches. Aggregations that cannot be merged
from parts (``nunique``, ``median``, a callable) keep the values of open windows and are
computed by pandas when the window fires.

Keys are held only while they have an open window. The table of keys (a key's code is its
position in it) drops the keys that no open window holds whenever it has doubled since it
was last pruned (and holds more than ``COMPACT_MIN``): a key whose windows have all fired
has no partial left, so dropping it changes no result, and a key that comes back gets a
code again. So the keys held stay below ``max(COMPACT_MIN, 2 x the keys held after the last
pruning)`` plus one batch's new keys, and a pruning leaves only the keys of open windows:
memory follows the peak number of keys with open windows, however many distinct keys pass
(``held_keys``). No time-to-live is needed here: what a window keeps ends when the window
fires.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fusionkit._duration import parse_duration
from fusionkit.batch import EVENT_TIME, INGEST_TS, OFFSET
from fusionkit.streaming import partials
from fusionkit.streaming.base import Operator

__all__ = ["SlidingWindow", "TumblingWindow"]

WIN, KC = "_win", "_kc"  # window index, key code (position in the table of keys seen)
_BIG = 2**62
COMPACT_MIN = 1024  # the table of keys is not pruned below this many keys


def _index(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x), -_BIG, _BIG).astype(np.int64)


def _spread(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i`` repeated for each window ``lo[i]..hi[i]``: (row of each copy, its window)."""
    reps = hi - lo + 1
    rows = np.repeat(np.arange(len(lo)), reps)
    return rows, lo[rows] + np.arange(len(rows)) - np.repeat(np.cumsum(reps) - reps, reps)


class SlidingWindow(Operator):
    """Event-time windows of ``size`` seconds starting every ``slide`` seconds, per ``key``.

    ``agg`` is a pandas named aggregation, ``{"out": (column, func)}``, where ``func`` is one
    of sum, count, mean, min, max, std, var, first, last, size (merged from partial
    aggregates), or nunique, median, any other pandas name or a callable (computed over the
    values kept for the window). Each fired window gives one row per key: the key column,
    ``window_start``, ``window_end``, the aggregates, ``_event_time`` (the window end),
    ``_ingest_ts`` and ``_offset`` (the largest of the window's events), sorted by window
    end then key. Events without a finite event time go to the ``invalid`` side output.
    When ``slide > size``, events between two windows belong to none and are dropped.

    Examples
    --------
    >>> w = SlidingWindow("10s", "5s", agg={"n": ("v", "count"), "top": ("v", "max")})
    >>> df = pd.DataFrame({"v": [1, 2, 3], "_event_time": [1.0, 6.0, 21.0],
    ...                    "_ingest_ts": 0.0, "_offset": [0, 1, 2]})
    >>> out = w.process(df)
    >>> out["window_start"].tolist(), out["n"].tolist(), out["top"].tolist()
    ([-5.0, 0.0, 5.0], [1, 2, 1], [1, 2, 2])
    >>> late = pd.DataFrame({"v": [9], "_event_time": [4.0], "_ingest_ts": 0.0, "_offset": [3]})
    >>> len(w.process(late)), w.late_count, w.side_outputs()["late"]["v"].tolist()
    (0, 1, [9])
    >>> w.flush()[["window_start", "window_end", "n"]].to_dict("list")
    {'window_start': [15.0, 20.0], 'window_end': [25.0, 30.0], 'n': [1, 1]}
    """

    def __init__(self, size: float | str, slide: float | str, agg: dict[str, tuple[str, Any]],
                 key: str | None = None, allowed_lateness: float | str = 0.0):
        self.size = parse_duration(size)
        self.slide = parse_duration(slide)
        self.allowed_lateness = parse_duration(allowed_lateness)
        if not (self.size > 0 and self.slide > 0):
            raise ValueError(f"window size and slide must be positive, got size={size!r}, "
                             f"slide={slide!r}")
        if not self.allowed_lateness >= 0:
            raise ValueError(f"allowed_lateness must be >= 0, got {allowed_lateness!r}")
        self.agg = dict(agg)
        self.key = key
        self.watermark = -np.inf
        self.late_count = 0
        ratio = self.size / self.slide
        self._k = round(ratio) if abs(ratio - round(ratio)) < 1e-9 else None
        self._parts, self._finals, self._holistic = self._plan()
        self._columns = [c for c in [key, "window_start", "window_end", *self.agg, EVENT_TIME,
                                     INGEST_TS, OFFSET] if c is not None]
        self._max_time = -np.inf
        self._seq = 0  # arrival position of the next event (orders first / last)
        self._closed = -_BIG  # every window below this index has fired
        self._keys = pd.Index([])  # key code -> key
        self._rank: np.ndarray | None = None
        self._state: dict[str, np.ndarray] | None = None  # partials per (window, key), sorted
        self._values: list[pd.DataFrame] = []  # values kept for the other aggregations
        self._side: dict[str, list[pd.DataFrame]] = {}
        self._template: pd.DataFrame | None = None  # the empty output
        self._compact_at = COMPACT_MIN  # prune the table of keys when it holds more

    def _plan(self) -> tuple[dict[str, tuple[str, str | None]], list, dict]:
        taken = {"window_start", "window_end", EVENT_TIME, INGEST_TS, OFFSET, self.key}
        return partials.plan(self.agg, taken)

    def _first_window(self, t: np.ndarray) -> np.ndarray:
        """Index of the first window whose end is after ``t``."""
        if self._k is not None:
            return _index(t / self.slide) - self._k + 1
        return _index((t - self.size) / self.slide) + 1

    def _undo_point(self):
        """A function that puts the window back as it is now (see ``Chain.process``). Free:
        a batch replaces the arrays of open windows, never writes into them, so keeping
        references is enough; only the lists a batch appends to are copied."""
        saved = dict(self.__dict__)
        saved["_values"] = list(self._values)
        saved["_side"] = {name: list(frames) for name, frames in self._side.items()}

        def undo() -> None:
            self.__dict__.clear()
            self.__dict__.update(saved)

        return undo

    # -- the work -------------------------------------------------------------------------
    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        if EVENT_TIME not in batch.columns:
            raise KeyError(f"a window needs the {EVENT_TIME!r} column")
        t = pd.to_numeric(batch[EVENT_TIME], errors="coerce").to_numpy("float64", na_value=np.nan)
        bad = ~np.isfinite(t)
        if bad.any():
            self._side.setdefault("invalid", []).append(batch[bad])
            batch, t = batch[~bad], t[~bad]
        if len(t) == 0:
            return self._empty()
        need = {spec[0] for spec in self.agg.values()} | ({self.key} - {None})
        if not need.issubset(batch.columns):
            raise KeyError(f"window columns {sorted(need - set(batch.columns))} are not in the "
                           f"batch; columns are {[c for c in batch.columns if c[:1] != '_']}")
        seen = np.maximum.accumulate(t)
        before = np.maximum(np.concatenate([[self._max_time], seen[:-1]]), self._max_time)
        hi = _index(t / self.slide)  # the last window that starts at or before t
        first = self._first_window(t)
        lo = np.maximum(first, np.maximum(self._first_window(before - self.allowed_lateness),
                                          self._closed))
        late = (lo > hi) & (first <= hi)
        if late.any():
            self._side.setdefault("late", []).append(batch[late])
            self.late_count += int(late.sum())
        on = np.flatnonzero(lo <= hi)
        if len(on):
            self._add(batch, on, lo[on], hi[on])
        self._seq += len(t)
        self._max_time = max(self._max_time, float(seen[-1]))
        self.watermark = self._max_time - self.allowed_lateness
        out = self._fire(int(self._first_window(np.array([self.watermark]))[0]))
        self._compact()
        return out

    def _key_codes(self, batch: pd.DataFrame, on: np.ndarray) -> np.ndarray:
        if self.key is None:
            return np.zeros(len(on), dtype=np.int64)
        codes, uniques = pd.factorize(batch[self.key], use_na_sentinel=False)
        known = self._keys.get_indexer(uniques)
        new = known < 0
        if new.any():
            known[new] = np.arange(len(self._keys), len(self._keys) + int(new.sum()))
            self._keys = self._keys.append(pd.Index(uniques[new])) if len(self._keys) \
                else pd.Index(uniques[new])
        return known[codes[on]]

    def _add(self, batch: pd.DataFrame, on: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        kc = self._key_codes(batch, on)
        pos = (self._seq + on).astype("float64")
        columns = {col: partials.column(batch, col, on) for col in
                   {col for kind, col in self._parts.values() if col is not None}}
        units = {name: partials.unit(kind, batch, columns.get(col), on, pos)
                 for name, (kind, col) in self._parts.items()}
        if self._holistic:
            self._keep_values(batch, on, lo, hi, kc)
        if self._k == 1 or (hi - lo).max() == 0:  # each event in one window
            (wins, kcs), parts = self._reduce([hi, kc], units)
        else:  # reduce per (first window, last window, key), then spread over the windows
            (los, his, kcs), parts = self._reduce([lo, hi, kc], units)
            rows, wins = _spread(los, his)
            kcs, parts = kcs[rows], {name: v[rows] for name, v in parts.items()}
        state = self._state
        if state is None or len(state[WIN]) == 0:
            a = b = 0
            state = {name: v[:0] for name, v in [(WIN, wins), (KC, kcs), *parts.items()]}
        else:
            a = int(np.searchsorted(state[WIN], wins.min(), "left"))
            b = int(np.searchsorted(state[WIN], wins.max(), "right"))
        (mw, mk), merged = self._reduce(
            [np.concatenate([state[WIN][a:b], wins]), np.concatenate([state[KC][a:b], kcs])],
            {name: np.concatenate([state[name][a:b], v]) for name, v in parts.items()})
        merged[WIN], merged[KC] = mw, mk
        self._state = {name: np.concatenate([v[:a], merged[name], v[b:]])
                       for name, v in state.items()}

    def _reduce(self, keys: list[np.ndarray], parts: dict[str, np.ndarray]):
        """Merge the partial rows that share ``keys`` (sorted by ``keys``)."""
        return partials.reduce(self._parts, keys, parts)

    def _keep_values(self, batch: pd.DataFrame, on: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray, kc: np.ndarray) -> None:
        rows, wins = _spread(lo, hi)
        kept = {WIN: wins, KC: kc[rows]}
        for col in sorted({na.column for na in self._holistic.values()}):
            kept[col] = batch[col].take(on[rows]).array
        kept = pd.DataFrame(kept)
        if all(na.aggfunc == "nunique" for na in self._holistic.values()):
            kept = kept.drop_duplicates()
        self._values.append(kept)

    def _fire(self, first_open: int) -> pd.DataFrame:
        self._closed = max(self._closed, first_open)
        state = self._state
        if state is None:
            return self._empty()
        cut = int(np.searchsorted(state[WIN], self._closed, "left"))
        if cut == 0:
            return self._empty()
        done = {name: v[:cut] for name, v in state.items()}
        self._state = {name: v[cut:] for name, v in state.items()}
        return self._finish(done)

    def _key_rank(self) -> np.ndarray:
        """Rank of each key code in the sort order of the keys (missing keys last)."""
        if self._rank is None or len(self._rank) != len(self._keys):
            try:
                order = self._keys.argsort()
            except TypeError:  # keys of mixed types: order them by their text
                order = np.argsort(self._keys.astype(str))
            self._rank = np.empty(len(order), dtype=np.int64)
            self._rank[order] = np.arange(len(order))
        return self._rank

    def _finish(self, done: dict[str, np.ndarray]) -> pd.DataFrame:
        out: dict[str, Any] = {}
        order = None
        if self.key is not None:
            order = np.lexsort((self._key_rank()[done[KC]], done[WIN]))
            done = {name: v[order] for name, v in done.items()}
            out[self.key] = self._keys.take(done[KC]).array
        start = done[WIN] * self.slide
        out["window_start"], out["window_end"] = start, start + self.size
        for name, fn, col in self._finals:
            out[name] = partials.final(fn, col, done)
        if self._holistic:
            values = pd.concat(self._values, ignore_index=True)
            due = values[WIN].to_numpy() < self._closed
            self._values = [values[~due]] if not due.all() else []
            res = values[due].groupby([WIN, KC], sort=True).agg(**self._holistic)
            for name in self._holistic:
                out[name] = res[name].array if order is None else res[name].array.take(order)
        out[EVENT_TIME], out[INGEST_TS], out[OFFSET] = start + self.size, done["ing"], done["off"]
        return pd.DataFrame({c: out[c] for c in self._columns})

    def _empty(self) -> pd.DataFrame:
        if self._template is None:
            self._template = pd.DataFrame({c: np.empty(0, dtype="float64" if c.startswith(
                ("window", "_")) else object) for c in self._columns})
        return self._template.copy()

    def flush(self) -> pd.DataFrame | None:
        """End of a bounded stream: emit every open window (they close for good)."""
        if self._state is None or len(self._state[WIN]) == 0:
            return None
        out = self._fire(int(self._state[WIN][-1]) + 1)
        self._compact()
        return out

    @property
    def held_keys(self) -> int:
        """How many keys the window holds now (in its table of keys)."""
        return len(self._keys)

    def _compact(self) -> None:
        """Drop the keys no open window holds from the table of keys, once it has doubled.

        Codes are renumbered in their order, so the partials stay sorted by (window, code);
        new arrays replace the old ones (an undo point keeps references to them)."""
        if len(self._keys) <= self._compact_at:
            return
        held = [] if self._state is None else [self._state[KC]]
        held += [v[KC].to_numpy() for v in self._values]
        live = np.unique(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
        remap = np.full(len(self._keys), -1, dtype=np.int64)
        remap[live] = np.arange(len(live))
        self._keys, self._rank = self._keys.take(live), None
        if self._state is not None:
            self._state = {**self._state, KC: remap[self._state[KC]]}
        self._values = [v.assign(**{KC: remap[v[KC].to_numpy()]}) for v in self._values]
        self._compact_at = max(COMPACT_MIN, 2 * len(self._keys))

    def side_outputs(self) -> dict[str, pd.DataFrame]:
        side, self._side = self._side, {}
        return {name: pd.concat(frames) for name, frames in side.items()}

    # -- checkpoints ----------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot: clock, counters, keys, open windows' partials and values."""
        return {"max_time": self._max_time, "late_count": self.late_count, "seq": self._seq,
                "closed": self._closed, "keys": self._keys.copy(),
                "partials": None if self._state is None else
                {name: v.copy() for name, v in self._state.items()},
                "values": pd.concat(self._values, ignore_index=True) if self._values else None}

    def set_state(self, state: dict[str, Any]) -> None:
        self._max_time = float(state["max_time"])
        self.watermark = self._max_time - self.allowed_lateness
        self.late_count = int(state["late_count"])
        self._seq = int(state["seq"])
        self._closed = int(state["closed"])
        self._keys, self._rank = state["keys"].copy(), None
        self._compact_at = max(COMPACT_MIN, 2 * len(self._keys))
        parts, values = state["partials"], state["values"]
        self._state = None if parts is None else {n: v.copy() for n, v in parts.items()}
        self._values = [] if values is None else [values.copy()]


class TumblingWindow(SlidingWindow):
    """Back-to-back event-time windows of ``size`` seconds, per ``key``.

    Same watermark, late-data policy and output as :class:`SlidingWindow` with
    ``slide == size``.

    Examples
    --------
    >>> w = TumblingWindow("10s", agg={"total": ("v", "sum"), "avg": ("v", "mean")}, key="k")
    >>> df = pd.DataFrame({"k": ["a", "b", "a", "a"], "v": [1, 2, 3, 4],
    ...                    "_event_time": [1.0, 2.0, 3.0, 12.0], "_ingest_ts": 0.0,
    ...                    "_offset": [0, 1, 2, 3]})
    >>> w.process(df)[["k", "window_start", "window_end", "total", "avg"]].values.tolist()
    [['a', 0.0, 10.0, 4, 2.0], ['b', 0.0, 10.0, 2, 2.0]]
    >>> w.flush()[["k", "window_start", "total", "_offset"]].values.tolist()
    [['a', 10.0, 4, 3]]
    """

    def __init__(self, size: float | str, agg: dict[str, tuple[str, Any]], key: str | None = None,
                 allowed_lateness: float | str = 0.0):
        super().__init__(size, size, agg, key=key, allowed_lateness=allowed_lateness)
