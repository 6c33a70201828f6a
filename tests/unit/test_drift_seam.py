"""The drift package's seam (no Ray): the watch observes and decides, the train stage acts;
``fusionkit.drift_detection`` stands on neither the training nor the monitor layer; a drift state
checkpointed before the package moved still resumes."""

from __future__ import annotations

import ast
import math
import pickle
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _drift_data import batches, rule_prediction

import fusionkit
from fusionkit.drift_detection.policy import NOTHING, Decision, Outcome, decide, rollback_choice
from fusionkit.drift_detection.records import Alarm
from fusionkit.drift_detection.spec import DriftSpec
from fusionkit.drift_detection.watch import DriftWatch
from fusionkit.sources.drift import ConceptDrift

ROOT = Path(fusionkit.__file__).parent


def decisions(watch: DriftWatch, frames) -> list[Decision]:
    out = []
    for b in frames:
        out.append(watch.observe(b, b["clicked"], rule_prediction(b)))
        watch.take()
    return out


# -- the watch decides, the stage acts ------------------------------------------------------
@pytest.mark.parametrize("policy", [None, "reset", "rollback"])
def test_the_watch_returns_its_policy_on_a_concept_drift_alarm(policy):
    """The click rule changes at event 20,000: the fixed model gets worse, and the watch asks
    for what the policy says, once, with the alarm's offset and the error's rise as reason."""
    watch = DriftWatch(DriftSpec(features=("price",), policy=policy), "ctr", "classification")
    got = decisions(watch, batches(32_000, [ConceptDrift(at=20_000)], seed=2))
    asked = [d for d in got if d.action != "none"]
    assert watch.alarms >= 1
    if policy is None:
        assert asked == [] and all(d is NOTHING for d in got)
        return
    assert len(asked) >= 1 and {d.action for d in asked} == {policy}
    first = asked[0]
    assert first.reason.startswith("concept drift at offset ") and "error " in first.reason
    offset = int(first.reason.split("offset ")[1].split(" ")[0])
    assert offset >= 20_000
    assert 0 < first.error_now <= 1
    assert watch.actions == 0  # nothing is counted before the stage says what it did


def test_the_watch_logs_what_the_stage_did():
    watch = DriftWatch(DriftSpec(features=("price",), policy="rollback"), "ctr", "classification")
    watch.record(Outcome("kept", "no recent version to roll back to, after concept drift"))
    watch.record(Outcome("rollback", "rolled back to v3 (recent_accuracy 0.900, now 0.700)", 3))
    assert [(e.kind, e.status, e.version) for e in watch.events] == [
        ("policy", "kept", None), ("policy", "rollback", 3)]
    assert watch.events[-1].stage == "ctr" and "v3" in watch.events[-1].detail
    assert watch.actions == 1 and watch.info()["actions"] == 1


def test_decide():
    alarm = Alarm(0.0, "ctr", "concept", "error", "z", 4.2, 3.5, 99)  # no before/after
    got = decide("rollback", alarm)
    assert (got.action, got.reason) == ("rollback", "concept drift at offset 99 (z 4.2)")
    assert math.isnan(got.error_now)
    assert decide("reset", alarm).reason == "concept drift at offset 99 (z 4.2)"
    assert decide(None, alarm) is NOTHING and decide("reset", None) is NOTHING


def test_a_spec_names_a_column_the_stream_does_not_have():
    sample = next(batches(500))
    why = DriftSpec(features=("prise",)).unknown_column(None, sample, "clicks")
    assert why.startswith("cannot watch 'prise': stream 'clicks' has no such column")
    assert "Did you mean 'price'?" in why
    assert DriftSpec(categorical=("devise",)).unknown_column(["price"], sample, "clicks")
    assert DriftSpec().unknown_column(["price", "device"], sample, "clicks") is None
    assert DriftSpec().unknown_column(None, None, "clicks") is None


TABLE = pd.DataFrame({"version": [1, 2, 3, 4, 5], "in_memory": [True, True, True, False, True],
                      "status": ["ok", "ok", "held", "ok", "ok"],
                      "recent_mae": [0.5, 0.3, 0.1, 0.05, 0.2]})  # fmt: skip


def test_a_rollback_goes_to_the_best_of_the_stages_own_versions():
    # v3 is held, v4 not in memory, v5 not this stage's: v2 is the best of the rest
    got = rollback_choice(TABLE, [1, 2, 3, 4], "recent_mae", False, 0.4)
    assert got == Outcome("rollback", "rolled back to v2 (recent_mae 0.300, now 0.400)", 2)
    assert rollback_choice(TABLE, [1, 2, 3, 4, 5], "recent_mae", False, 0.4).version == 5


def test_a_rollback_keeps_a_model_no_version_beats():
    kept = rollback_choice(TABLE, [1, 2], "recent_mae", False, 0.25)
    assert kept.status == "kept" and kept.version is None and not kept.acted
    assert "no recent version beats it (recent_mae of v2 0.300, now 0.250)" in kept.detail
    assert rollback_choice(TABLE, [9], "recent_mae", False, 1.0).detail == \
        "no recent version to roll back to"  # fmt: skip
    assert rollback_choice(TABLE, [1], "recent_accuracy", True, 0.5).detail == \
        "no published version has a recent metric yet"  # fmt: skip


# -- the layers ----------------------------------------------------------------------------
def _imported(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_drift_stands_on_neither_training_nor_monitor():
    """Anywhere in ``fusionkit/drift`` (late imports too): no import of the layers above it."""
    above = ("fusionkit.training", "fusionkit.monitor", "fusionkit.control", "fusionkit.streaming",
             "fusionkit.registry", "fusionkit.api", "fusionkit.runtime")
    wrong = sorted(f"{p.name}: {m}" for p in (ROOT / "drift").glob("*.py")
                   for m in _imported(p) if m.startswith(above))  # fmt: skip
    assert wrong == []


def test_training_takes_drift_from_drift_not_from_monitor():
    wrong = sorted(f"{p.name}: {m}" for p in (ROOT / "training").glob("*.py")
                   for m in _imported(p) if m.startswith("fusionkit.monitor"))  # fmt: skip
    assert wrong == []
    assert "fusionkit.drift_detection.policy" in _imported(ROOT / "training" / "worker.py")


def test_fk_drift_stays_the_function_whichever_module_comes_first():
    """Importing a drift module first, in a fresh interpreter, leaves ``fk.drift`` the
    function (a package named ``drift`` would replace it on first import)."""
    code = ("import fusionkit.drift_detection.watch, fusionkit.drift_detection.policy, fusionkit as fk\n"
            "import fusionkit.drift_api as api\n"
            "assert fk.drift is api.drift, fk.drift\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT.parent, timeout=120)


# -- checkpoints -----------------------------------------------------------------------------
OLD = {  # where the classes of a watch's state lived before fusionkit.drift_detection
    "fusionkit.drift_detection.spec": "fusionkit.monitor.drift_watch",
    "fusionkit.drift_detection.monitor": "fusionkit.monitor.drift",
    "fusionkit.drift_detection.feature": "fusionkit.monitor.drift",
    "fusionkit.drift_detection.concept": "fusionkit.monitor.drift",
    "fusionkit.drift_detection.prediction": "fusionkit.monitor.prediction_drift",
    "fusionkit.drift_detection.reference": "fusionkit.monitor.drift_stats",
    "fusionkit.drift_detection.ks": "fusionkit.monitor.drift_stats",
}


def test_a_drift_state_checkpointed_before_the_move_resumes():
    """A train actor's checkpoint holds its watch's state as pickled bytes, which name the
    classes' modules. One written before they moved to ``fusionkit.drift_detection`` (rewritten here
    with the old module names) resumes like one written now."""
    spec = DriftSpec(features=("price",), reference=2000, window=1000)
    watch = DriftWatch(spec, "ctr", "classification")
    frames = list(batches(6000))
    decisions(watch, frames[:7])
    new = watch.get_state()
    blob = pickle.dumps(pickle.loads(new), protocol=2)  # GLOBAL opcodes: "module\nname\n"
    for module, old in OLD.items():
        blob = blob.replace(f"c{module}\n".encode(), f"c{old}\n".encode())
    assert b"fusionkit.drift_detection." not in blob and b"fusionkit.monitor.drift_stats\n" in blob
    a, b = watch.fresh().resume(new), watch.fresh().resume(blob)
    assert b.monitor.feature_monitor.seen == a.monitor.feature_monitor.seen > 0
    rows = [[], []]
    for f in frames[7:]:
        for w, out in zip((a, b), rows, strict=True):
            w.observe(f, f["clicked"], rule_prediction(f))
            out += [(r["feature"], r["offset"], r["psi"]) for r in w.take()[0]
                    if r["kind"] != "concept"]  # fmt: skip
    assert rows[0] == rows[1] and len(rows[0]) >= 2
