"""A serve stage's models side by side on the dashboard: ``fk.compare`` from the status rows.

A serve stage with canaries or shadows has its ``routing`` in its status row, and a train
stage learning its served log joined with outcomes has its actors' comparison sums
(``TrainReport.compared``) in its own: the controller asks every actor for its report once
per status call anyway, so the dashboard gets the comparison with no call of its own. The
figures are those of ``fusionkit.training.comparison.scored_comparison``, the function
``fk.compare`` answers with, so the dashboard and ``fk.compare`` cannot disagree. A serve
stage answering with one model has no routing in its row, and shows nothing of this.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fusionkit.serving.routing import Routing


@dataclass(frozen=True)
class ModelScore:
    """One model's row of the comparison: its role, the served rows of it whose outcome was
    learned, its online accuracy and log loss (NaN without probabilities), and, but for the
    primary, the verdict against the primary."""

    model: str
    role: str
    requests: int
    accuracy: float
    log_loss: float
    verdict: str = ""


@dataclass(frozen=True)
class ComparisonFigures:
    """Serve stage ``stage``'s comparison as ``fk.compare(stage)`` gives it, scored by the
    train stage ``scored_by``; the primary first."""

    stage: str
    scored_by: str
    models: tuple[ModelScore, ...]


def comparison_figures(rows: list[dict[str, Any]]) -> dict[str, ComparisonFigures]:
    """Per serve stage with more than one model, its comparison from the status rows (the
    serve stages' ``routing``, the train stages' ``compared``); none before a train stage
    has scored a row of its models.

    >>> rows = [{"name": "api", "kind": "serve", "routing": {"primary": "a", "canary":
    ...          {"b": 0.5}, "shadow": []}},
    ...         {"name": "learn", "kind": "train", "compared": ({"models": {
    ...          "a": [40, 30, 0, 0.0, 0.0], "b": [40, 20, 0, 0.0, 0.0]}, "pairs": []},)}]
    >>> f = comparison_figures(rows)["api"]
    >>> f.scored_by, [(s.model, s.role, s.requests, s.accuracy) for s in f.models]
    ('learn', [('a', 'primary', 40, 0.75), ('b', 'canary', 40, 0.5)])
    >>> f.models[1].verdict.startswith("b is worse than a: accuracy -0.2500")
    True
    """
    serves = {r["name"]: r["routing"] for r in rows
              if r.get("kind") == "serve" and r.get("routing")}
    if not serves:
        return {}
    # here, not at the top: comparison brings River and SciPy (half a second), which a
    # dashboard without canaries or shadows never needs
    from fusionkit.training.comparison import scored_comparison

    scored = {r["name"]: r["compared"] for r in rows
              if r.get("kind") == "train" and r.get("compared")}
    out = {}
    for stage, routing in serves.items():
        routed = Routing(routing["primary"], tuple(routing.get("canary", {}).items()),
                         tuple(routing.get("shadow", ())))
        frame = scored_comparison(scored, routed.primary, routed.roles())
        if not len(frame):
            continue
        models = tuple(ModelScore(str(r["model"]), str(r["role"]), int(r["requests"]),
                                  float(r["accuracy"]), float(r["log_loss"]),
                                  r["verdict"] if isinstance(r["verdict"], str) else "")
                       for r in frame.to_dict("records"))
        out[stage] = ComparisonFigures(stage, frame.attrs["scored_by"], models)
    return out


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def comparison_table(figures: ComparisonFigures, colour: Callable[[str], str],
                     trend: dict[str, str] | None = None) -> str:
    """The comparison as an escaped HTML table: per model its role, requests, accuracy, log
    loss and verdict, each model's name in its colour (its train stage's); with ``trend``
    (``{model: HTML}``, e.g. a sparkline), a column of it after the accuracy."""
    rows = "".join(
        f"<tr><td><span style='color:{colour(s.model)}'>●</span> {html.escape(s.model)}</td>"
        f"<td>{html.escape(s.role)}</td><td style='text-align:right'>{s.requests:,}</td>"
        f"<td style='text-align:right'>{_number(s.accuracy)}</td>"
        + (f"<td>{trend.get(s.model, '')}</td>" if trend is not None else "")
        + f"<td style='text-align:right'>{_number(s.log_loss)}</td>"
        f"<td>{html.escape(s.verdict)}</td></tr>" for s in figures.models)
    names = ("model", "role", "requests", "accuracy",
             *(("accuracy over time",) if trend is not None else ()), "log loss", "verdict")
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in names)
    return (f"<div class='fk-compare'><b>{html.escape(figures.stage)}</b>: models compared on "
            f"the same traffic, scored by <code>{html.escape(figures.scored_by)}</code> "
            f"(fk.compare({html.escape(repr(figures.stage))}))"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")
