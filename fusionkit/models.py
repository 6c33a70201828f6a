"""The model registry seen from the notebook: versions, rollback, pin."""

from __future__ import annotations

from typing import Any

import pandas as pd
import ray

from fusionkit._rpc import get, through_restart
from fusionkit.connect import call, handles
from fusionkit.errors import StageNotFoundError
from fusionkit.runtime.records import Event


def _registry() -> Any:
    return handles()["registry"]


def _ask(method: str, *args: Any, timeout: float = 60.0) -> Any:
    """Call the registry; wait through a restart of its process (it reloads from disk)."""
    return through_restart(lambda: get(getattr(_registry(), method).remote(*args)), timeout)


def models(name: str) -> pd.DataFrame:
    """A train stage's versions: lineage, metrics at publish, checksum, which one is live."""
    return _ask("table", name)


def live_version(name: str) -> int | None:
    version, _ = _ask("live", name)
    return version


def rollback(name: str, version: int) -> dict[str, Any]:
    """Make an earlier version live again; serve stages switch to it at once."""
    return _ask("rollback", name, int(version))


def pin(name: str, version: int) -> dict[str, Any]:
    """Keep ``version`` live until ``unpin``; newer versions are stored but do not go live."""
    return _ask("pin", name, int(version))


def unpin(name: str) -> dict[str, Any] | None:
    """Let new versions go live again (the newest published one becomes live)."""
    return _ask("unpin", name)


def model(name: str, version: int | None = None, *, into: Any = None) -> Any:
    """A version of train stage ``name``'s model (the live one by default), loaded in this
    process: to inspect it, predict offline, or keep it.

    River and scikit-learn models come back as fusionkit learners (the estimator itself is
    ``.model``). A model of your own whose ``get_state`` returns its own bytes is restored
    with ``set_state`` into ``into``, a fresh object of the same class, which is returned.
    """
    from fusionkit.errors import ModelNotFoundError
    from fusionkit.training.protocol import load_state

    if version is None:
        version = live_version(name)
        if version is None:
            raise ModelNotFoundError(f"{name!r} has no live version yet")
    state = _ask("state", name, int(version))
    if into is not None:
        into.set_state(state)
        return into
    return load_state(state)


def publish(name: str) -> int:
    """Publish a version of a train stage now, whatever its schedule."""
    return call("publish_now", name)


def freshness(name: str, publish: bool = False, since: float | None = None) -> dict[str, float]:
    """End-to-end freshness of a model's events: from ingest to the first answer by a version
    that learned them (p50/p95/p99 in ms, over every event). ``publish=True``: to the version
    being published instead. ``since`` (epoch seconds): only events first served after it."""
    key = f"{name}:publish" if publish else name
    return ray.get(handles()["monitor"].freshness_summary.remote(key, since))


def online_metrics(name: str) -> pd.DataFrame:
    """How the predictions *as served* did, per model version: ``n`` served rows whose
    outcome is known, their ``accuracy`` and ``log_loss`` (NaN without probabilities), from
    the labels a join gave them.

    ``name`` is a serve stage (the rows its model answered), a model, or the train stage
    that learns the served rows joined with their outcomes (``fk.serve(..., log=...)``, then
    ``fk.join`` of that log with the outcomes and ``fk.train`` on the join): that train stage
    scores each served prediction against its label as it learns it. With several such
    train stages, the one that scored the most rows of the model answers (``scored_by``).
    Empty until a served row's outcome has been learned."""
    from fusionkit.training.served_scores import most_scored, scores_frame

    # the definitions only (no actor asked): the train stages' reports are read below
    specs = {n: call("spec", n) for n in call("stage_names")}
    served = {s.model for s in specs.values() if s.kind == "serve"}
    if name not in specs and name not in served:
        known = ", ".join(sorted(specs)) or "none"
        raise StageNotFoundError(f"no stage or model named {name!r} (stages: {known})")
    kind = specs[name].kind if name in specs else None
    model_name = specs[name].model if kind == "serve" else None if kind == "train" else name
    served = {train: [row for info in call("infos", train) for row in info.get("served", ())]
              for train, s in specs.items()
              if s.kind == "train" and (kind != "train" or train == name)}
    best = most_scored(served, model_name)
    columns = ["model", "version", "n", "accuracy", "log_loss", "scored_by"]
    if best is None:
        return pd.DataFrame(columns=columns)
    return scores_frame(best[1]).assign(scored_by=best[0])[columns]


def freshness_series(name: str, publish: bool = False) -> pd.DataFrame:
    """Freshness per version as it was first served (or published): time, version, quantiles."""
    key = f"{name}:publish" if publish else name
    return ray.get(handles()["monitor"].freshness.remote(key))


def events(since: float | None = None) -> pd.DataFrame:
    """Pipeline events: versions published, rollbacks, pins, pauses, failures, alarms."""
    rows = ray.get(handles()["monitor"].events.remote(since))  # Event.as_dict rows
    return pd.DataFrame([Event.of(r).as_dict() for r in rows], columns=["time", "stage", "kind", "version", "status", "detail"])
