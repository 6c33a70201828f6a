"""Everything a live view needs from the monitor, in one call, incrementally.

A dashboard polls a few times a second. Asking for each stage's metrics, the freshness of
each model, the pipeline events and the current rates separately would cost a Ray call
each; :func:`snapshot` gathers them in one reply that holds only what is new since the
previous one. Time buckets are handed out once, when they are complete (every actor has
reported into them), so a view never sees a bucket twice or half-filled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fusionkit._clock import now
from fusionkit.monitor.series import LatencyHistogram

COUNTERS = ("events_in", "events_out", "dead_letters", "late", "shed", "requests", "errors")
RATES = {"events_in": "rate_in", "events_out": "rate_out", "requests": "rate_requests"}
SETTLE = 1.0  # seconds a bucket waits for late reports before it is handed out
DEFAULT_HISTORY = 300.0  # seconds of history in a first snapshot (``since=None``)


def bucket_key(t: float, bucket: float) -> float:
    return round(t / bucket) * bucket


def bucketize(rows: list[dict[str, Any]], bucket: float) -> list[dict[str, Any]]:
    """Report rows summed into time buckets over a stage's actors, in time order.

    Each bucket has the counters, their rates per second, latency p50/p95/p99 (ms) of the
    batches in it, the number of actors that reported, and the last value of each gauge.
    """
    buckets: dict[float, dict[str, Any]] = {}
    for r in rows:
        key = bucket_key(r["time"], bucket)
        b = buckets.setdefault(key, {"time": key, "interval": 0.0, "_lat": [], "actors": set()})
        b["actors"].add(r.get("actor", 0))
        b["interval"] = max(b["interval"], r.get("interval", bucket))
        for c in COUNTERS:
            if c in r:
                b[c] = b.get(c, 0) + r[c]
        lat = r.get("latency")
        if lat is not None:
            b["_lat"].append(lat if isinstance(lat, LatencyHistogram) else LatencyHistogram.of(lat))
        for k, v in (r.get("values") or {}).items():
            b[k] = v
    out = []
    for key in sorted(buckets):
        b = buckets[key]
        lat = LatencyHistogram.merge(b.pop("_lat"))
        b["actors"] = len(b["actors"])
        interval = b["interval"] or bucket
        for counter, rate in RATES.items():
            if counter in b:
                b[rate] = b[counter] / interval
        b.update(lat.quantiles_ms())
        out.append(b)
    return out


def columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Rows of numbers as float64 columns (a missing value is NaN); other values are dropped."""
    keys: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                keys.setdefault(k, None)
    return {k: np.array([float(r.get(k, np.nan)) if _number(r.get(k)) else np.nan for r in rows],
                        dtype="float64") for k in keys}


def _number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool)


def snapshot(monitor: Any, since: float | None = None,
             settle: float = SETTLE) -> dict[str, Any]:
    """What is new since ``since`` (the ``until`` of the previous snapshot) in ``monitor``
    (a ``Monitor``: this module is below it and reads its series, freshness and events).

    Returns ``{"until", "now", "series", "kinds", "freshness", "events", "rates", "totals"}``:
    ``series`` maps each stage to float64 columns of its complete time buckets in
    ``(since, until]`` (``time``, rates per second, ``p50_ms``/``p99_ms``, gauges such as
    ``accuracy_recent``); ``freshness`` maps each model (and ``model:publish``) to columns of
    the versions first served in that span; ``events`` lists the pipeline events in it;
    ``rates`` and ``totals`` are current. ``since=None`` starts ``DEFAULT_HISTORY`` ago.
    """
    t = now()
    until = t - settle - monitor.bucket / 2
    if since is None:
        since = t - DEFAULT_HISTORY
    since = min(since, until)
    series: dict[str, dict[str, np.ndarray]] = {}
    kinds: dict[str, str] = {}
    for stage in monitor._series.keys():
        rows = monitor._series.rows(stage, since - monitor.bucket)
        if rows:
            kinds[stage] = rows[-1].get("kind", "")
        done = [b for b in bucketize(rows, monitor.bucket) if since < b["time"] <= until]
        if done:
            series[stage] = columns(done)
    freshness = {}
    for key in monitor._freshness.keys():
        rows = [r for r in monitor._freshness.rows(key, since) if r["time"] <= until]
        if rows:
            freshness[key] = columns(rows)
    events = [e for e in monitor.events(since) if e["time"] <= until]
    return {"until": until, "now": t, "series": series, "kinds": kinds,
            "freshness": freshness, "events": events, "rates": monitor.recent_rates(),
            "totals": monitor.totals()}
