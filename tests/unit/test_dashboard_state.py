"""The dashboard's data side without Ray: a plain Monitor's snapshots into fixed windows."""

from __future__ import annotations

import math
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fusionkit._widgets import asset, widgets_dir
from fusionkit.monitor.monitor import Monitor
from fusionkit.monitor.snapshot import snapshot
from fusionkit.notebook.state import DashboardState, Line, Window

ROOT = Path(__file__).resolve().parents[2]


def report(m: Monitor, t: float, stage: str, kind: str, n: int, **values) -> None:
    m.report([{"time": t, "stage": stage, "kind": kind, "actor": 0, "interval": 0.5,
               "events_in": n, "events_out": n, "latency": np.full(4, 0.002),
               "values": values}])


def test_window_keeps_the_newest_points():
    w = Window(4)
    w.extend(np.arange(6.0), np.arange(6.0) * 10)
    assert w.t.tolist() == [2.0, 3.0, 4.0, 5.0] and w.y.tolist() == [20.0, 30.0, 40.0, 50.0]
    w.trim(4.0)
    assert w.t.tolist() == [4.0, 5.0] and w.version == 2
    w.extend([np.nan], [1.0])
    assert w.version == 2, "a point without a time is not a point"
    with pytest.raises(ValueError):
        Window(0)


def test_snapshots_feed_windows_once_per_bucket():
    m = Monitor(bucket=0.5)
    t0 = math.floor((time.time() - 20.0) / 0.5) * 0.5  # reports are stamped as made
    for i in range(20):
        report(m, t0 + i * 0.5, "clicks", "stream", 500)
        report(m, t0 + i * 0.5, "ctr", "train", 500, accuracy_recent=0.8 + i / 100)
    m.event({"time": t0 + 3, "stage": "ctr", "kind": "version", "version": 1, "status": "live"})
    m.event({"time": t0 + 4, "stage": "ctr", "kind": "rollback", "version": 1})
    state = DashboardState(window=30)
    state.ingest_status([{"name": "clicks", "kind": "stream", "status": "running"},
                         {"name": "ctr", "kind": "train", "status": "running", "on": "clicks"}])
    first = snapshot(m, since=t0 - 1, settle=10.2)  # the buckets up to about t0 + 9.5
    state.ingest_snapshot(first)
    clicks = state.lines[Line("throughput", "clicks", "clicks")]
    assert clicks.t.size == 20 and np.allclose(clicks.y, 1000.0)
    acc = state.lines[Line("accuracy", "ctr", "ctr accuracy")]
    assert acc.last() == pytest.approx(0.99)
    assert [mk.kind for mk in state.markers] == ["version", "rollback"]
    assert "rollback" in state.log_html() and "version" not in state.log_html(), \
        "routine versions stay out of the log"
    for i in range(4):  # later reports, in later buckets
        report(m, first["until"] + 0.5 * (i + 1), "clicks", "stream", 250)
    second = snapshot(m, since=first["until"], settle=0.0)
    assert set(second["series"]["clicks"]["time"]).isdisjoint(first["series"]["clicks"]["time"])
    state.ingest_snapshot(second)
    assert clicks.t.size == 24 and clicks.y[-1] == 500.0
    assert state.colour("clicks") != state.colour("ctr")
    assert state.colour("ctr:publish") == state.colour("ctr")


def test_stages_that_go_are_dropped():
    state = DashboardState()
    state.ingest_status([{"name": "a", "kind": "stream", "status": "running"}])
    state.ingest_status([])
    assert state.stages == {}


def test_assets_are_found():
    assert (widgets_dir() / "pipeline.js").is_file()
    assert "export default" in asset("pipeline.js")
    assert ".fk-pipeline" in asset("pipeline.css")
    with pytest.raises(FileNotFoundError, match="pipeline.js"):
        asset("missing.js")


@pytest.mark.slow
def test_the_wheel_ships_the_widgets(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "-w", str(tmp_path),
                    "--no-deps", "-q"], check=True, timeout=600)
    (wheel,) = tmp_path.glob("fusionkit-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fusionkit/widgets/pipeline.js" in names
    assert "fusionkit/widgets/pipeline.css" in names


def _versions(live: int, n: int) -> list[dict]:
    return [{"version": v, "status": "live" if v == live else "published", "live": v == live,
             "pinned": False, "metric": "accuracy", "value": 0.8} for v in range(n, 0, -1)]


def test_version_picker_follows_the_live_version_until_the_user_picks_one():
    from fusionkit.notebook.cards import StageCard

    card = StageCard("ctr", "train", "#000", lambda *a: None)
    card.set_versions(_versions(live=3, n=3))
    assert card.versions.value == 3  # shows the live version, not an empty picker
    card.set_versions(_versions(live=5, n=5))
    assert card.versions.value == 5  # and follows it
    card.versions.value = 2  # the user picks an older one to roll back to
    card.set_versions(_versions(live=6, n=6))
    assert card.versions.value == 2  # their choice stays
