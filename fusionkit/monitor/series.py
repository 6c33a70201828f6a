"""Bounded time series: what the monitor keeps, and how it hands them out as DataFrames."""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

LATENCY_QUANTILES = (0.5, 0.95, 0.99)


def quantiles_ms(samples_s: np.ndarray | list[float]) -> dict[str, float]:
    """p50/p95/p99 of latency samples given in seconds, returned in milliseconds."""
    arr = np.asarray(samples_s, dtype="float64")
    if arr.size == 0:
        return {"p50_ms": np.nan, "p95_ms": np.nan, "p99_ms": np.nan}
    q = np.quantile(arr, LATENCY_QUANTILES) * 1000.0
    return {"p50_ms": float(q[0]), "p95_ms": float(q[1]), "p99_ms": float(q[2])}


class Reservoir:
    """A fixed-size uniform sample of a stream of floats (Vitter's algorithm R, vectorized).

    Examples
    --------
    >>> r = Reservoir(100, seed=0)
    >>> r.extend(np.arange(10_000.0))
    >>> len(r.values()), r.count
    (100, 10000)
    """

    def __init__(self, size: int = 10_000, seed: int = 0):
        self.size = size
        self.seed = seed
        self.count = 0
        self._buf = np.empty(size, dtype="float64")
        self._rng = np.random.default_rng(seed)

    def extend(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype="float64").ravel()
        if values.size == 0:
            return
        free = max(0, min(self.size - self.count, values.size))
        if free:
            self._buf[self.count : self.count + free] = values[:free]
        rest = values[free:]
        if rest.size:
            # the i-th element overall (0-based) replaces a slot with probability size/(i+1)
            idx = np.arange(self.count + free, self.count + free + rest.size)
            slots = (self._rng.random(rest.size) * (idx + 1)).astype("int64")
            keep = slots < self.size
            self._buf[slots[keep]] = rest[keep]
        self.count += values.size

    def values(self) -> np.ndarray:
        return self._buf[: min(self.count, self.size)].copy()


class SeriesStore:
    """Per-key bounded deques of report rows (dicts), turned into DataFrames on demand."""

    def __init__(self, maxlen: int = 7200):
        self.maxlen = maxlen
        self._rows: dict[str, deque[dict[str, Any]]] = {}

    def append(self, key: str, row: dict[str, Any]) -> None:
        self._rows.setdefault(key, deque(maxlen=self.maxlen)).append(row)

    def keys(self) -> list[str]:
        return list(self._rows)

    def rows(self, key: str, since: float | None = None) -> list[dict[str, Any]]:
        rows = self._rows.get(key, ())
        if since is None:
            return list(rows)
        return [r for r in rows if r["time"] > since]

    def drop(self, key: str) -> None:
        self._rows.pop(key, None)


def to_local_time(seconds: pd.Series) -> pd.Series:
    """Epoch seconds as timezone-aware timestamps in the machine's local time zone."""
    local = datetime.now().astimezone().tzinfo
    return pd.to_datetime(seconds, unit="s", utc=True).dt.tz_convert(local)
