"""A self-contained HTML report of a pipeline run, with plotly charts."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

import fusionkit as fk
from fusionkit.monitor.series import to_local_time


def _figure(title: str, yaxis: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(title=title, height=320, margin=dict(l=60, r=20, t=50, b=40),
                      xaxis_title="local time", yaxis_title=yaxis, template="plotly_white")
    return fig


def _markers(fig, times: list[float], label: str, color: str) -> None:
    # whole microseconds: plotly warns when it drops a timestamp's nanoseconds
    xs = to_local_time(pd.Series(times, dtype="float64")).dt.floor("us").tolist()
    for x in xs:
        fig.add_vline(x=x, line_width=1, line_dash="dot", line_color=color)
    if xs:
        fig.add_annotation(x=xs[0], y=1, yref="paper", text=label, showarrow=False,
                           font=dict(color=color))


def write_report(path: str | Path, title: str = "fusionkit report",
                 drift_time: float | None = None, summary: pd.Series | None = None) -> Path:
    """Write charts of every stage's throughput and latency, accuracy, freshness and versions."""
    path = Path(path)
    st = fk.status()
    figs: list[Any] = []
    thr = _figure("Throughput per stage", "events / s")
    lat = _figure("Processing latency per stage (p50 solid, p99 dotted)", "ms per batch")
    for name in st.index:
        m = fk.metrics(name)
        if not len(m):
            continue
        t = to_local_time(m["time"])
        rate = m["rate_in"] if "rate_in" in m else m.get("rate_requests")
        if rate is not None:
            thr.add_scatter(x=t, y=rate, name=name, mode="lines")
        lat.add_scatter(x=t, y=m["p50_ms"], name=f"{name} p50", mode="lines")
        lat.add_scatter(x=t, y=m["p99_ms"], name=f"{name} p99", mode="lines",
                        line=dict(dash="dot"))
    figs += [thr, lat]
    for name in st.index[st["kind"] == "train"]:
        m = fk.metrics(name)
        acc = _figure(f"Prequential accuracy of {name}", "accuracy")
        if "accuracy_recent" in m:
            acc.add_scatter(x=to_local_time(m["time"]), y=m["accuracy_recent"],
                            name="recent window", mode="lines")
            acc.add_scatter(x=to_local_time(m["time"]), y=m["accuracy"], name="cumulative",
                            mode="lines")
        ev = fk.events()
        _markers(acc, ev[(ev["stage"] == name) & (ev["kind"] == "rollback")]["time"].tolist(),
                 "rollback", "red")
        if drift_time is not None:
            _markers(acc, [drift_time], "scheduled drift", "orange")
        figs.append(acc)
        fresh = fk.freshness_series(name)
        fr = _figure(f"End-to-end freshness of {name} (ingest to first answer)", "ms")
        if len(fresh):
            ft = to_local_time(fresh["time"])
            fr.add_scatter(x=ft, y=fresh["p50_ms"], name="p50", mode="lines+markers")
            fr.add_scatter(x=ft, y=fresh["p99_ms"], name="p99", mode="lines+markers")
        figs.append(fr)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if summary is not None:
        parts.append(summary.to_frame().to_html())
    parts.append(st.drop(columns=[c for c in ("traceback",) if c in st]).to_html())
    for i, fig in enumerate(figs):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>"
                    f"{html.escape(title)}</title></head><body>" + "\n".join(parts)
                    + "</body></html>", encoding="utf-8")
    return path.resolve()
