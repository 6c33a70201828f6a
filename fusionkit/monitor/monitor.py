"""The monitor: one place that receives every stage's metrics, in batches, and keeps them.

Stages send a report every half second or so (never per event): counters for the interval,
the processing latencies of the batches they handled, and gauges such as prequential
accuracy. The monitor keeps bounded time series and hands them out as DataFrames. It is a
plain class so it can be tested directly; the runtime runs it as a Ray actor.

Everything it keeps is bounded in bytes (``fusionkit.monitor.series`` gives the figures):
per stage, the last ``maxlen`` report rows with their latencies as histograms (at most
~3.1 KB a row) and a 20,000-sample latency reservoir (160 KB); per model, 50,000 freshness
samples (400 KB), the recent freshness chunks (at most 2,000 x 1,000 float64s, 16 MB) and
``maxlen`` rows of per-version quantiles; the last 5,000 pipeline events, each detail cut
to ``DETAIL_CHARS``.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections import deque
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._clock import now
from fusionkit.drift_detection.store import DriftStore, describe
from fusionkit.monitor.recent import RecentSamples
from fusionkit.monitor.series import LatencyHistogram, Reservoir, SeriesStore, quantiles_ms
from fusionkit.monitor.snapshot import COUNTERS, bucketize
from fusionkit.monitor.snapshot import snapshot as _snapshot
from fusionkit.runtime.records import Event

DETAIL_CHARS = 2000  # of an event's detail (a failure's message may quote a whole payload)


def _locked(method):
    """One call at a time on the monitor's stores: the actor answers up to 16 calls at once,
    and reports come in while snapshots and queries read the same stores."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class Monitor:
    """Receives stage reports; serves time series, freshness and pipeline events.

    Examples
    --------
    >>> m = Monitor()
    >>> m.report([{"time": 10.0, "stage": "s", "kind": "stream", "actor": 0, "interval": 0.5,
    ...            "events_in": 500, "events_out": 500, "latency": [0.001, 0.002]}])
    >>> df = m.metrics("s")
    >>> int(df["events_in"].iloc[0]), float(df["rate_in"].iloc[0])
    (500, 1000.0)
    """

    def __init__(self, maxlen: int = 7200, bucket: float = 0.5):
        self.maxlen = maxlen
        self.bucket = bucket
        self._series = SeriesStore(maxlen)
        self._totals: dict[str, dict[str, float]] = {}
        self._latency: dict[str, Reservoir] = {}
        self._freshness = SeriesStore(maxlen)
        self._freshness_all: dict[str, Reservoir] = {}
        self._freshness_recent: dict[str, RecentSamples] = {}
        self._events: deque[Event] = deque(maxlen=5000)
        self._lock = threading.RLock()  # the actor answers up to 16 calls at once
        self._drift = DriftStore()
        self.reports = 0

    # -- intake ---------------------------------------------------------------------------
    @_locked
    def report(self, rows: list[dict[str, Any]]) -> None:
        """Take a list of report rows from one actor (one Ray call per flush)."""
        for row in rows:
            stage = row["stage"]
            lat = row.get("latency")
            if lat is not None:  # kept as a histogram: a few hundred bytes, not 32 KB
                row = {**row, "latency": LatencyHistogram.of(lat)}
            self._series.append(stage, row)
            totals = self._totals.setdefault(stage, {})
            for c in COUNTERS:
                if c in row:
                    totals[c] = totals.get(c, 0) + row[c]
            if lat is not None and len(lat):
                self._latency.setdefault(stage, Reservoir(20_000)).extend(np.asarray(lat))
            self.reports += 1

    @_locked
    def report_freshness(self, model: str, version: int, served_at: float,
                         ingest_ts: np.ndarray) -> None:
        """Events learned by ``version`` were first answered at ``served_at``."""
        fresh = served_at - np.asarray(ingest_ts, dtype="float64")
        if fresh.size == 0:
            return
        self._freshness_all.setdefault(model, Reservoir(50_000)).extend(fresh)
        self._freshness_recent.setdefault(model, RecentSamples()).add(served_at, fresh)
        row = {"time": served_at, "version": version, "n": int(fresh.size),
               **quantiles_ms(fresh), "max_ms": float(fresh.max() * 1000.0)}
        self._freshness.append(model, row)

    @_locked
    def event(self, record: Event | dict[str, Any]) -> None:
        """A pipeline event: a version published, a rollback, an alarm, a failure. An
        :class:`~fusionkit.runtime.records.Event`, or a dict of its fields; stamped with the
        time it arrives if it has none."""
        event = Event.of(record)
        changes: dict[str, Any] = {}
        if event.time is None:
            changes["time"] = now()
        if isinstance(event.detail, str) and len(event.detail) > DETAIL_CHARS:
            changes["detail"] = event.detail[:DETAIL_CHARS] + "…"
        self._events.append(dataclasses.replace(event, **changes) if changes else event)

    @_locked
    def drift_report(self, stage: str, rows: list[dict[str, Any]],
                     alarms: list[dict[str, Any]]) -> None:
        """Drift rows and alarms of a train stage; each new alarm is also an event."""
        for a in self._drift.add(stage, rows, alarms):
            self.event({"time": a["time"], "stage": stage, "kind": "alarm",
                        "status": a["kind"], "detail": describe(a)})

    @_locked
    def forget(self, stage: str) -> None:
        """Drop a stage's series (it was stopped and removed)."""
        self._series.drop(stage)
        self._drift.drop(stage)
        self._totals.pop(stage, None)
        self._latency.pop(stage, None)

    # -- queries --------------------------------------------------------------------------
    @_locked
    def stages(self) -> list[str]:
        return self._series.keys()

    @_locked
    def totals(self, stage: str | None = None) -> dict[str, Any]:
        if stage is not None:
            return dict(self._totals.get(stage, {}))
        return {k: dict(v) for k, v in self._totals.items()}

    @_locked
    def metrics(self, stage: str, since: float | None = None) -> pd.DataFrame:
        """A stage's time series, one row per time bucket, summed over its actors."""
        rows = self._series.rows(stage, since)
        if not rows:
            return pd.DataFrame(columns=["time", "events_in", "events_out", "rate_in",
                                         "rate_out", "p50_ms", "p95_ms", "p99_ms"])
        return pd.DataFrame(bucketize(rows, self.bucket))

    @_locked
    def recent_rates(self, window: float = 2.0) -> dict[str, float]:
        """Events (or requests) per second of each stage over the last ``window`` seconds."""
        cutoff = now() - window
        out = {}
        for stage in self._series.keys():
            rows = self._series.rows(stage, cutoff)
            count = sum(r.get("events_in", 0) + r.get("requests", 0) for r in rows)
            out[stage] = count / window
        return out

    @_locked
    def latency(self, stage: str) -> dict[str, float]:
        """Latency quantiles over a uniform sample of the stage's whole run."""
        res = self._latency.get(stage)
        return quantiles_ms(res.values() if res else [])

    @_locked
    def freshness(self, model: str) -> pd.DataFrame:
        """Per served version: how long its events waited from ingest to first answer."""
        rows = self._freshness.rows(model)
        return pd.DataFrame(rows, columns=["time", "version", "n", "p50_ms", "p95_ms", "p99_ms", "max_ms"])

    @_locked
    def freshness_summary(self, model: str, since: float | None = None) -> dict[str, float]:
        """Freshness quantiles over every event, or over the events first served after
        ``since`` (from the recent versions the monitor keeps)."""
        if since is not None:
            recent = self._freshness_recent.get(model) or RecentSamples()
            return {**recent.quantiles_ms(since), "events": recent.count(since)}
        res = self._freshness_all.get(model)
        vals = res.values() if res else np.empty(0)
        out = quantiles_ms(vals)
        out["events"] = int(res.count) if res else 0
        return out

    @_locked
    def drift(self, stage: str, since: float | None = None) -> pd.DataFrame:
        """A train stage's drift rows over time (``fusionkit.drift_detection.store``)."""
        return self._drift.frame(stage, since)

    @_locked
    def alarms(self, stage: str | None = None, since: float | None = None) -> pd.DataFrame:
        """Drift alarms of one stage, or of every stage."""
        return self._drift.alarm_frame(stage, since)

    @_locked
    def events(self, since: float | None = None) -> list[dict[str, Any]]:
        """The events after ``since``, as rows (``Event.as_dict``: what ``fk.events()`` and
        dashboards show)."""
        return [e.as_dict() for e in self._events if since is None or e.time > since]

    @_locked
    def snapshot(self, since: float | None = None) -> dict[str, Any]:
        """Everything a live dashboard needs that is new since ``since``, in one reply
        (see ``fusionkit.monitor.snapshot``)."""
        return _snapshot(self, since)
