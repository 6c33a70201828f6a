"""Look at and operate a pipeline's stages by name: status, metrics, dead letters, peek,
check, a stage's definition and actor ids, stop, pause, resume, scale. ``fusionkit.api`` offers these functions and a
``StageHandle`` offers them as methods; both stand on this module, which stands on the
controller call of ``fusionkit.connect``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd
import ray

from fusionkit._rpc import get
from fusionkit.connect import call, connection, handles
from fusionkit.errors import StageFailedError, StageNotFoundError
from fusionkit.runtime.specs import ServeSpec, StreamSpec, TrainSpec


def status() -> pd.DataFrame:
    """One row per stage: name, kind, status, parallelism, events, rate, dead letters, late
    events (routed aside by a window), events shed under overload, restarts, the last
    checkpoint's age, error, and ``reason``: why a ``waiting`` or ``paused`` stage reads
    nothing (a stream stage waits until something takes its events; see ``stream``). With a
    table stage, its ``keys_held``, ``lookups``, ``misses``, ``lookup_p99_ms`` (the
    recent lookups' 99th percentile in its actor) and ``staleness_p99_ms`` (how long ago
    the recent batches' oldest events were read from the source when the table took them,
    99th percentile); NaN for the other stages."""
    rows = call("status")
    cols = ["name", "kind", "status", "parallelism", "events", "rate", "dead_letters", "late",
            "shed", "on", "restarts", "checkpoint_age_s", "error", "reason"]
    if not rows:
        return pd.DataFrame(columns=cols).set_index("name")
    monitor = handles()["monitor"]
    rates = ray.get(monitor.recent_rates.remote())
    df = pd.DataFrame(rows)
    df["rate"] = df["name"].map(rates).fillna(0.0).round(1)
    info = call("checkpoint_info")
    df["checkpoint_age_s"] = round(info["age_s"], 1) if info["age_s"] is not None else None
    for counter in ("keys_held", "lookups", "misses"):  # a table's: whole numbers, or NA
        if counter in df:
            df[counter] = df[counter].astype("Int64")
    extra = ("keys_held", "lookups", "misses", "lookup_p99_ms", "staleness_p99_ms", "traceback",
             "url")  # a table's, a serve's
    return df[cols + [c for c in extra if c in df]].set_index("name")


def infos(name: str) -> list[dict[str, Any]]:
    """What each actor (or replica) of stage ``name`` reports about itself, one dict each:
    its role and index, process id, node, status, totals, error, and what its kind adds (a
    reader's ``partitions`` and position, a train actor's versions). ``actors`` is the table
    of the same for every stage."""
    return call("infos", name)


def spec(name: str) -> StreamSpec | TrainSpec | ServeSpec:
    """Stage ``name``'s definition as the controller holds it: what ``fk.stream``,
    ``fk.train`` or ``fk.serve`` was given (after the defaults and checks), and what a
    restarted actor, a restarted controller and ``fk.restore`` start it from again."""
    return call("spec", name)


def actor_ids(name: str) -> list[str]:
    """The Ray actor ids of stage ``name``'s actors (a stream stage's reader first), as Ray's
    own tools show them. A stage defined again gets new actors, so new ids; a serve stage's
    replicas are Ray Serve's and not listed (``infos`` reports on them)."""
    ids = call("actors").get(name)
    if ids is None:
        spec(name)  # an unknown stage: the controller's error, with "did you mean"
        ids = call("actors").get(name, [])
    return list(ids)


def metrics(name: str, since: float | None = None) -> pd.DataFrame:
    """A stage's time series: events in and out, rates, latency p50/p95/p99, its gauges."""
    infos(name)  # raises a clear error for an unknown stage
    return ray.get(handles()["monitor"].metrics.remote(name, since))


def stop(name: str | None = None) -> list[str]:
    """Stop one stage, or every stage with no name."""
    return call("stop", name)


def pause(name: str) -> str:
    """Pause stage ``name``: a stream stops reading (upstream backs up); a train stage stops
    taking batches and publishing versions (``fk.publish`` still does), and the version it
    had on its way to the registry has landed when this returns. Serve stages cannot be
    paused."""
    return call("pause", name)


def resume(name: str) -> str:
    """Resume a paused stage where it stopped. A stream stage waiting for a consumer (or
    paused with none) runs alone from then on, as with ``start=True``."""
    return call("resume", name)


def scale(name: str, n: int) -> dict[str, Any]:
    """Change a stream stage's parallelism or a serve stage's replicas."""
    return call("scale", name, n)


def dead_letters(name: str, limit: int | None = None) -> pd.DataFrame:
    """The events a stage could not take, each with the reason and the raw payload.

    ``size`` is the payload's size in bytes; a payload over 1 KiB is kept as a preview of
    its start (``truncated``). Each actor keeps its newest 4 MiB of dead letters, with its
    checkpoints, so they outlive a recovery; an actor's info counts the older ones dropped
    (``dead_letters_dropped``)."""
    items = call("dead_letters", name, limit)
    return pd.DataFrame(items, columns=["time", "stage", "offset", "reason", "payload", "size",
                                        "truncated"])


def peek(name: str, n: int = 5) -> pd.DataFrame | None:
    """The last ``n`` events a stream stage (or the examples a join stage) emitted; before
    a stream's first (a stage waiting for a consumer), the first ``n`` of the sample its
    definition ran through its chain. Of a train stage: the last ``n`` events (up to 1,000)
    as its model learned them, with the features ``fk.features`` made."""
    return call("peek", name, n)


def check(name: str | None = None) -> None:
    """Raise ``StageFailedError`` (with the remote traceback) if a stage has failed."""
    rows = call("status")
    for row in rows:
        if (name is None or row["name"] == name) and row["status"] == "failed":
            raise StageFailedError(row["name"], row["error"] or "failed", row["traceback"] or "")


def rows(names: Iterable[str] | None = None, timeout: float | None = None
         ) -> list[dict[str, Any]]:
    """The rows ``status()`` is made of, as plain dicts (no rates, no checkpoint age): of
    every stage, or of ``names`` only, each asked of its own actors alone, all at once
    (unknown names are left out). What the magics' live views and the dashboard poll."""
    if names is None:
        return call("status", timeout=timeout)
    controller = connection().controller
    out = []
    for ref in [controller.summary.remote(n) for n in names]:
        try:
            out.append(get(ref, timeout))
        except StageNotFoundError:
            continue
    return out
