"""The state of a table: per key, the aggregate of the window still open at its newest event.

A table (an online feature's source) is read by key at serve time and, on the training path,
as of just before each event. Its definition is a :class:`~fusionkit.streaming.windows.
SlidingWindow` (``fk.sliding(size, slide, agg=...)``), read the same way the window reads:

- **Window.** A key's value is the aggregate over the key's events in window ``first`` of
  ``fk.sliding``, where ``first`` is the oldest window that holds the key's newest event
  (the first whose end is after it): the events with ``first * slide <= t <= newest``,
  which span between ``size - slide`` and ``size`` of event time before the newest event.
  While that window is open, this is the row the sliding window will emit for it, already
  now. (A key that has been quiet keeps the value of a window the sliding window has
  closed, until its ``ttl``; an event of it that came after the close but within a later
  open window counts there, where the sliding window leaves it out of the closed one.)
  ``slide`` is the granularity: the state is one partial aggregate per (key, slide), at
  most ``size / slide + 1`` per key however many events a key gets. ``first`` and
  ``last`` are by arrival, as in the sliding window.
- **Late events.** As in the sliding window: an event whose windows have all closed by the
  watermark it meets (the largest event time seen before it minus ``allowed_lateness``) is
  not kept, and counted in ``late_count``. An event older than its key's window is kept by
  no window of the table's value and changes nothing.
- **Order.** "Before an event" means before it *arrived*: the events of earlier batches and
  the rows above it in its batch, whatever their event times. That is the state a request
  served at that moment read, and it does not depend on where the stream is cut into
  batches (an order by event time within a batch would).
- **Expiry.** With ``ttl``, a key whose newest event is more than ``ttl`` older than the
  stream time (the largest event time seen) is gone: it reads as a miss, its state is
  dropped at the end of the batch, and an event of it starts it afresh. Event time, not
  the wall clock, as :mod:`fusionkit.streaming.expiry`, so replays expire the same keys.

Aggregations are those merged from partials (:mod:`fusionkit.streaming.partials`): count,
sum, mean, min, max, std, var, first, last, size. A table keeps no events, so ``nunique``,
``median`` and functions are refused.

Per batch the work is numpy over the batch's events and the rows of the keys they touch;
the Python work is one dict look-up per distinct key. An event's value before it merges the
key's kept partials with the earlier events of its batch (pairs within a key): a batch with
many events of one key is cut in parts, which gives the same result. Measured in one
process on a 2-core machine (``benchmarks/table_state.py``: batches of 1000 over 10k keys
holding 62k partials, 5-minute window by 10 s, three aggregations): ``update`` 276k
events/s, ``as_of_before`` 227k, ``lookup`` of one key 0.17 ms; batches all of one key 96k.
A batch's rows go into a small recent part, merged into the kept rows once it is a
sixteenth of them, so a batch costs about what it brings, not a copy of every row kept: at
100k keys holding 550k partials, ``update`` went from 34k to 245k events/s (one run each,
load 14).
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._duration import parse_duration
from fusionkit.batch import EVENT_TIME
from fusionkit.streaming import partials
from fusionkit.streaming.expiry import grow_slots
from fusionkit.streaming.operators import key_hash
from fusionkit.streaming.windows import SlidingWindow, _index, _spread

__all__ = ["AS_OF", "MISS", "TableState", "held", "merge_parts", "other_form", "part_of", "split_keys"]

AS_OF, MISS = "as_of", "miss"  # output columns: the newest event time of a key, no value
KC, BKT = "_kc", "_bkt"  # the rows kept: key code, slide index (rows sorted by both)
PAIR_BUDGET = 64  # pairs per event within a batch above which the batch is cut in two
CHANGE_LOG = 1024  # the last batches whose keys a table remembers, for those following it
RECENT_MIN = 4096  # rows of the recent part merged into the kept rows at the latest...
RECENT_SHARE = 16  # ...or at a sixteenth of the kept rows, whichever is more


class TableState:
    """Keyed aggregates of the window still open at each key's newest event.

    ``window`` is the definition (``fk.sliding`` or ``fk.tumbling``: size, slide, agg,
    allowed lateness); ``key`` the key column (default: the window's). ``ttl`` (seconds or
    e.g. ``"1h"``) drops keys quiet for that long in event time; ``defaults`` are the values
    of a key the table does not hold (NaN where none is given).

    Examples
    --------
    >>> w = SlidingWindow("10s", "5s", agg={"n": ("v", "count"), "avg": ("v", "mean")})
    >>> table = TableState(w, key="user", defaults={"n": 0})
    >>> batch = pd.DataFrame({"user": [7, 7, 8, 7], "v": [1.0, 3.0, 5.0, 8.0],
    ...                       "_event_time": [1.0, 4.0, 6.0, 12.0]})
    >>> table.as_of_before(batch)[["n", "avg", "as_of", "miss"]].values.tolist()
    [[0, nan, nan, True], [1, 1.0, 1.0, False], [0, nan, nan, True], [2, 2.0, 4.0, False]]
    >>> table.lookup([7, 9]).values.tolist()  # user 7: the window [5, 15) holds 12 only
    [[7, 1, 8.0, 12.0, False], [9, 0, nan, nan, True]]
    >>> table.misses
    1
    """

    def __init__(self, window: SlidingWindow, key: str | None = None,
                 ttl: float | str | None = None, defaults: dict[str, Any] | None = None,
                 share: tuple[int, int] = (0, 1)):
        if not isinstance(window, SlidingWindow):
            raise TypeError(f"a table is defined by a window, e.g. fk.sliding('5m', '10s', "
                            f"agg={{...}}); got {type(window).__name__}")
        self.window = window
        self.key = key if key is not None else window.key
        if self.key is None:
            raise ValueError("a table needs a key column: pass key=, e.g. key='user_id'")
        if window.slide > window.size:
            raise ValueError(f"a table's window must slide by at most its size (events between "
                             f"windows would count nowhere); got size={window.size}, "
                             f"slide={window.slide}")
        self.ttl = None if ttl is None else parse_duration(ttl)
        if self.ttl is not None and not self.ttl > 0:
            raise ValueError(f"ttl must be positive, got {ttl!r}")
        self.agg = dict(window.agg)
        parts, self._finals, holistic = partials.plan(self.agg, {self.key, AS_OF, MISS})
        if holistic:
            name, spec = next(iter(holistic.items()))
            raise ValueError(f"agg[{name!r}] uses {spec.aggfunc!r}, which a table cannot keep: "
                             f"a table keeps partial aggregates, not events; use count, sum, "
                             f"mean, min, max, std, var, first, last or size")
        self._parts = {n: p for n, p in parts.items() if p[0] not in ("ing", "off")}
        self.defaults = dict(defaults or {})
        unknown = sorted(set(self.defaults) - set(self.agg), key=str)
        if unknown:
            raise ValueError(f"defaults name {unknown}, which the table does not compute; its "
                             f"aggregations are {list(self.agg)}")
        index, count = share
        if not 0 <= index < count:
            raise ValueError(f"share must be (index, count) with 0 <= index < count, "
                             f"not {share!r}")
        self.share = (index, count)  # the part of the keys kept (of a table on N actors)
        self.clock = -np.inf  # stream time: the largest finite event time seen
        self.late_count = self.invalid_count = self.evicted = 0
        self.taken = 0  # events of this table's keys (its part's) it was given
        # what changed, for a copy of the values that follows the table (a serve replica's):
        # ``version`` counts the batches taken, ``_changes`` holds each one's keys (taken or
        # dropped), ``token`` names this state (a restore starts another)
        self.token = uuid.uuid4().hex
        self.version = 0
        self._changes: deque[tuple[int, list]] = deque(maxlen=CHANGE_LOG)
        self._dropped: list = []  # keys released in the batch being taken
        self.lookups = self.misses = 0
        self._seq = 0  # arrival position of the next event (orders first / last)
        self._slot: dict[Any, int] = {}  # key -> code
        self._key: list[Any] = []  # code -> key (None: free)
        self._newest = np.empty(0)  # code -> the key's newest event time (NaN: free)
        self._free: list[int] = []
        # the partial rows per (key code, slide index), in two parts, each sorted by code:
        # ``_rows``, one row per pair, within each key's window, and ``_recent``, the rows
        # of the batches since (a pair may be in both, or twice): a batch adds its rows to
        # the small recent part, which is merged into the rest once it is a sixteenth of it,
        # so a batch costs what it brings, not a copy of every row kept. Reading merges the
        # rows of both; rows left of a key's window are read as nothing, and dropped when
        # the parts are merged, as are those of keys gone (whose codes wait until then).
        self._rows: dict[str, np.ndarray] | None = None
        self._recent: dict[str, np.ndarray] | None = None
        self._retired: list[int] = []  # codes of keys gone, free again once merged
        self.recent_min = RECENT_MIN

    # -- reading ------------------------------------------------------------------------
    @property
    def held_keys(self) -> int:
        """How many keys the table holds now."""
        return len(self._slot)

    @property
    def held_rows(self) -> int:
        """How many partial aggregates the table keeps: one per (key, slide) with events in
        the key's window, so at most ``size / slide + 1`` per key."""
        return sum(len(r[KC]) for r in (self._rows, self._recent) if r is not None)

    def lookup(self, keys) -> pd.DataFrame:
        """The values of ``keys`` now: one row per key asked, in that order, with the key,
        the aggregates, ``as_of`` (the key's newest event time) and ``miss`` (the table
        does not hold the key: its values are the defaults). Misses are counted."""
        out = self.values(keys)
        self.lookups += len(out)
        self.misses += int(out[MISS].sum())
        return out

    def keys(self) -> list:
        """The keys the table holds now."""
        return list(self._slot)

    def values(self, keys) -> pd.DataFrame:
        """``lookup`` without counting the lookups and misses."""
        keys = _keys(keys)
        code = np.array([self._code(k) for k in keys], dtype=np.int64)
        newest = self._newest_of(code)
        held = code >= 0
        if self.ttl is not None:
            held &= ~(newest < self.clock - self.ttl)
        out = self._answer(len(keys), np.where(held, code, -1), np.where(held, newest, np.nan))
        return pd.DataFrame({self.key: keys if keys else np.empty(0, dtype=object), **out})

    def _code(self, key: Any) -> int:
        """The code of ``key`` in either spelling (``held``); -1: not held."""
        code = held(self._slot, key)
        return -1 if code is None else code

    def changes_since(self, version: int) -> tuple[list, list] | None:
        """What changed after batch ``version`` (of this ``token``): the keys held now whose
        values may differ, and the keys no longer held. None: too long ago to say (more
        than ``CHANGE_LOG`` batches back, or not of this state): take every value afresh."""
        if version == self.version:
            return [], []
        if version > self.version or not self._changes or self._changes[0][0] > version + 1:
            return None
        keys: dict[Any, None] = {}
        for v, ks in self._changes:
            if v > version:
                keys.update(dict.fromkeys(ks))
        held = [k for k in keys if k in self._slot]
        return held, [k for k in keys if k not in self._slot]

    def _answer(self, n: int, code: np.ndarray, newest: np.ndarray,
                extra: tuple[np.ndarray, dict[str, np.ndarray]] | None = None
                ) -> dict[str, np.ndarray]:
        """Values of ``n`` questions: question ``q`` reads the kept rows of key ``code[q]``
        (none if -1) and, with ``extra`` (question of each row, partials), those rows too,
        within the window at ``newest[q]`` (NaN: a miss): the output columns."""
        held = ~np.isnan(newest)
        start = self.window._first_window(np.where(held, newest, 0.0))
        ask = np.flatnonzero(code >= 0)
        qs, parts = [np.empty(0, dtype=np.int64)], {name: [] for name in self._parts}
        for rows in (self._rows, self._recent):
            if rows is None or not len(ask):
                continue
            a = np.searchsorted(rows[KC], code[ask], "left")
            b = np.searchsorted(rows[KC], code[ask], "right")
            which, at = _spread(a, b - 1)
            q = ask[which]
            keep = rows[BKT][at] >= start[q]
            qs.append(q[keep])
            for name in self._parts:
                parts[name].append(rows[name][at[keep]])
        if extra is not None:
            qs.append(extra[0])
            for name in self._parts:
                parts[name].append(extra[1][name])
        q = np.concatenate(qs)
        out: dict[str, Any] = {}
        qid, merged = np.empty(0, dtype=np.int64), {}
        if len(q):
            (qid,), merged = partials.reduce(
                self._parts, [q], {name: np.concatenate(v) for name, v in parts.items()})
        for name, fn, col in self._finals:
            got = partials.final(fn, col, merged) if len(q) else np.empty(0)
            if len(qid) == n:  # every question answered (qid is 0..n-1)
                out[name] = got
                continue
            default = self.defaults.get(name, np.nan)
            try:
                dtype = np.result_type(got.dtype, np.asarray(default).dtype)
            except TypeError:
                dtype = np.dtype(object)
            if dtype.kind not in "biuf":
                dtype = np.dtype(object)
            out[name] = np.full(n, default, dtype=dtype)
            out[name][qid] = got
        out[AS_OF], out[MISS] = newest, ~held
        return out

    # -- a batch ------------------------------------------------------------------------
    def update(self, batch: pd.DataFrame) -> None:
        """Take the events of ``batch`` (in their order of arrival) into the table."""
        self._step(batch, features=False)

    def as_of_before(self, batch: pd.DataFrame) -> pd.DataFrame:
        """For each event of ``batch``, the table's values as of just before it arrived (the
        events of earlier batches and earlier rows count, the event itself does not), with
        ``as_of`` and ``miss`` as :meth:`lookup` gives them; then take the batch in. Indexed
        as ``batch``. Misses here are not counted: an event's first sight of its key is one."""
        pairs = np.bincount(self._codes(batch)[0]) if len(batch) else np.zeros(0)
        if len(batch) > 1 and (pairs * (pairs - 1) // 2).sum() > PAIR_BUDGET * len(batch):
            half = len(batch) // 2
            return pd.concat([self.as_of_before(batch.iloc[:half]),
                              self.as_of_before(batch.iloc[half:])])
        return self._step(batch, features=True)

    def _codes(self, batch: pd.DataFrame) -> tuple[np.ndarray, list]:
        if self.key not in batch.columns:
            raise KeyError(f"the table needs its key column {self.key!r}; columns are "
                           f"{[c for c in batch.columns if str(c)[:1] != '_']}")
        u, uniques = pd.factorize(batch[self.key], use_na_sentinel=False)
        return u, _keys(uniques.tolist() if hasattr(uniques, "tolist") else uniques)

    def _step(self, batch: pd.DataFrame, features: bool) -> pd.DataFrame | None:
        if EVENT_TIME not in batch.columns:
            raise KeyError(f"a table needs the {EVENT_TIME!r} column")
        need = {col for _, col in self._parts.values()} - set(batch.columns)
        if need:
            raise KeyError(f"table columns {sorted(need)} are not in the batch; columns are "
                           f"{[c for c in batch.columns if str(c)[:1] != '_']}")
        total = len(batch)
        t = pd.to_numeric(batch[EVENT_TIME], errors="coerce").to_numpy("float64", na_value=np.nan)
        finite = np.isfinite(t)
        upto = np.maximum.accumulate(np.where(finite, t, -np.inf)) if total else t
        before = np.maximum(np.concatenate([[self.clock], upto[:-1]]), self.clock) if total else t
        pos = self._seq + np.arange(total, dtype=np.int64)
        if self.share[1] > 1 and total:
            # one part of the keys: the stream time and the arrival positions are the whole
            # batch's, so each part holds exactly what one table would for its keys
            mine = part_of(batch[self.key], self.share[1]) == self.share[0]
            batch, t, finite, before, pos = (batch[mine], t[mine], finite[mine], before[mine],
                                             pos[mine])
        n = len(batch)
        self.taken += n
        u, ukeys = self._codes(batch)
        if n == 0:
            self._seq += total
            if total and np.isfinite(upto[-1]):
                self.clock = max(self.clock, float(upto[-1]))
                self._expire()
                self._maybe_merge()
            self._changed([])
            return pd.DataFrame(self._answer(0, u, np.empty(0)), index=batch.index) \
                if features else None
        bucket = _index(np.where(finite, t, 0.0) / self.window.slide)
        acc = finite & (self.window._first_window(before - self.window.allowed_lateness)
                        <= bucket)
        code_u = np.array([self._slot.get(k, -1) for k in ukeys], dtype=np.int64)
        n0 = self._newest_of(code_u)
        # the key's newest event time before each event (taken events only, none expired)
        seen = pd.Series(np.where(acc, t, -np.inf)).groupby(u).cummax()
        earlier = seen.groupby(u).shift(1).to_numpy()
        prev = np.fmax(n0[u], np.where(earlier == -np.inf, np.nan, earlier)) if n else t
        gone = prev < before - self.ttl if self.ttl is not None else np.zeros(n, dtype=bool)
        reset = acc & gone  # the key expired before this event: it starts afresh
        seg = (pd.Series(reset).groupby(u).cumsum().to_numpy() if reset.any()
               else np.zeros(n, dtype=np.int64))
        columns = {col: partials.column(batch, col, np.arange(n))
                   for col in {col for _, col in self._parts.values()}}
        units = {name: partials.unit(kind, batch, columns.get(col), np.arange(n),
                                     pos.astype("float64"))
                 for name, (kind, col) in self._parts.items()}
        out = None
        if features:
            newest = np.where(gone, np.nan, prev)
            out = pd.DataFrame(self._before(u, code_u, seg, acc, bucket, newest, units),
                               index=batch.index)
        self._take(u, code_u, ukeys, seg, acc, t, bucket, n0, units)
        self.late_count += int((finite & ~acc).sum())
        self.invalid_count += int((~finite).sum())
        self._seq += total
        if np.isfinite(upto[-1]):
            self.clock = max(self.clock, float(upto[-1]))
        self._expire()
        self._maybe_merge()
        self._changed(ukeys)
        return out

    def _changed(self, keys: list) -> None:
        """Note a batch taken: its keys and those dropped while taking it."""
        self.version += 1
        self._changes.append((self.version, [*keys, *self._dropped] if self._dropped else keys))
        self._dropped = []

    def _before(self, u, code_u, seg, acc, bucket, newest, units) -> dict[str, np.ndarray]:
        """Each event's values before it: the key's kept rows (if it has not started afresh
        in this batch) and the earlier taken events of its key and part of the batch."""
        n = len(u)
        order = np.argsort(u, kind="stable")
        gstart = np.zeros(n, dtype=np.int64)
        if n:
            change = np.flatnonzero(np.r_[True, u[order][1:] != u[order][:-1]])
            gstart[order] = np.repeat(change, np.diff(np.r_[change, n]))
        which, at = _spread(gstart[order], np.arange(n) - 1)  # sorted position pairs
        i, j = order[which], order[at]
        start = self.window._first_window(np.where(np.isnan(newest), 0.0, newest))
        keep = (acc[j] & (seg[j] == seg[i]) & (bucket[j] >= start[i]) & ~np.isnan(newest[i]))
        i, j = i[keep], j[keep]
        code = np.where((seg == 0) & ~np.isnan(newest), code_u[u], -1)
        return self._answer(n, code, newest, (i, {name: v[j] for name, v in units.items()}))

    def _take(self, u, code_u, ukeys, seg, acc, t, bucket, n0, units) -> None:
        """Merge the batch's taken events into the kept rows: per key, those since it last
        started afresh; rows left of the key's window are dropped."""
        if not acc.any():
            return
        top = np.zeros(len(ukeys), dtype=np.int64)
        np.maximum.at(top, u, seg)
        last = np.flatnonzero(acc & (seg == top[u]))
        touched = np.unique(u[last])
        newest = np.full(len(ukeys), -np.inf)
        np.maximum.at(newest, u[last], t[last])
        newest = np.where(top == 0, np.fmax(n0, newest), newest)
        stale = touched[(code_u[touched] >= 0) & (top[touched] > 0)]
        for code in code_u[stale].tolist():  # expired in this batch: starts afresh (a new
            self._release(code)              # code; the old one's rows go at the merge)
        code_u[stale] = -1
        for k in touched[code_u[touched] < 0].tolist():
            code_u[k] = self._claim(ukeys[k])
        self._newest[code_u[touched]] = newest[touched]
        fresh = {name: v[last] for name, v in units.items()}
        (kc, bkt), merged = partials.reduce(self._parts, [code_u[u[last]], bucket[last]], fresh)
        inside = bkt >= self.window._first_window(self._newest[kc])
        merged = {KC: kc[inside], BKT: bkt[inside],
                  **{name: v[inside] for name, v in merged.items()}}
        rows = self._recent
        if rows is None or not len(rows[KC]):
            self._recent = merged
        else:
            at = np.searchsorted(rows[KC], merged[KC], "right")
            self._recent = {name: _insert(rows[name], at, merged[name]) for name in rows}

    def _maybe_merge(self) -> None:
        """Merge the recent rows into the kept ones when they (or the codes of keys gone)
        have grown to a sixteenth of what is kept (``RECENT_MIN`` at least)."""
        kept = 0 if self._rows is None else len(self._rows[KC])
        recent = 0 if self._recent is None else len(self._recent[KC])
        bound = max(self.recent_min, kept // RECENT_SHARE)
        if recent > bound or len(self._retired) > max(self.recent_min, len(self._slot) // 4):
            self._rows, self._recent = self._merged(), None
            self._free.extend(self._retired)
            self._retired = []

    def _merged(self) -> dict[str, np.ndarray] | None:
        """The kept and the recent rows as one: a row per (key, slide index) of a key held,
        within its window, sorted."""
        parts = [r for r in (self._rows, self._recent) if r is not None and len(r[KC])]
        if not parts:
            return None
        rows = parts[0] if len(parts) == 1 else {
            name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        newest = self._newest[rows[KC]]
        keep = ~np.isnan(newest)
        keep[keep] = rows[BKT][keep] >= self.window._first_window(newest[keep])
        if not keep.any():
            return None
        (kc, bkt), merged = partials.reduce(
            self._parts, [rows[KC][keep], rows[BKT][keep]],
            {name: rows[name][keep] for name in self._parts})
        return {KC: kc, BKT: bkt, **merged}

    # -- keys ---------------------------------------------------------------------------
    def _newest_of(self, code: np.ndarray) -> np.ndarray:
        """Newest event times of key codes (NaN for -1: a key not held)."""
        out = np.full(len(code), np.nan)
        out[code >= 0] = self._newest[code[code >= 0]]
        return out

    def _claim(self, key: Any) -> int:
        if not self._free:
            self._newest, self._free = grow_slots(self._key, self._newest, np.nan)
        code = self._free.pop()
        self._slot[key], self._key[code] = code, key
        return code

    def _release(self, code: int) -> None:
        """Forget the key of ``code`` (its rows go at the next merge or expiry)."""
        del self._slot[self._key[code]]
        self._dropped.append(self._key[code])
        self._key[code], self._newest[code] = None, np.nan
        self._retired.append(code)  # free once its rows are merged away
        self.evicted += 1

    def _expire(self) -> None:
        """Drop the keys whose newest event is more than ``ttl`` older than the stream time,
        and their rows."""
        if self.ttl is None or not self._slot:
            return
        gone = np.flatnonzero(self._newest < self.clock - self.ttl)
        if not len(gone):
            return
        for code in gone.tolist():
            self._release(code)

    # -- checkpoints --------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot: stream time, counters, the keys held with their newest event
        times, and the kept partial rows (renumbered to the keys' order here)."""
        codes = np.array(list(self._slot.values()), dtype=np.int64)
        renum = np.full(len(self._key), -1, dtype=np.int64)
        renum[codes] = np.arange(len(codes))
        rows, merged = None, self._merged()
        if merged is not None:
            kc = renum[merged[KC]]
            order = np.lexsort((merged[BKT], kc))
            rows = {**{name: v[order] for name, v in merged.items()}, KC: kc[order]}
        return {"clock": self.clock, "seq": self._seq, "keys": list(self._slot),
                "newest": self._newest[codes].copy(), "rows": rows,
                "counters": {name: getattr(self, name) for name in
                             ("late_count", "invalid_count", "evicted", "lookups", "misses")}}

    def set_state(self, state: dict[str, Any]) -> None:
        """Put a snapshot back: lookups and later batches then go exactly as in the table
        the snapshot was taken from."""
        self.clock, self._seq = float(state["clock"]), int(state["seq"])
        keys = list(state["keys"])
        self._slot = {k: i for i, k in enumerate(keys)}
        self._key, self._free = keys, []
        self._newest = np.array(state["newest"], dtype="float64")
        rows = state["rows"]
        self._rows = None if rows is None else {name: v.copy() for name, v in rows.items()}
        self._recent, self._retired = None, []
        for name, value in state["counters"].items():
            setattr(self, name, int(value))
        self.token, self.version = uuid.uuid4().hex, 0  # those following it start afresh
        self._changes.clear()


def part_of(keys: Any, count: int) -> np.ndarray:
    """Which of ``count`` parts each key is kept by: a stable hash, the same in every
    process, and the same for one key however it comes (a stream's column of ints, of
    floats or of objects, or a list asked for): a whole number is hashed as an int64
    (``7``, ``7.0`` and ``np.int64(7)`` are one key, as the table's dict has them), any
    other key as its text.

    >>> part_of(pd.Series([7, 42], dtype="int64"), 4).tolist() == part_of([7.0, 42], 4).tolist()
    True
    >>> part_of(pd.Series(["a", 7], dtype=object), 4).tolist() == part_of(["a", 7], 4).tolist()
    True
    """
    series = keys if isinstance(keys, pd.Series) else pd.Series(list(keys), dtype=object)
    series = series.reset_index(drop=True)
    if series.dtype.kind in "iub":
        return (key_hash(series.astype("int64")) % np.uint64(count)).astype(np.int64)
    num = series if series.dtype.kind == "f" else pd.to_numeric(series, errors="coerce")
    values = num.to_numpy("float64", na_value=np.nan)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(values) & (values == np.floor(values)) & (np.abs(values) < 2.0**62)
    h = np.empty(len(series), dtype=np.uint64)
    if whole.any():
        h[whole] = key_hash(pd.Series(values[whole].astype("int64")))
    if (~whole).any():
        h[~whole] = key_hash(series[~whole].astype(str))
    return (h % np.uint64(count)).astype(np.int64)


def other_form(key: Any) -> Any:
    """The other spelling of a whole-number key: ``"17"`` for ``17`` and ``17`` for
    ``"17"`` (None for any other key). A request that came as JSON may carry a key as text
    that the stream had as a number, or the other way round; ``part_of`` already keeps both
    spellings in one part, and a table that misses a key reads it in its other spelling.

    >>> other_form("17"), other_form(17), other_form(" 17"), other_form("a"), other_form(1.5)
    (17, '17', None, None, None)
    """
    if isinstance(key, str):
        return int(key) if key.isdigit() or (key[:1] == "-" and key[1:].isdigit()) else None
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return str(int(key))
    if isinstance(key, (float, np.floating)) and math.isfinite(key) and key == int(key):
        return str(int(key))
    return None


def held(by_key: dict, key: Any) -> Any:
    """What ``by_key`` holds for ``key``, or else for its other spelling (``other_form``);
    None: neither is held. How a table and a replica's copy of it find a key."""
    got = by_key.get(key)
    if got is None and (other := other_form(key)) is not None:
        got = by_key.get(other)
    return got


def split_keys(keys: list[Any], count: int) -> list[np.ndarray]:
    """The positions in ``keys`` of each part's keys (of a table on ``count`` actors)."""
    if count == 1:
        return [np.arange(len(keys))]
    part = part_of(keys, count) if keys else np.empty(0, dtype=np.int64)
    return [np.flatnonzero(part == i) for i in range(count)]


def merge_parts(frames: list[pd.DataFrame | None], positions: list[np.ndarray]
                ) -> pd.DataFrame:
    """The parts' answers (``frames[i]`` answers the keys at ``positions[i]``; None: a part
    asked nothing) as one frame, one row per key in the order asked."""
    asked = [(f, at) for f, at in zip(frames, positions, strict=True) if f is not None]
    if len(asked) == 1:
        return asked[0][0]
    order = np.concatenate([at for _, at in asked])
    whole = pd.concat([f for f, _ in asked], ignore_index=True)
    return whole.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def _keys(keys) -> list:
    """Keys as the table holds them: a missing key (None, NaN, NA: pandas turns one into
    another) is None, so that it is one key, found again."""
    keys = list(keys)
    missing = pd.isna(pd.Series(keys, dtype=object)).to_numpy()
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            keys[i] = None
    return keys


def _insert(a: np.ndarray, at: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` inserted into ``a`` before positions ``at``, in a type that holds both (a sum
    of integers meets one of floats when a column gets a missing value)."""
    dtype = np.result_type(a.dtype, b.dtype)
    return np.insert(a.astype(dtype, copy=False), at, b.astype(dtype, copy=False))
