"""Bounded time series: what the monitor keeps, and how it hands them out as DataFrames.

Bounds in bytes, per stage: ``SeriesStore`` keeps the last ``maxlen`` report rows (7,200 by
default, an hour of reports every half second), each with its counters, gauges and its
batches' latencies as a :class:`LatencyHistogram` of at most ``LatencyHistogram.NBINS``
bins (6 bytes each: at most ~3.1 KB a row, ~22 MB a stage, and far less in practice, as a
report's latencies fall in a few dozen bins); a row used to keep up to 4,096 latencies as
float64, 32 KB. ``Reservoir`` is a fixed ``size`` of float64s.
"""

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


class LatencyHistogram:
    """Latencies (seconds) as counts in log-spaced bins, each ``GROWTH`` (5%) wider than the
    one before, from ``LO`` (1 µs) to ~18 hours; smaller values count in the first bin,
    larger ones in the last. Only the bins in use are kept (``uint16`` bin, ``uint32``
    count), so ``nbytes <= 6 * min(len(values), NBINS)``. A quantile is read in the bin it
    falls in, its values taken as spread evenly there (in log scale): within one bin (5%) of
    the sample's value of that rank; measured within 2.2% of ``np.quantile`` for p50, p95
    and p99 of 4,096 log-normal latencies (sigma 0.5).

    Examples
    --------
    >>> h = LatencyHistogram.of(np.full(4096, 0.002))
    >>> h.nbytes, h.count, round(h.quantiles_ms()["p50_ms"], 2)
    (6, 4096, 1.97)
    >>> both = LatencyHistogram.merge([h, LatencyHistogram.of([0.1])])
    >>> both.count, round(both.quantiles_ms()["p99_ms"], 2)
    (4097, 2.02)
    """

    LO = 1e-6
    GROWTH = 1.05
    NBINS = 512
    __slots__ = ("bins", "counts")

    def __init__(self, bins: np.ndarray, counts: np.ndarray):
        self.bins = bins
        self.counts = counts

    @classmethod
    def of(cls, seconds: np.ndarray | list[float]) -> LatencyHistogram:
        x = np.asarray(seconds, dtype="float64").ravel()
        x = x[~np.isnan(x)]
        idx = np.floor(np.log(np.maximum(x, cls.LO) / cls.LO) / np.log(cls.GROWTH))
        idx = np.clip(idx, 0, cls.NBINS - 1).astype(np.uint16)
        bins, counts = np.unique(idx, return_counts=True)
        return cls(bins.astype(np.uint16), counts.astype(np.uint32))

    @classmethod
    def merge(cls, parts: list[LatencyHistogram]) -> LatencyHistogram:
        if not parts:
            return cls(np.empty(0, np.uint16), np.empty(0, np.uint32))
        total = np.bincount(np.concatenate([p.bins for p in parts]).astype(np.int64),
                            weights=np.concatenate([p.counts for p in parts]),
                            minlength=cls.NBINS)
        bins = np.flatnonzero(total)
        return cls(bins.astype(np.uint16), total[bins].astype(np.uint32))

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    @property
    def nbytes(self) -> int:
        return int(self.bins.nbytes + self.counts.nbytes)

    def quantiles_ms(self) -> dict[str, float]:
        """p50/p95/p99 in milliseconds (NaN without values)."""
        names = [f"p{round(q * 100)}_ms" for q in LATENCY_QUANTILES]
        if self.bins.size == 0:
            return dict.fromkeys(names, np.nan)
        counts = self.counts.astype(np.float64)
        cum = np.cumsum(counts)
        target = np.asarray(LATENCY_QUANTILES) * cum[-1]
        at = np.minimum(np.searchsorted(cum, target, "left"), len(cum) - 1)
        frac = np.clip((target - (cum[at] - counts[at])) / counts[at], 0.0, 1.0)
        value = self.LO * self.GROWTH ** (self.bins[at] + frac)  # spread evenly in the bin
        return {name: float(v * 1000.0) for name, v in zip(names, value, strict=True)}


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
