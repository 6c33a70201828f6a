"""Where the dashboard's data comes from: the monitor and the controller, read-only.

One tick costs one monitor call (``Monitor.snapshot``: everything new since the last tick)
and, at most once per ``status_every`` seconds, one controller call (stage status), both in
flight together, and then one for each join stage's counts (its actors' reports). Version lists, dead letters and drift are asked for only when something
says they changed. The feed only reads, so it works as well for a pipeline that another
notebook or process started on the same cluster.
"""

from __future__ import annotations

import logging
from typing import Any

from fusionkit import stages
from fusionkit._clock import monotonic
from fusionkit._rpc import get
from fusionkit.connect import connection
from fusionkit.connect import handles as pipeline_handles

log = logging.getLogger("fusionkit")
CALL_TIMEOUT = 10.0


def _get(refs: Any, timeout: float = CALL_TIMEOUT) -> Any:
    return get(refs, timeout)


class Feed:
    """Reads the pipeline for a dashboard; ``fetch`` is one tick's worth."""

    def __init__(self, status_every: float = 1.0):
        connection()  # NotConnectedError with a plain message if there is none
        handles = pipeline_handles()
        self.monitor = handles["monitor"]
        self.registry = handles["registry"]
        self.status_every = status_every
        self._status_at = -float("inf")
        self._sources: dict[str, str] = {}
        self.calls = 0

    def fetch(self, since: float | None, force_status: bool = False
              ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """(monitor snapshot since ``since``, controller status rows or ``None`` if not due).

        Raises ``NotConnectedError`` once the connection is gone (``fk.shutdown()``): a call
        on a handle after that would make Ray start a new local instance (its auto-init)."""
        connection()
        snapshot = self.monitor.snapshot.remote(since)  # in flight while status is asked
        due = force_status or monotonic() - self._status_at >= self.status_every
        status = stages.rows(timeout=CALL_TIMEOUT) if due else None
        self.calls += 1 + due
        if due:
            self._status_at = monotonic()
        return _get(snapshot), status

    def versions(self, model: str, limit: int = 30) -> list[dict[str, Any]]:
        """The newest versions of a model: version, status, live, pinned, recent metric."""
        self.calls += 1
        table = _get(self.registry.table.remote(model))
        if table is None or len(table) == 0:
            return []
        table = table.tail(limit)
        metric = next((c for c in ("accuracy", "mae", "rmse") if c in table.columns), None)
        rows = []
        for _, r in table.iloc[::-1].iterrows():
            rows.append({"version": int(r["version"]), "status": str(r.get("status", "")),
                         "live": bool(r.get("live", False)), "pinned": bool(r.get("pinned", False)),
                         "metric": metric, "value": float(r[metric]) if metric else float("nan")})
        return rows

    def join_reports(self, stage: str) -> list[dict[str, Any]]:
        """What each actor of join stage ``stage`` reports (its ``JoinReport``, as
        ``fk.infos`` gives it): the join's counts and label delays."""
        self.calls += 1
        return stages.infos(stage)

    def dead_letters(self, stage: str, limit: int = 5) -> list[dict[str, Any]]:
        self.calls += 1
        return stages.dead_letters(stage, limit).to_dict("records")

    def source_label(self, stage: str) -> str:
        """A short name for what a stream stage reads, e.g. ``Synthetic clicks @5,000/s``."""
        if stage not in self._sources:
            try:
                self.calls += 1
                spec = stages.spec(stage)
                info = spec.source.describe()
                info = info if isinstance(info, dict) else {"kind": str(info)}
                label = str(info.get("kind") or type(spec.source).__name__)
                if info.get("name"):
                    label += f" {info['name']}"
                if info.get("rate"):
                    label += f" @{float(info['rate']):,.0f}/s"
            except Exception as exc:  # a source that cannot describe itself still has a box
                log.debug("describing the source of %s: %s", stage, exc)
                label = "source"
            self._sources[stage] = label[:28]
        return self._sources[stage]

    @staticmethod
    def drift(stage: str) -> Any:
        """Drift rows of a train stage, or ``None`` where fusionkit has no drift monitoring."""
        import fusionkit

        fn = getattr(fusionkit, "drift", None)
        if fn is None:
            return None
        return fn(stage)

    @staticmethod
    def watching(stage: str) -> bool:
        """Whether train stage ``stage`` has a drift watch (``fk.watch_drift``)."""
        return getattr(stages.spec(stage), "drift", None) is not None

    @staticmethod
    def drift_available() -> bool:
        import fusionkit

        return callable(getattr(fusionkit, "drift", None))
