"""The model registry seen from the notebook: versions, rollback, pin."""

from __future__ import annotations

from typing import Any

import pandas as pd
import ray

from fusionkit.api import call, handles


def _registry() -> Any:
    return handles()["registry"]


def _get(ref: Any) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def models(name: str) -> pd.DataFrame:
    """A train stage's versions: lineage, metrics at publish, checksum, which one is live."""
    return _get(_registry().table.remote(name))


def live_version(name: str) -> int | None:
    version, _ = _get(_registry().live.remote(name))
    return version


def rollback(name: str, version: int) -> dict[str, Any]:
    """Make an earlier version live again; serve stages switch to it at once."""
    return _get(_registry().rollback.remote(name, int(version)))


def pin(name: str, version: int) -> dict[str, Any]:
    """Keep ``version`` live until ``unpin``; newer versions are stored but do not go live."""
    return _get(_registry().pin.remote(name, int(version)))


def unpin(name: str) -> dict[str, Any] | None:
    """Let new versions go live again (the newest published one becomes live)."""
    return _get(_registry().unpin.remote(name))


def publish(name: str) -> int:
    """Publish a version of a train stage now, whatever its schedule."""
    return call("publish_now", name)


def freshness(name: str, publish: bool = False) -> dict[str, float]:
    """End-to-end freshness of a model's events: from ingest to the first answer by a version
    that learned them (p50/p95/p99 in ms, over every event). ``publish=True``: to the version
    being published instead."""
    key = f"{name}:publish" if publish else name
    return ray.get(handles()["monitor"].freshness_summary.remote(key))


def freshness_series(name: str, publish: bool = False) -> pd.DataFrame:
    """Freshness per version as it was first served (or published): time, version, quantiles."""
    key = f"{name}:publish" if publish else name
    return ray.get(handles()["monitor"].freshness.remote(key))


def events(since: float | None = None) -> pd.DataFrame:
    """Pipeline events: versions published, rollbacks, pins, pauses, failures, alarms."""
    rows = ray.get(handles()["monitor"].events.remote(since))
    return pd.DataFrame(rows, columns=["time", "stage", "kind", "version", "status", "detail"])
