"""The records that cross actors (``fusionkit.runtime.records``): frozen, read back from
what older versions saved or sent as dicts; and the stage host, which forwards every
method a stage actor offers, so none the control plane calls can be forgotten."""

from __future__ import annotations

import ast
import dataclasses
import threading
from pathlib import Path

import pandas as pd
import pytest

import fusionkit
from fusionkit import _signing
from fusionkit.api import _recoveries_frame
from fusionkit.control.host import FORWARDED, WORKER_CLASSES, StageHost, public_methods
from fusionkit.control.persistence import TableFile
from fusionkit.control.pool import HostPool
from fusionkit.control.recovery import Recovery as Recoverer
from fusionkit.control.table import (
    StageRecord,
    StageTable,
    assignments_of,
    join_assignments,
    stream_assignments,
    train_assignment,
)
from fusionkit.monitor.monitor import DETAIL_CHARS, Monitor
from fusionkit.runtime.records import Assignment, Event, Recovery
from fusionkit.runtime.specs import JoinSpec, StreamSpec, TrainSpec
from fusionkit.streaming.join_worker import JoinWorker

ROOT = Path(fusionkit.__file__).parent
EVENT_COLUMNS = ["time", "stage", "kind", "version", "status", "detail"]  # fk.events()


def test_records_are_frozen():
    records = [Assignment("train", TrainSpec("ctr", on="clicks", model=None, label="y"), 0, None),
               Event("clicks", "pause"), Recovery("ctr", 3, 1.0, 2.0)]
    for record, field in zip(records, ("spec", "detail", "checkpoint"), strict=True):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, field, None)
    with pytest.raises(ValueError, match="stream"):
        Assignment("serve", None, 0, None)  # type: ignore[arg-type]


def test_assignments_name_each_actor_of_a_stage():
    spec = StreamSpec("clicks", source=None, parallelism=2)
    got = stream_assignments(spec, "m", {"ops1": {"x": 1}})
    assert [(a.worker, a.role, a.index, a.slot) for a in got] == [
        ("stream", "source", 0, "source0"), ("stream", "ops", 0, "ops0"),
        ("stream", "ops", 1, "ops1")]
    assert [a.slot for a in got] == spec.slots()
    assert [a.state for a in got] == [None, None, {"x": 1}]
    train = train_assignment(TrainSpec("ctr", on="clicks", model=None, label="y"), "m", "r")
    assert (train.slot, train.registry, train.state) == ("train0", "r", None)
    spec = JoinSpec("examples", left="impressions", right="clicks", on="k", within=5.0)
    (join,) = join_assignments(spec, "m", {"join0": {"examples": 3}})
    assert (join.worker, join.slot, join.registry, join.state) == ("join", "join0", None,
                                                                   {"examples": 3})
    (again,) = assignments_of(StageRecord("examples", "join", spec), "m", "r")
    assert again == join.but(state=None)  # without its starting state, as for the others
    wide = JoinSpec("examples", left="impressions", right="clicks", on="k", within=5.0,
                    parallelism=3)
    got = join_assignments(wide, "m", {"join2": {"examples": 1}})
    assert [(a.index, a.slot, a.state) for a in got] == [
        (0, "join0", None), (1, "join1", None), (2, "join2", {"examples": 1})]
    assert [a.slot for a in got] == wide.slots()


def test_a_restarted_host_is_told_its_assignment_with_its_stage_s_newest_spec():
    pool = HostPool()
    recovery = Recoverer(StageTable(), pool, None, None, threading.RLock(), lambda: None,
                         lambda entries, states: None)
    (a,) = stream_assignments(StreamSpec("clicks", source=None), "m", {"fused0": {"offset": 4}})
    pool.assignments["f00d"] = a
    paused = dataclasses.replace(a.spec, paused=True)
    pool.assignments["f00d"] = pool.assignments["f00d"].but(spec=paused)  # what respec does
    again = recovery.host_restarted("f00d")
    assert again == a.but(spec=paused) and again.spec.paused and again.state == {"offset": 4}
    assert recovery.host_restarted("not-a-host") is None


def test_forwarded_is_every_public_method_of_the_workers():
    """Derived, not kept by hand: a method added to a worker is forwarded at once."""
    offered = set().union(*(public_methods(c) for c in WORKER_CLASSES.values()))
    own = {"ready", "become", "push"}  # what the host answers itself
    assert set(FORWARDED) == offered - own
    assert own <= offered | {"become"}
    assert all(callable(getattr(StageHost, name)) for name in offered | own)
    assert WORKER_CLASSES["join"] is JoinWorker and "stats" in FORWARDED  # the join's own


NOT_STAGE_ACTORS = ("monitor", "registry", "controller", "sink")


def _stage_actor_calls(source: str) -> set[str]:
    """The methods called as ``<receiver>.<method>.remote(...)`` on what is not the
    monitor, the registry or the controller: stage actors, through their hosts."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "remote" and isinstance(node.func.value, ast.Attribute)):
            receiver = ast.unparse(node.func.value.value)
            if not any(word in receiver for word in NOT_STAGE_ACTORS):
                found.add(node.func.value.attr)
    return found


def test_the_scan_sees_a_method_no_host_has():
    source = "ray.get([a.start.remote() for a in rec.actors]); h.rewind.remote(3)\n" \
             "self.monitor.event.remote(e); self.registry.publish.remote(m)"
    calls = _stage_actor_calls(source)
    assert calls == {"start", "rewind"}
    assert [m for m in sorted(calls) if not hasattr(StageHost, m)] == ["rewind"]


def test_every_method_called_on_a_stage_actor_is_one_its_host_has():
    """What the control plane (and a stage, on the next one) calls on a stage actor exists
    on the host that runs it."""
    paths = [*sorted((ROOT / "control").glob("*.py")), ROOT / "streaming" / "worker.py",
             ROOT / "streaming" / "join_worker.py", ROOT / "training" / "worker.py", ROOT / "runtime" / "stage.py",
             ROOT / "runtime" / "channel.py"]
    calls = set().union(*(_stage_actor_calls(p.read_text()) for p in paths))
    assert {"become", "restore", "request_checkpoint", "push"} <= calls  # the scan sees them
    missing = sorted(m for m in calls if not hasattr(StageHost, m))
    assert not missing, f"called on a stage actor, but no host forwards it: {missing}"


def test_the_monitor_keeps_events_sent_as_records_or_dicts():
    m = Monitor()
    m.event(Event("clicks", "pause"))
    m.event({"stage": "ctr", "kind": "version", "version": 3, "status": "live",
             "detail": None, "time": 5.0})  # a dict, as an older sender sends it
    m.event({"stage": "clicks", "kind": "checkpoint fallback", "checkpoint": 7, "used": 6,
             "detail": "x" * (DETAIL_CHARS + 10)})
    rows = m.events()
    assert [list(r)[:6] for r in rows] == [EVENT_COLUMNS] * 3
    assert rows[0]["time"] is not None and rows[1]["time"] == 5.0  # stamped when it had none
    assert (rows[1]["version"], rows[1]["status"], rows[1]["detail"]) == (3, "live", "")
    assert (rows[2]["checkpoint"], rows[2]["used"]) == (7, 6)  # extra fields kept
    assert len(rows[2]["detail"]) == DETAIL_CHARS + 1
    assert m.events(since=5.0) == [rows[0], rows[2]]  # stamped on arrival: long after 5.0
    assert list(pd.DataFrame(rows, columns=EVENT_COLUMNS).columns) == EVENT_COLUMNS


OLD_RECOVERIES = [  # as a controller of an older version kept them
    {"stage": "ctr", "checkpoint": 4, "detected": 10.0, "recovered": 11.5, "seconds": 1.5,
     "steps": {"checkpoint": 0.01, "ctr/train0 ready": 1.2}},
    {"stage": "(controller)", "checkpoint": None, "detected": 20.0, "recovered": 20.25,
     "seconds": 0.25},
]


def test_recoveries_persisted_as_dicts_by_an_older_version_load(tmp_path):
    path = tmp_path / "controller" / "stages.pkl"
    path.parent.mkdir()
    path.write_bytes(_signing.dumps({"version": 1, "generation": 2, "restarts": 1,
                                     "recoveries": OLD_RECOVERIES, "stages": []}))
    saved = TableFile(str(tmp_path)).read()
    assert all(isinstance(r, Recovery) for r in saved["recoveries"])
    assert [r.as_dict() for r in saved["recoveries"]] == OLD_RECOVERIES
    # fk.recoveries() shows them as it showed the dicts
    before = pd.DataFrame(OLD_RECOVERIES, columns=["stage", "checkpoint", "detected",
                                                   "recovered", "seconds", "steps"])
    pd.testing.assert_frame_equal(_recoveries_frame(saved["recoveries"]), before)
    pd.testing.assert_frame_equal(_recoveries_frame(OLD_RECOVERIES), before)
