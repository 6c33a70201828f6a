"""Partial aggregates of open windows: what each aggregation keeps, how partial rows merge.

An open window holds, per key, a few numbers per aggregation instead of its events: counts,
sums, extremes, first and last values with their arrival position, and for ``var``/``std``
a count, mean and sum of squared deviations merged with the parallel-variance formula
(Chan et al.). :func:`unit` makes the partials of single events, :func:`reduce` merges
partial rows that share a (window, key) (numpy: one sort, then ``reduceat``), :func:`final`
gives the aggregate when the window fires. Aggregations that cannot be merged from parts
(``nunique``, ``median``, a callable) are not planned here: the window keeps their values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fusionkit.batch import INGEST_TS, OFFSET

__all__ = ["column", "final", "plan", "reduce", "unit"]

# aggregation -> the partial columns it is computed from
_NEEDS = {"sum": ("s",), "count": ("n",), "mean": ("s", "n"), "var": ("n", "mu", "m2"),
          "std": ("n", "mu", "m2"), "min": ("min",), "max": ("max",),
          "first": ("f", "fp"), "last": ("l", "lp"), "size": ("size",)}
_NUMERIC = ("s", "mu")  # partials that only numbers have
_PART_OF = {"sum": "s", "count": "n", "first": "f", "last": "l"}  # partial giving the result


def plan(agg: dict[str, tuple[str, Any]], taken: set[str | None]
         ) -> tuple[dict[str, tuple[str, str | None]], list, dict]:
    """What the aggregations ``agg`` need: the partial columns kept per (window, key)
    (name -> (kind, column)), the aggregates finished from them (out, function, column),
    and the others (pandas named aggregations over the values kept); ``taken`` are the
    output columns an aggregation may not be named."""
    if not agg:
        raise ValueError("agg must name at least one aggregation, e.g. "
                         "{'n': ('clicked', 'count')}")
    parts: dict[str, tuple[str, str | None]] = {"ing": ("ing", None), "off": ("off", None)}
    finals, holistic = [], {}
    for out, spec in agg.items():
        if out in taken:
            raise ValueError(f"aggregation name {out!r} clashes with an output column")
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
            raise ValueError(f"agg[{out!r}] must be a (column, function) pair, "
                             f"e.g. ('price', 'mean'); got {spec!r}")
        col, fn = spec
        if isinstance(fn, str) and fn in _NEEDS:
            parts.update({f"{kind}:{col}": (kind, col) for kind in _NEEDS[fn]})
            finals.append((out, fn, col))
        elif callable(fn) or isinstance(fn, str):
            holistic[out] = pd.NamedAgg(column=col, aggfunc=fn)
        else:
            raise ValueError(f"agg[{out!r}]: unknown function {fn!r}")
    return parts, finals, holistic


def reduce(plan: dict[str, tuple[str, str | None]], keys: list[np.ndarray],
           parts: dict[str, np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Merge the partial rows (columns ``plan`` names) that share ``keys``; the distinct
    keys, sorted, and their merged partials."""
    order = np.lexsort(keys[::-1])
    keys = [k[order] for k in keys]
    change = np.zeros(len(order), dtype=bool)
    change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    starts = np.flatnonzero(change)
    gid = np.cumsum(change) - 1
    out: dict[str, np.ndarray] = {}
    sorted_ = {name: v[order] for name, v in parts.items()}
    for name, (kind, col) in plan.items():
        v = sorted_[name]
        if kind in ("n", "s", "size"):
            out[name] = np.add.reduceat(v, starts)
        elif kind in ("min", "max", "ing", "off"):
            if v.dtype.kind in "biuf":
                ufunc = np.fmin if kind == "min" else np.fmax
                out[name] = ufunc.reduceat(v, starts)
            else:
                out[name] = getattr(pd.Series(v).groupby(gid), kind)().to_numpy()
        elif kind == "mu":  # merge (count, mean, M2) triples: Chan et al.'s formula
            n, m2 = sorted_[f"n:{col}"].astype("float64"), sorted_[f"m2:{col}"]
            total = np.add.reduceat(n, starts)
            mean = np.divide(np.add.reduceat(n * v, starts), total,
                             out=np.zeros(len(starts)), where=total > 0)
            out[name] = mean
            out[f"m2:{col}"] = np.add.reduceat(m2 + n * (v - mean[gid]) ** 2, starts)
        elif kind in ("fp", "lp"):  # the value at the earliest / latest position
            reduce = np.minimum if kind == "fp" else np.maximum
            best = reduce.reduceat(v, starts)
            hit = np.flatnonzero((v == best[gid]) & np.isfinite(v))
            values = sorted_[f"{kind[0]}:{col}"]
            picked = _blank(len(starts), values.dtype)
            picked[gid[hit]] = values[hit]
            out[name], out[f"{kind[0]}:{col}"] = best, picked
    return [k[starts] for k in keys], out


def column(batch: pd.DataFrame, col: str, on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values of ``col`` for the rows ``on``, as numpy, and where they are not missing."""
    s = batch[col]
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "biuf":
        x = s.to_numpy()[on]
        return x, ~np.isnan(x) if x.dtype.kind == "f" else np.ones(len(on), dtype=bool)
    if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        x = s.to_numpy("float64", na_value=np.nan)[on]  # nullable integers, floats, booleans
        return x, ~np.isnan(x)
    x = s.to_numpy()[on]
    return x, ~pd.isna(x)


def unit(kind: str, batch: pd.DataFrame, column: tuple | None, on: np.ndarray,
          pos: np.ndarray) -> np.ndarray:
    """The partial column ``kind`` of single events (each event its own group)."""
    if kind == "ing":
        if INGEST_TS not in batch.columns:
            return np.full(len(on), np.nan)
        return batch[INGEST_TS].to_numpy("float64", na_value=np.nan)[on]
    if kind == "off":
        if OFFSET not in batch.columns:
            return np.full(len(on), -1, dtype=np.int64)
        return batch[OFFSET].to_numpy()[on]
    if kind == "size":
        return np.ones(len(on), dtype=np.int64)
    x, valid = column
    if kind in _NUMERIC and x.dtype.kind not in "biuf":
        raise TypeError(f"cannot sum or average a column of {x.dtype} values; aggregate it "
                        "with count, min, max, first, last or nunique")
    if kind == "n":
        return valid.astype(np.int64)
    if kind == "s":
        return np.where(valid, x, 0) if x.dtype.kind == "f" else x.astype(np.int64)
    if kind == "mu":
        return np.where(valid, x, 0.0).astype("float64")
    if kind == "m2":
        return np.zeros(len(on))
    if kind in ("fp", "lp"):
        return np.where(valid, pos, np.inf if kind == "fp" else -np.inf)
    return x  # min, max, f, l


def _blank(n: int, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return np.full(n, np.nan, dtype=dtype)
    if dtype.kind in "mM":
        return np.full(n, np.datetime64("NaT"), dtype=dtype)
    return np.full(n, np.nan, dtype=object) if dtype.kind == "O" else np.zeros(n, dtype=dtype)


def final(fn: str, col: str, done: dict[str, np.ndarray]) -> np.ndarray:
    """The aggregate ``fn`` of column ``col`` from merged partials."""
    if fn in ("sum", "count", "min", "max", "first", "last", "size"):
        return done[f"{_PART_OF.get(fn, fn)}:{col}"]
    n = done[f"n:{col}"].astype("float64")
    if fn == "mean":
        return np.divide(done[f"s:{col}"], n, out=np.full(len(n), np.nan), where=n > 0)
    var = np.divide(done[f"m2:{col}"], n - 1, out=np.full(len(n), np.nan), where=n > 1)
    return np.sqrt(var) if fn == "std" else var
