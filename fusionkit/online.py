"""Comparing models on live traffic: canary shares, promotion, and the comparison itself.

A serve stage's routing (``fusionkit.serving.routing``) says which model answers which rows
(the primary, canaries by their share) and which answer beside (shadows). Its replicas follow
it through the registry, as they follow a model's live version: a new routing is taken once
every model it names is loaded, by replacing one reference between requests, so a change of
share or a promotion fails and stalls no request (as a version swap does not).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd

from fusionkit.connect import call, handles
from fusionkit.errors import FusionError, NotConnectedError, StageNotFoundError
from fusionkit.runtime.records import Event
from fusionkit.serving.routing import routing_of

log = logging.getLogger("fusionkit")
ROUTE_WAIT = 60.0  # seconds for the replicas to take a new routing (they load its models)


def _serve_spec(name: str) -> Any:
    spec = call("spec", name)
    if spec.kind != "serve":
        raise FusionError(f"{name!r} is a {spec.kind} stage, not a serve stage")
    return spec


def routing_only(spec: Any) -> bool:
    """Whether ``spec`` redefines a running serve stage with only its routing changed
    (primary, canaries, shadows, sticky key): then it is changed live."""
    try:
        old = call("spec", spec.name)
    except (StageNotFoundError, NotConnectedError):  # (not connected: defining says so)
        return False
    if getattr(old, "kind", None) != "serve":
        return False
    same = dataclasses.replace(old, model=spec.model, canary=spec.canary, shadow=spec.shadow,
                               sticky=spec.sticky)
    if same != spec:
        return False
    status = next((r for r in call("status") if r.get("name") == spec.name), {})
    return status.get("status") == "running"


def set_routing(spec: Any) -> int:
    """Give running serve stage ``spec.name`` the routing of ``spec`` (its definition
    recorded with it) and wait until its replicas answer by it. Returns its generation."""
    generation = call("respec_serve", spec)
    _wait_routed(spec, generation)
    return generation


def _wait_routed(spec: Any, generation: int, timeout: float = ROUTE_WAIT) -> None:
    """Until every replica of the stage reports ``generation`` (or a later one)."""
    from fusionkit.serving.client import off_loop
    from fusionkit.serving.deploy import handle

    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = off_loop(lambda: handle(spec.name).info.remote().result(timeout_s=5))
            seen[info["replica"]] = info.get("routing", 0)
        except Exception:
            pass
        if len(seen) >= spec.replicas and min(seen.values()) >= generation:
            return
        time.sleep(0.05)
    raise FusionError(f"serve stage {spec.name!r}: its replicas did not take the new routing "
                      f"within {timeout:.0f} s (they load each model it names first)")


def _event(stage: str, kind: str, detail: str) -> None:
    try:
        handles()["monitor"].event.remote(Event(stage, kind, detail))
    except Exception:  # the change is made; the event is a note of it
        pass


def canary(name: str, share: float | Mapping[str, float]) -> dict[str, Any]:
    """Change the canary share of serve stage ``name`` live: ``fk.canary("ctr-api", 0.2)``
    (its one canary), or ``{"ctr-tree": 0.2}`` (a model not yet a canary becomes one; a
    share of 0 removes one). Sticky users stay where they were unless the share moved past
    them. Returns the routing now in force."""
    spec = _serve_spec(name)
    routing = routing_of(spec)
    if isinstance(share, Mapping):
        shares = dict(share)
    elif len(routing.canary) == 1:
        shares = {routing.canary[0][0]: share}
    else:
        have = ", ".join(m for m, _ in routing.canary) or "none"
        raise FusionError(f"serve stage {name!r} has {len(routing.canary)} canaries ({have}): "
                          f"name the model, e.g. fk.canary({name!r}, {{'<model>': {share!r}}})")
    new = routing.with_share(shares)
    set_routing(dataclasses.replace(spec, canary=new.canary, shadow=new.shadow))
    _event(name, "canary", f"shares {dict(new.canary)}")
    return new.describe()


def promote(name: str, model: str) -> dict[str, Any]:
    """Make ``model`` (a canary or shadow of serve stage ``name``) the model answering every
    request; the former primary and the other canaries and shadows stop answering. The
    replicas already hold its live version, so the swap fails and stalls no request.
    Returns the routing now in force."""
    from fusionkit.models import live_version

    spec = _serve_spec(name)
    new = routing_of(spec).promoted(model)
    if live_version(model) is None:
        raise FusionError(f"cannot promote {model!r}: it has no live version yet")
    set_routing(dataclasses.replace(spec, model=model, canary=(), shadow=()))
    _event(name, "promote", f"{model} answers (was {spec.model})")
    return new.describe()


def compare(name: str) -> pd.DataFrame:
    """The models of serve stage ``name`` side by side on its traffic and joined outcomes.

    One row per model: ``requests`` (its served rows whose outcome is known), ``accuracy``
    and ``log_loss``; for each model other than the primary, its difference from the
    primary (``<metric>_diff``: it minus the primary; lower log loss is better) with a 95%
    confidence interval (``_low``, ``_high``) and a ``verdict`` sentence stating the sample
    size, "not enough data" until the interval excludes zero. A shadow is compared *paired*
    on the same request ids (``interval="paired"``: normal interval on the mean of the
    per-request differences, standard error sd/sqrt(n)); a canary answers other requests,
    so it is compared unpaired (``interval="welch"``: Welch's standard error
    sqrt(s1^2/n1 + s2^2/n2), normal interval). See ``fusionkit.training.comparison``.

    The scores come from a train stage learning the stage's served log joined with the
    outcomes (``fk.serve(..., log=...)``, ``fk.join``, ``fk.train`` on the join), which
    scores every served row, a shadow's too (it learns each request once); with several
    such train stages, the one that scored the most rows answers (``scored_by`` in the
    frame's ``attrs``). Empty until an outcome has been learned.
    """
    from fusionkit.training.comparison import scored_comparison

    routing = routing_of(_serve_spec(name))
    scored = {stage: [i.get("compared") for i in call("infos", stage)]
              for stage in call("stage_names") if call("spec", stage).kind == "train"}
    return scored_comparison(scored, routing.primary, routing.roles())


def check_canary(name: str) -> list[dict[str, Any]]:
    """The rollback policy, once: every canary of serve stage ``name`` whose online log loss
    is worse than the primary's with confidence (``fk.compare``'s 95% interval of the
    difference wholly above zero, on at least 30 rows:
    ``fusionkit.training.comparison.rollback_due``) gets a share of 0, so the primary
    answers its rows again. What it did is logged (the ``fusionkit`` logger, and an event
    in ``fk.events()``, with the verdict) and returned, one dict per canary rolled back."""
    from fusionkit.training.comparison import rollback_due

    done = []
    for row in compare(name).to_dict("records"):
        if not rollback_due(row):
            continue
        canary(name, {row["model"]: 0})
        what = f"canary {row['model']} rolled back: {row['verdict']}"
        log.warning("fusionkit serve %s: %s", name, what)
        _event(name, "canary-rollback", what)
        done.append({"stage": name, "model": row["model"], "verdict": row["verdict"]})
    return done


class CanaryWatch:
    """``check_canary`` every ``every`` seconds on a thread of this process, until ``stop``
    (or the process ends: it runs where it was started, e.g. the notebook's kernel)."""

    def __init__(self, name: str, every: float):
        self.name, self.every = name, every
        self.actions: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"fk-canary-{name}")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.actions += check_canary(self.name)
            except Exception as exc:  # a stage being redefined, a restart: try again later
                log.warning("fusionkit serve %s: checking the canary: %s", self.name, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)


def watch_canary(name: str, every: float | str = "30s") -> CanaryWatch:
    """Roll the canaries of serve stage ``name`` back when they are worse, checked every
    ``every`` (``check_canary``); ``.stop()`` the returned watch to end it."""
    from fusionkit._duration import parse_duration

    _serve_spec(name)
    return CanaryWatch(name, parse_duration(every))
