"""The drift monitors' window settings are one record (``WindowSettings``): every monitor
refuses a bad value with the same error, raised from one place, and a checkpoint saved when
the settings were attributes of each monitor still resumes (no Ray)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from _drift_data import batches, rule_prediction

import fusionkit
from fusionkit.drift_detection.feature import FeatureDriftMonitor
from fusionkit.drift_detection.monitor import DriftMonitor
from fusionkit.drift_detection.prediction import PredictionDriftMonitor
from fusionkit.drift_detection.reference import WindowSettings
from fusionkit.drift_detection.spec import DriftSpec
from fusionkit.drift_detection.watch import DriftWatch, _load
from fusionkit.errors import FusionError, SettingsError

ROOT = Path(fusionkit.__file__).parent

# the constructors that take the window settings, and what each calls the prediction sample
MAKERS = {
    "FeatureDriftMonitor": (FeatureDriftMonitor, None),
    "PredictionDriftMonitor": (PredictionDriftMonitor, "sample"),
    "DriftMonitor": (DriftMonitor, "prediction_sample"),
    "DriftSpec": (DriftSpec, "prediction_sample"),  # what fk.watch_drift builds
}
BAD = [  # a bad value, and the message every maker gives for it
    ("window", 1, "window must hold at least 2 events, got 1"),
    ("window", 2.5, "window must be a number of events (int), not 2.5"),
    ("window", True, "window must be a number of events (int), not True"),
    ("psi_alarm", 0, "psi_alarm must be a positive number, not 0"),
    ("psi_alarm", float("inf"), "psi_alarm must be a positive number, not inf"),
    ("ks_alpha", 1.5, "ks_alpha must be a probability in (0, 1), not 1.5"),
    ("ks_alpha", "0.01", "ks_alpha must be a probability in (0, 1), not '0.01'"),
    ("reference", 1, "reference must hold at least 2 events, got 1"),
    ("reference", "last 10 events",
     "reference must be 'first N events', an int or a DataFrame, got 'last 10 events'"),
    ("sample", 1, "the prediction sample must be at least 2 rows, got 1"),
    ("sample", 10.0, "the prediction sample must be at least 2 rows, got 10.0"),
]  # fmt: skip


@pytest.mark.parametrize("maker, name, value, message", [
    (maker, name, value, message) for maker, (_, sample) in MAKERS.items()
    for name, value, message in BAD if name != "sample" or sample is not None
])  # fmt: skip
def test_every_monitor_refuses_a_bad_setting_with_the_same_error(maker, name, value, message):
    make, sample = MAKERS[maker]
    with pytest.raises(SettingsError) as caught:
        make(**{sample if name == "sample" else name: value})
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, FusionError)


@pytest.mark.parametrize("name, value, message", BAD)
def test_each_rule_is_written_once(name, value, message):
    """The message's fixed words stand in one module of fusionkit: the rule is one check."""
    words = message.split(",")[0].split(" not ")[0].split(" got ")[0]
    assert len(words) > 15
    holders = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py") if words in p.read_text())
    assert holders == ["drift_detection/reference.py"]


def test_the_drift_monitor_hands_its_record_to_both_monitors():
    mon = DriftMonitor(reference="first 4,000 events", window=1000, psi_alarm=0.3,
                       prediction_sample=200)
    assert mon.feature_monitor.settings is mon.settings is mon.prediction_monitor.settings
    s = mon.settings
    assert (s.n_reference, s.window, s.psi_alarm, s.sample) == (4000, 1000, 0.3, 200)
    spec = DriftSpec(window=2000)
    assert spec.monitor("ctr").settings == WindowSettings(window=2000)


# -- checkpoints from before the record ---------------------------------------------------------
# drift_watch_state_before_settings.pkl: ``DriftWatch.get_state()`` as the code before
# ``WindowSettings`` wrote it (each monitor kept its settings as attributes of its own), after
# seven batches of 100 of ``batches(1400, size=100)`` with:
#   spec = DriftSpec(features=("price", "device"), reference=400, window=200,
#                    prediction_sample=50)
#   watch = DriftWatch(spec, "ctr", "classification", features=["price", "dwell", "device"])
#   watch.observe(b, b["clicked"], rule_prediction(b), Rule()); watch.take()
OLD_STATE = Path(__file__).parent / "data" / "drift_watch_state_before_settings.pkl"


class Rule:
    """The fixed rule model as a learner: scores inputs for prediction drift."""

    def predict(self, X):
        return rule_prediction(X)


def windows(watch: DriftWatch, frames) -> list[tuple]:
    out = []
    for b in frames:
        watch.observe(b, b["clicked"], rule_prediction(b), Rule())
        out += [(r["kind"], r["feature"], r["offset"], r["psi"], r["alarm"])
                for r in watch.take()[0] if r["kind"] != "concept"]  # fmt: skip
    return out


def test_a_checkpoint_from_before_the_settings_record_resumes():
    blob = OLD_STATE.read_bytes()
    assert b"WindowSettings" not in blob and b"psi_alarm" in blob  # settings as attributes
    spec = _load(blob)["spec"]
    features = ["price", "dwell", "device"]
    resumed = DriftWatch(spec, "ctr", "classification", features).resume(blob)
    mon = resumed.monitor
    assert mon.prediction_monitor.seen == 700
    assert mon.settings is mon.feature_monitor.settings is mon.prediction_monitor.settings
    assert (mon.settings.n_reference, mon.settings.window, mon.settings.sample) == (400, 200, 50)

    frames = list(batches(1400, size=100))
    whole = windows(DriftWatch(spec, "ctr", "classification", features), frames)
    later = windows(resumed, frames[7:])
    assert len(later) >= 6 and later == [w for w in whole if w[2] >= 700]
    # and the resumed watch checkpoints in today's form
    again = pickle.loads(resumed.get_state())["monitor"]
    assert isinstance(again.settings, WindowSettings) and not hasattr(again, "window")
