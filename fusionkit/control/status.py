"""What a stage reports: each actor's own info, and the stage's one row of ``fk.status()``.

An actor that does not answer within ``INFO_TIMEOUT`` shows as failed (unreachable) rather
than holding up the whole status; a serve stage reports its replicas, or that it is still
deploying, or why its deployment failed.
"""

from __future__ import annotations

from typing import Any

import ray

from fusionkit.control.table import StageRecord

INFO_TIMEOUT = 3.0
ORDER = ("failed", "starting", "paused", "waiting", "running", "finished", "stopped")


def _placeholder(rec: StageRecord, status: str, error: str | None = None,
                 traceback: str = "", index: int = 0) -> dict[str, Any]:
    return {"stage": rec.name, "index": index, "status": status, "error": error,
            "traceback": traceback, "totals": {}, "dead_letters": 0}


def infos(rec: StageRecord) -> list[dict[str, Any]]:
    """Each actor's (or serve replica's) report of a stage."""
    if rec.kind == "serve":
        from fusionkit.serving.deploy import replica_infos

        if rec.extra.get("deploying"):
            return [_placeholder(rec, "starting")]
        if "error" in rec.extra:
            return [_placeholder(rec, "failed", rec.extra["error"], rec.extra["traceback"])]
        return replica_infos(rec.spec)
    out = []
    refs = [a.info.remote() for a in rec.all_actors]
    for i, ref in enumerate(refs):
        try:
            out.append(ray.get(ref, timeout=INFO_TIMEOUT))
        except Exception as exc:
            out.append(_placeholder(rec, "failed", index=i,
                                    error=f"actor unreachable: {type(exc).__name__}: {exc}"))
    return out


def summary(rec: StageRecord, reports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A stage's row of ``status()``: the most telling status of its actors, their counts
    summed, the first error."""
    reports = infos(rec) if reports is None else reports
    statuses = [i["status"] for i in reports]
    status = next((s for s in ORDER if s in statuses), "running")
    failed = next((i for i in reports if i["status"] == "failed"), None)
    # a running train stage whose publishing fails says so: shown, not a failure
    warned = next((i for i in reports if i.get("publish_error")), None)
    events = sum(i.get("totals", {}).get("events_in", 0) for i in reports)
    return {
        "name": rec.name, "kind": rec.kind, "status": status,
        "reason": (getattr(rec.spec, "waiting", None) if status == "waiting"
                   else f"paused: fk.resume({rec.name!r}) resumes it" if status == "paused"
                   else None),
        "parallelism": len(rec.actors) if rec.kind != "serve" else rec.spec.replicas,
        "events": int(events),
        "dead_letters": int(sum(i.get("dead_letters", 0) for i in reports)),
        "late": int(sum(i.get("totals", {}).get("late", 0) for i in reports)),
        "shed": int(sum(i.get("totals", {}).get("shed", 0) for i in reports)),
        "on": rec.upstream or (rec.spec.model if rec.kind == "serve"
                               else " + ".join(rec.inputs) if rec.kind == "join" else None),
        "error": failed["error"] if failed else warned["publish_error"] if warned else None,
        "traceback": failed.get("traceback") if failed else None,
        "created": rec.created,
        "restarts": int(rec.extra.get("restarts", 0)),
        "actors": [a._actor_id.hex() for a in rec.all_actors],
        **{k: v for k, v in rec.extra.items() if k in ("url", "route")},
    }
