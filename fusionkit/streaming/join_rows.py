"""The rows an interval join keeps of one input, by arrival number, chained by key.

Rows are kept by arrival number ``seq`` in numpy arrays that grow by doubling (the input's
columns, and bookkeeping arrays such as the event time, a deadline or flags). Equal keys
are chained: each row points to the previous row of its key, and one dict (``heads``) maps
a key to its newest row, so finding a key's rows costs a dict look-up and a step per row
of its chain, with no Python loop per row held.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Rows", "chain", "drop_heads", "walk"]


class Rows:
    """The rows of one input by arrival number ``seq``: the input's columns and bookkeeping
    arrays, live from ``base`` to ``end``, in arrays that grow by doubling."""

    def __init__(self, meta: dict[str, Any]):
        self.meta_dtypes = meta
        self.base = self.end = self._off = 0
        self.arrays = {name: np.empty(0, dtype=dt) for name, dt in meta.items()}
        self.cols: dict[str, np.ndarray] = {}
        self.dtypes: dict[str, Any] = {}  # pandas dtype of each column, to rebuild rows

    def __len__(self) -> int:
        return self.end - self.base

    def live(self, name: str, lo: int | None = None) -> np.ndarray:
        return self.arrays[name][(self.base if lo is None else lo) - self._off:
                                 self.end - self._off]

    def at(self, name: str, seqs: np.ndarray) -> np.ndarray:
        return self.arrays[name][seqs - self._off]

    def set(self, name: str, seqs: np.ndarray, value: Any) -> None:
        self.arrays[name][seqs - self._off] = value

    def append(self, frame: pd.DataFrame, meta: dict[str, np.ndarray]) -> int:
        n, seq0 = len(frame), self.end
        if not len(self):
            self.cols, self.dtypes = {}, {}
        self._room(n)
        i = seq0 - self._off
        for name, values in meta.items():
            self.arrays[name][i:i + n] = values
        cap = len(self.arrays["t"])
        for c in frame.columns:
            s = frame[c]
            a = s.to_numpy() if isinstance(s.dtype, np.dtype) else s.to_numpy(dtype=object)
            if c not in self.cols:
                self.cols[c] = np.empty(cap, dtype=a.dtype if not len(self) else object)
                self.dtypes[c] = s.dtype if not len(self) else np.dtype(object)
            elif self.dtypes[c] != s.dtype:  # the schema changed: keep values as objects
                self.cols[c], self.dtypes[c] = self.cols[c].astype(object), np.dtype(object)
            col = self.cols[c]
            col[i:i + n] = a if col.dtype == a.dtype else a.astype(col.dtype)
        for c in self.cols.keys() - set(frame.columns):  # a column this batch lacks
            if self.cols[c].dtype != object:
                self.cols[c], self.dtypes[c] = self.cols[c].astype(object), np.dtype(object)
            self.cols[c][i:i + n] = None
        self.end += n
        return seq0

    def _room(self, n: int) -> None:
        live = len(self)
        cap = len(self.arrays["t"])
        if self.end - self._off + n <= cap:
            return
        new = max(1024, 2 * (live + n))
        lo, hi = self.base - self._off, self.end - self._off
        for store in (self.arrays, self.cols):
            for name, a in store.items():
                b = np.empty(new, dtype=a.dtype)
                b[:live] = a[lo:hi]
                store[name] = b
        self._off = self.base

    def free(self, upto: int) -> None:
        """Forget the rows before ``upto`` (object slots are cleared for the collector)."""
        lo, hi = self.base - self._off, upto - self._off
        for store in (self.arrays, self.cols):
            for a in store.values():
                if a.dtype == object:
                    a[lo:hi] = None
        self.base = upto

    def rows(self, seqs: np.ndarray) -> pd.DataFrame:
        idx = seqs - self._off
        data = {}
        for c, a in self.cols.items():
            dt = self.dtypes[c]
            data[c] = a[idx] if isinstance(dt, np.dtype) else pd.array(a[idx], dtype=dt)
        return pd.DataFrame(data, index=pd.RangeIndex(len(seqs)), copy=False)

    def snapshot(self) -> dict[str, Any]:
        return {"base": self.base, "end": self.end,
                "arrays": {k: self.live(k).copy() for k in self.arrays},
                "cols": {k: a[self.base - self._off:self.end - self._off].copy()
                         for k, a in self.cols.items()},
                "dtypes": dict(self.dtypes)}

    def restore(self, snap: dict[str, Any]) -> None:
        self.base = self._off = snap["base"]
        self.end = snap["end"]
        self.arrays = {k: v.copy() for k, v in snap["arrays"].items()}
        self.cols = {k: v.copy() for k, v in snap["cols"].items()}
        self.dtypes = dict(snap["dtypes"])


def chain(heads: dict, keys: np.ndarray, seq0: int) -> np.ndarray:
    """For new rows ``seq0, seq0 + 1, ...`` of ``keys``: the previous row of each key (-1:
    none), and ``heads`` (key -> newest row) updated."""
    n = len(keys)
    codes, uniq = pd.factorize(keys)
    prev = np.empty(n, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    starts = np.r_[True, sc[1:] != sc[:-1]]
    prev[order[1:]] = np.where(starts[1:], -1, seq0 + order[:-1])
    ulist = uniq.tolist() if hasattr(uniq, "tolist") else list(uniq)
    before = _lookup(heads, ulist)
    firsts = order[starts]
    prev[firsts] = before[codes[firsts]]
    lasts = order[np.r_[starts[1:], True]]
    heads.update(zip([ulist[c] for c in codes[lasts]], (seq0 + lasts).tolist(), strict=True))
    return prev


def _lookup(heads: dict, keys: list) -> np.ndarray:
    """The newest row of each key (-1: none), one C-level pass over the keys."""
    return np.array(list(map(heads.get, keys, repeat(-1))), dtype=np.int64).reshape(-1)


def walk(heads: dict, keys: Any, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """Every (query index, row seq) along the chains of ``keys``' live rows, newest first."""
    if not heads or not len(rows):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    cur = _lookup(heads, keys)
    q = np.flatnonzero(cur >= rows.base)
    cur = cur[q]
    qs, ss = [], []
    while len(cur):
        qs.append(q)
        ss.append(cur)
        cur = rows.at("prev", cur)
        keep = cur >= rows.base
        q, cur = q[keep], cur[keep]
    if not qs:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(qs), np.concatenate(ss)


def drop_heads(heads: dict, rows: Rows, upto: int) -> None:
    """Remove the keys whose newest row is before ``upto`` (their whole chain goes)."""
    seqs = range(rows.base, upto)
    for k, s in zip(rows.live("key")[:upto - rows.base].tolist(), seqs, strict=True):
        if heads.get(k) == s:
            del heads[k]
