"""What a stage reports: each actor's own info, and the stage's one row of ``fk.status()``.

An actor that does not answer within ``INFO_TIMEOUT`` shows as failed (unreachable) rather
than holding up the whole status; a serve stage reports its replicas, or that it is still
deploying, or why its deployment failed. Both are records (``runtime.reports``) read by
field; the controller's ``infos`` and ``status`` turn them into the public API's dicts.
"""

from __future__ import annotations

import ray

from fusionkit.control.table import StageRecord
from fusionkit.runtime.reports import ActorReport, StageSummary, TableReport, TrainReport
from fusionkit.serving.routing import routing_of

INFO_TIMEOUT = 3.0
ORDER = ("failed", "starting", "paused", "waiting", "running", "finished", "stopped")


def infos(rec: StageRecord) -> list[ActorReport]:
    """Each actor's (or serve replica's) report of a stage."""
    if rec.kind == "serve":
        from fusionkit.serving.deploy import replica_infos

        if rec.extra.get("deploying"):
            return [ActorReport(stage=rec.name, status="starting")]
        if "error" in rec.extra:
            return [ActorReport(stage=rec.name, status="failed", error=rec.extra["error"],
                                traceback=rec.extra["traceback"])]
        return replica_infos(rec.spec)
    out = []
    refs = [a.info.remote() for a in rec.all_actors]
    for i, ref in enumerate(refs):
        try:
            out.append(ray.get(ref, timeout=INFO_TIMEOUT))
        except Exception as exc:
            out.append(ActorReport(stage=rec.name, index=i, status="failed",
                                   error=f"actor unreachable: {type(exc).__name__}: {exc}"))
    return out


def summary(rec: StageRecord, reports: list[ActorReport] | None = None) -> StageSummary:
    """A stage's row of ``status()``: the most telling status of its actors, their counts
    summed, the first error."""
    reports = infos(rec) if reports is None else reports
    statuses = {r.status for r in reports}
    status = next((s for s in ORDER if s in statuses), "running")
    failed = next((r for r in reports if r.status == "failed"), None)
    # a running train stage whose publishing fails says so: shown, not a failure
    warned = next((r for r in reports if isinstance(r, TrainReport) and r.publish_error), None)

    def total(counter: str) -> int:
        return int(sum(r.totals.get(counter, 0) for r in reports))

    tables = [r for r in reports if isinstance(r, TableReport)]

    def table_total(field: str) -> int | None:  # a table's own counts (None: not a table)
        return int(sum(getattr(r, field) for r in tables)) if rec.kind == "table" else None

    return StageSummary(
        name=rec.name, kind=rec.kind, status=status,
        reason=(getattr(rec.spec, "waiting", None) if status == "waiting"
                else f"paused: fk.resume({rec.name!r}) resumes it" if status == "paused"
                else None),
        parallelism=len(rec.actors) if rec.kind != "serve" else rec.spec.replicas,
        events=total("events_in"),
        dead_letters=int(sum(r.dead_letters for r in reports)),
        late=total("late"), shed=total("shed"),
        on=rec.upstream or (rec.spec.model if rec.kind == "serve"
                            else " + ".join(rec.inputs) if rec.kind == "join" else None),
        error=failed.error if failed else warned.publish_error if warned else None,
        traceback=failed.traceback if failed else None,
        created=rec.created,
        restarts=int(rec.extra.get("restarts", 0)),
        actors=[a._actor_id.hex() for a in rec.all_actors],
        url=rec.extra.get("url"), route=rec.extra.get("route"),
        served=tuple(row for r in reports if isinstance(r, TrainReport)
                     for row in r.served) or None,
        compared=tuple(r.compared for r in reports
                       if isinstance(r, TrainReport) and r.compared.get("models")) or None,
        routing=_routing(rec),
        keys_held=table_total("keys_held"), lookups=table_total("lookups"),
        misses=table_total("misses"),
        lookup_p99_ms=_worst([r.lookup_p99_ms for r in tables]),
        staleness_p99_ms=_worst([r.staleness_p99_ms for r in tables]),
    )


def _worst(values: list[float]) -> float | None:
    """The largest of the actors' figures that are known (NaN: none yet); None: no table.

    >>> _worst([float("nan"), 2.0, 1.0]), _worst([]), _worst([float("nan")])
    (2.0, None, nan)
    """
    known = [v for v in values if v == v]
    return max(known) if known else (values[0] if values else None)


def _routing(rec: StageRecord) -> dict | None:
    """A serve stage's routing when it names more than one model (its canaries, shadows)."""
    if rec.kind != "serve":
        return None
    routing = routing_of(rec.spec)
    return routing.describe() if len(routing.models) > 1 else None
