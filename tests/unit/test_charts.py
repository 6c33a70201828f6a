"""The dashboard's charts without Ray: every empty panel says why, and log axes read plainly."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from fusionkit.monitor.monitor import Monitor
from fusionkit.monitor.snapshot import snapshot
from fusionkit.notebook.charts import NO_DRIFT, PANELS, Charts
from fusionkit.notebook.state import DashboardState


def report(m: Monitor, t: float, stage: str, kind: str, n: int, **values) -> None:
    m.report([{"time": t, "stage": stage, "kind": kind, "actor": 0, "interval": 0.5,
               "events_in": n, "events_out": n, "latency": np.full(4, 0.002),
               "values": values}])


@pytest.fixture()
def charts() -> Charts:
    c = Charts()
    c.view_ready()
    return c


def notes(charts: Charts) -> dict[str, str]:
    return {chart: charts.note(chart) for chart in PANELS}


def test_every_panel_of_a_new_dashboard_says_why_it_is_empty(charts):
    before = notes(charts)
    assert all(before.values()), before
    assert "fk.stream" in before["throughput"] and "fk.serve" in before["serving"]
    assert NO_DRIFT in notes(_no_drift())["drift"]


def _no_drift() -> Charts:
    c = Charts(drift_available=False)
    c.view_ready()
    return c


def test_notes_follow_the_pipeline_and_go_when_data_comes(charts):
    state = DashboardState(window=30)
    state.ingest_status([{"name": "clicks", "kind": "stream", "status": "running"},
                         {"name": "ctr", "kind": "train", "status": "running", "on": "clicks"},
                         {"name": "ctr-api", "kind": "serve", "status": "running",
                          "events": 0, "url": "http://127.0.0.1:8000/ctr-api"}])
    assert charts.render(state)
    now = notes(charts)
    assert now["drift"] == ("no drift watch running: start one with fk.watch_drift('ctr') "
                            "(fusionkit.watch_drift)")
    assert now["serving"].startswith("no requests yet: fk.predict('ctr-api', rows)")
    assert "http://127.0.0.1:8000/ctr-api" in now["serving"]

    m = Monitor(bucket=0.5)
    t0 = math.floor((time.time() - 20.0) / 0.5) * 0.5
    for i in range(10):
        report(m, t0 + i * 0.5, "clicks", "stream", 500)
        report(m, t0 + i * 0.5, "ctr", "train", 500, accuracy_recent=0.8)
    state.ingest_status([{"name": "clicks", "kind": "stream", "status": "running"},
                         {"name": "ctr", "kind": "train", "status": "running", "on": "clicks"},
                         {"name": "ctr-api", "kind": "serve", "status": "running",
                          "events": 1}])  # one request: its latency is not reported yet
    state.ingest_snapshot(snapshot(m, since=t0 - 1, settle=10.2))
    assert charts.render(state)
    now = notes(charts)
    assert now["throughput"] == now["latency"] == now["accuracy"] == "", now
    assert now["serving"].startswith("few requests so far")
    assert now["drift"].startswith("no drift watch running")

    state.watching.add("ctr")
    assert charts.render(state)
    assert notes(charts)["drift"].startswith("watching: ")
    state.ingest_drift("ctr", pd.DataFrame({"time": [state.now - 1.0], "feature": ["price"],
                                            "psi": [0.01]}))
    assert charts.render(state)
    assert notes(charts)["drift"] == ""
    assert not charts.render(state), "nothing changed, nothing sent"


def test_log_axes_label_one_two_five_in_full(charts):
    layout = charts.figure.layout
    for chart, (row, col, _, _, log) in PANELS.items():
        axis = charts.figure.get_subplot(row, col).yaxis
        if log:
            assert (axis.type, axis.dtick, axis.tickformat) == ("log", "D2", "~g"), chart
        else:
            assert axis.dtick is None, chart
    assert layout.yaxis.type == "linear"
