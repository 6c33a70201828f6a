"""The dashboard's update logic on a real local Ray: a real monitor feeds it as a pipeline runs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import wait_for

from fusionkit.demo import ctr_model
from fusionkit.notebook.dashboard import Dashboard
from fusionkit.notebook.state import Line


@pytest.fixture()
def pipeline(fk):
    src = fk.sources.synthetic("clicks", rate=2_000, seed=3)
    fk.stream("clicks", source=src, batch_size=250)
    fk.train("ctr", on="clicks", label="clicked", model=ctr_model(), publish_every="500ms")
    wait_for(lambda: _live(fk), timeout=60, what="a first version of ctr")
    return fk


def _live(fk):
    try:
        return fk.live_version("ctr") is not None
    except Exception:
        return False


@pytest.fixture()
def dashboard(pipeline):
    d = Dashboard(interval=0.25, window=60)
    d.charts.view_ready()  # no browser here: send chart updates at once
    yield d
    d.close()


def _points(d: Dashboard, label: str) -> int:
    win = d.state.lines.get(Line("throughput", label, label))
    return 0 if win is None else win.t.size


def test_traces_fill_as_the_pipeline_runs(fk, dashboard):
    d = dashboard
    wait_for(lambda: _points(d, "clicks") >= 4 and _points(d, "ctr") >= 4, timeout=60,
             what="throughput points of both stages")
    first = d.charts.points()
    wait_for(lambda: d.charts.points() > first + 4, timeout=60, what="more points plotted")
    trace = next(t for t in d.charts.figure.data if t.name == "clicks")
    x, y = np.asarray(trace.x), np.asarray(trace.y)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert np.all(np.diff(x) > 0), "time runs forward, each bucket once"
    # local-time milliseconds of the last minute or so (within a day's offset of now)
    assert abs(x[-1] / 1000.0 - time.time()) < 15 * 3600
    assert np.nanmedian(y) > 200, "the stream's rate in events/s"
    names = {s["name"]: s for s in d.view.stages}
    assert set(names) == {"clicks", "ctr"}
    assert names["ctr"]["on"] == "clicks" and names["clicks"]["kind"] == "stream"
    assert names["clicks"]["color"] == d.state.colour("clicks") != d.state.colour("ctr")
    assert set(d.cards.cards) == {"clicks", "ctr"}
    # the model's panels: accuracy, versions as markers, latency per stage
    wait_for(lambda: d.state.lines.get(Line("accuracy", "ctr", "ctr accuracy")) is not None,
             timeout=30, what="an accuracy line")
    wait_for(lambda: len(d.charts.figure.layout.shapes) > 0, timeout=30,
             what="version markers on the charts")
    assert Line("latency", "clicks", "clicks p99", "dash") in d.state.lines
    wait_for(lambda: "v" in d.cards.cards["ctr"].stats.value and
             d.cards.cards["ctr"].versions.options, timeout=30, what="the version picker filled")
    html = d._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in html
    assert "clicks" in html["text/html"] and "<table>" in html["text/html"]


def test_the_first_display_shows_the_stages_already_running(pipeline):
    # displayed before its updater's first tick (a saved notebook keeps this snapshot)
    d = Dashboard(interval=0.25, window=60, start=False)
    try:
        bundle = d._repr_mimebundle_()
        assert bundle["text/plain"] == "<fusionkit dashboard: 2 stages, live>"
        assert "no stages yet" not in bundle["text/html"] and "clicks" in bundle["text/html"]
    finally:
        d.close()


def test_the_drift_panel_says_whether_a_watch_runs(fk, dashboard):
    d = dashboard
    wait_for(lambda: d.charts.note("drift") == "no drift watch running: start one with "
                                               "fk.watch_drift('ctr') (fusionkit.watch_drift)",
             timeout=60, what="the empty drift panel naming the way to start a watch")
    # a chart with data has no note (the throughput chart's goes with the first batches)
    wait_for(lambda: d.charts.note("throughput") == "", timeout=60,
             what="the throughput chart's note gone once batches come")
    fk.watch_drift("ctr", window=500)
    wait_for(lambda: not d.charts.note("drift").startswith("no drift watch"), timeout=60,
             what="the drift panel's note once a watch runs")


def test_buttons_operate_the_pipeline(fk, dashboard):
    d = dashboard
    wait_for(lambda: "clicks" in d.cards.cards, timeout=30, what="the clicks card")
    d.cards.cards["clicks"].pause.click()
    wait_for(lambda: fk.status().loc["clicks", "status"] == "paused", timeout=30,
             what="clicks paused in fk.status()")
    wait_for(lambda: {s["name"]: s["status"] for s in d.view.stages}.get("clicks") == "paused",
             timeout=30, what="clicks paused in the pipeline view")
    assert d.cards.cards["clicks"].resume.disabled is False
    d.cards.cards["clicks"].resume.click()
    wait_for(lambda: fk.status().loc["clicks", "status"] == "running", timeout=30,
             what="clicks running again")
    d.cards.cards["ctr"].plus.click()  # a train stage cannot be scaled: the log says why
    wait_for(lambda: "cannot be scaled" in d.logs.value, timeout=30, what="the error in the log")
    card = d.cards.cards["ctr"]
    wait_for(lambda: len(card.versions.options) >= 2, timeout=30, what="two versions to pick")
    older = card.versions.options[-1][1]
    card.versions.value = older
    card.rollback.click()
    wait_for(lambda: f"rollback to v{older}" in d.logs.value, timeout=30,
             what="the rollback in the log")
    assert "rollback failed" not in d.logs.value


def test_close_stops_the_updater(fk, pipeline):
    d = Dashboard(interval=0.2, window=30)
    try:
        wait_for(lambda: d.updates >= 3, timeout=60, what="a few updates")
        assert d.running
    finally:
        d.close()
    assert not d.running, "the updater thread has ended"
    count = d.updates
    d._wake.set()
    assert d.updates == count
    assert d.widget.comm is None and d.charts.figure.comm is None, "widgets are closed"


def test_updates_pause_while_no_view_is_left(fk, pipeline):
    d = Dashboard(interval=0.2, window=30, idle_after=1.0)

    def alive(count: int) -> bool:
        d.view._message(d.view, {"type": "alive"}, [])  # what a browser view sends, every 2s
        return d.updates >= count

    try:
        wait_for(lambda: alive(2), timeout=60, what="updates while a view is alive")
        d.view._message(d.view, {"type": "gone"}, [])  # the last view was removed
        assert not d.active
        wait_for(lambda: "no view" in d.header.value, timeout=30, what="the header says paused")
        paused_at, loops = d.updates, d.loops
        wait_for(lambda: d.loops >= loops + 2, timeout=30, what="two idle rounds of the updater")
        assert d.updates == paused_at
        wait_for(lambda: alive(paused_at + 2), timeout=30, what="updates resumed with a view")
    finally:
        d.close()


def test_one_dashboard_per_kernel(fk, pipeline):
    a = fk.dashboard(interval=0.5)
    try:
        assert fk.dashboard(interval=0.5) is a
        b = fk.dashboard(interval=1.0)
        assert b is not a and a.closed
        b.close()
    finally:
        a.close()


def test_snapshot_hands_out_each_bucket_once(fk, pipeline):
    monitor = fk.api.handles()["monitor"]
    import ray

    def settled(snap):
        """The stream has a settled bucket and a version event of ctr is handed out (both
        are handed out a second after their time)."""
        return (snap["series"].get("clicks") is not None
                and any(e["kind"] == "version" and e["stage"] == "ctr" for e in snap["events"]))

    def first_snapshot():
        snap = ray.get(monitor.snapshot.remote(None))
        return snap if settled(snap) else None

    first = wait_for(first_snapshot, timeout=30,
                     what="a settled bucket and version event in a snapshot")
    def second_snapshot():
        """New buckets of the stream, one with events in (on a busy machine a bucket may
        hold only a report of gauges, from a second the source read nothing)."""
        snap = ray.get(monitor.snapshot.remote(first["until"]))
        return snap if "rate_in" in snap["series"].get("clicks", {}) else None

    second = wait_for(second_snapshot, timeout=30, what="new buckets after the first snapshot")
    t1 = first["series"]["clicks"]["time"]
    t2 = second["series"]["clicks"]["time"]
    assert set(t1).isdisjoint(t2)
    assert t2.min() > first["until"] >= t1.max()
    assert {"rate_in", "p50_ms", "p99_ms"} <= set(second["series"]["clicks"])
    assert second["rates"]["clicks"] > 0
    # events are handed out once too
    assert all(e["time"] <= first["until"] for e in first["events"])
    assert all(first["until"] < e["time"] <= second["until"] for e in second["events"])


def test_bad_options_are_refused(fk):
    with pytest.raises(ValueError, match="interval"):
        Dashboard(interval="5ms")
    with pytest.raises(ValueError, match="window"):
        Dashboard(window=1)
