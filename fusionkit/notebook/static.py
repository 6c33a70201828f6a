"""The dashboard as static HTML: what nbviewer, GitHub or nbval see instead of the widgets.

A table of the stages as last seen (status, rate, events, dead letters, the headline figure
of each) with a small inline SVG sparkline of each stage's throughput; then, for each serve
stage with canaries or shadows, its models compared (``fk.compare``'s table) with a
sparkline of each model's online accuracy.
"""

from __future__ import annotations

import html
import math
import time

import numpy as np

from fusionkit.notebook.comparing import comparison_table
from fusionkit.notebook.state import DashboardState, Line

STATUS_COLOURS = {"running": "#1a7f37", "paused": "#b35900", "waiting": "#b35900",
                  "starting": "#0969da", "failed": "#cf222e"}


def sparkline(values: np.ndarray, colour: str, width: int = 120, height: int = 24) -> str:
    """An inline SVG polyline of ``values`` (empty string if fewer than two points)."""
    v = np.asarray(values, dtype="float64")
    v = v[np.isfinite(v)][-120:]
    if v.size < 2:
        return ""
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo or 1.0
    xs = np.linspace(1, width - 1, v.size)
    ys = height - 2 - (v - lo) / span * (height - 4)
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
    return (f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}'>"
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' points='{points}'/></svg>")


def _headline(state: DashboardState, name: str) -> str:
    v = state.stages[name]
    if v.kind == "train" and (math.isfinite(v.metric_value) or v.online is not None):
        live = f"live v{v.version}, " if v.version is not None else ""
        text = f"{live}{v.metric or 'accuracy'} {v.metric_value:.3f}"
        if v.online is not None:
            text += f"; as served {v.online.accuracy:.3f} of {v.online.n:,} rows"
        return text
    if v.kind == "join" and v.join is not None:
        c = v.join.counts
        text = (f"pending {c['pending']:,}, joined {c['joined']:,}, timed out "
                f"{c['timed_out']:,}, late {c['late']:,}, orphans {c['orphans']:,}")
        if math.isfinite(v.join.label_delay_p50):
            text += (f"; label delay p50 {v.join.label_delay_p50:.2f} s, "
                     f"p99 {v.join.label_delay_p99:.2f} s")
        return text
    if math.isfinite(v.p99_ms):
        return f"p99 {v.p99_ms:.2f} ms"
    return ""


def snapshot_html(state: DashboardState, address: str) -> str:
    """The stages table; says plainly that the live view needs a widget-enabled front end."""
    rows = []
    for name, v in state.stages.items():
        colour = state.colour(name)
        status_colour = STATUS_COLOURS.get(v.status, "#6e7781")
        win = state.lines.get(Line("throughput", name, name))
        spark = sparkline(win.y, colour) if win is not None else ""
        rows.append(
            f"<tr><td><span style='color:{colour}'>●</span> <b>{html.escape(name)}</b></td>"
            f"<td>{html.escape(v.kind)}</td>"
            f"<td style='color:{status_colour};font-weight:600'>{html.escape(v.status)}</td>"
            f"<td style='text-align:right'>{v.parallelism}</td>"
            f"<td style='text-align:right'>{v.events:,}</td>"
            f"<td style='text-align:right'>{v.rate:,.0f}/s</td>"
            f"<td style='text-align:right'>{v.dead_letters:,}</td>"
            f"<td>{html.escape(_headline(state, name))}</td><td>{spark}</td></tr>")
    if not rows:
        rows.append("<tr><td colspan='9'>no stages yet</td></tr>")
    clock = time.strftime("%H:%M:%S", time.localtime(state.now))
    head = "".join(f"<th style='text-align:left'>{h}</th>" for h in (
        "stage", "kind", "status", "parallelism", "events", "rate", "dead letters", "", "throughput"))
    return (f"<div class='fusionkit-dashboard-snapshot'><b>fusionkit dashboard</b> "
            f"<small>snapshot at {clock}, Ray at <code>{html.escape(address)}</code>; the live "
            f"view needs Jupyter with ipywidgets</small>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"{_comparisons(state)}</div>")


def _comparisons(state: DashboardState) -> str:
    """Each serve stage's models compared, and a sparkline of each one's online accuracy."""
    out = []
    for view in state.stages.values():
        if view.compare is None:
            continue
        trend = {line.stage: sparkline(win.y, state.colour(line.stage))
                 for line, win in state.lines_of("compare_accuracy")
                 if line.label.startswith(f"{view.name}: ")}
        out.append(comparison_table(view.compare, state.colour, trend))
    return "".join(out)
