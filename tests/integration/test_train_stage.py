"""The train stage and the model registry on a real local Ray.

Accuracy parity with River's own prequential evaluation, the adapters on a running stage,
version lineage, publishing by events and by time, rollback / pin / unpin, checksums
verified when a version is loaded from disk, the publish guard, isolation of a failing
learner, and dead letters for bad labels.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from conftest import wait_for
from river import datasets, evaluate, linear_model, metrics, preprocessing

from fusionkit.demo import ctr_model
from fusionkit.training.protocol import Prediction, load_state

NUMERIC = ["price", "dwell", "age", "hour", "position"]
SCALED = ["z_price", "z_dwell", "z_age", "position"]


# -- helpers --------------------------------------------------------------------------------
def info(fk, name: str) -> dict:
    return fk.infos(name)[0]


def seen(fk, name: str) -> int:
    return int(info(fk, name).get("events_seen", 0))


def state_bytes(fk, name: str, version: int) -> bytes:
    return ray.get(fk.api.handles()["registry"].state.remote(name, version))


def versions(fk, name: str) -> pd.DataFrame:
    return fk.models(name).set_index("version")


def features(df: pd.DataFrame) -> pd.DataFrame:
    """A regression target linear in two features, and standardized numeric features."""
    return df.assign(target=0.5 * df["age"] + 3.0 * df["position"] + 1.0,
                     z_price=(np.log(df["price"]) - 3.0) / 0.8,
                     z_dwell=(np.log(df["dwell"]) - 1.5) / 0.9, z_age=(df["age"] - 38) / 12)


def logistic():
    return preprocessing.StandardScaler() | linear_model.LogisticRegression()


# -- learners under the test's control ------------------------------------------------------
class Majority:
    """A custom class speaking the protocol: predicts the most frequent label so far."""

    task = "classification"

    def __init__(self):
        self.counts: dict = {}

    def predict(self, X: pd.DataFrame) -> Prediction:
        best = max(self.counts, key=self.counts.get) if self.counts else None
        out = np.empty(len(X), dtype=object)
        out[:] = best
        return Prediction(out)

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        for value, n in y.value_counts().items():
            self.counts[value] = self.counts.get(value, 0) + int(n)

    def get_state(self) -> bytes:
        return pickle.dumps(self.counts)

    def set_state(self, state: bytes) -> None:
        self.counts = pickle.loads(state)


class Oracle(Majority):
    """Knows the label rule ``x > 0`` and answers it right until ``turn``, wrong after."""

    def __init__(self, turn: int):
        super().__init__()
        self.turn = turn

    def predict(self, X: pd.DataFrame) -> Prediction:
        truth = (X["x"] > 0).to_numpy()
        return Prediction(np.where(X["_offset"].to_numpy() < self.turn, truth, ~truth))


class Breaks(Majority):
    """Learns like ``Majority`` and raises once it has seen ``after`` events."""

    def __init__(self, after: int):
        super().__init__()
        self.after, self.n = after, 0

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        self.n += len(X)
        if self.n > self.after:
            raise RuntimeError(f"learner broke after {self.n} events")
        super().learn(X, y)


def signed_frame(n: int, seed: int = 0) -> pd.DataFrame:
    x = np.random.default_rng(seed).normal(size=n)
    return pd.DataFrame({"x": x, "label": x > 0})


# -- accuracy parity -------------------------------------------------------------------------
def test_phishing_accuracy_matches_river_and_versions_every_n_events(fk):
    river_acc = evaluate.progressive_val_score(datasets.Phishing(), logistic(),
                                               metrics.Accuracy()).get()
    assert round(river_acc, 4) == 0.8928
    src = fk.sources.replay(datasets.Phishing(), label="is_phishing")
    fk.stream("phish", source=src, batch_size=100)
    fk.train("phish-lr", on="phish", label="is_phishing", model=logistic(), publish_every=400)
    wait_for(lambda: seen(fk, "phish-lr") >= 1250, timeout=120, what="all 1250 events learned")
    got = info(fk, "phish-lr")["metrics"]
    assert got["n"] == 1250
    assert abs(got["accuracy"] - river_acc) <= 0.01, (got["accuracy"], river_acc)
    assert {"log_loss", "accuracy_recent"} <= set(got)
    # the monitor's series reaches the end of the finite stream too
    wait_for(lambda: fk.metrics("phish-lr")["events_in"].sum() == 1250, what="1250 in metrics")
    series = fk.metrics("phish-lr")
    assert series["accuracy"].iloc[-1] == got["accuracy"]

    # publish_every=400 (events): a version after each 400 new events, none for the tail
    wait_for(lambda: len(fk.models("phish-lr")) >= 3, what="three versions")
    table = versions(fk, "phish-lr")
    assert list(table.index) == [1, 2, 3]
    assert list(table["events_seen"]) == [400, 800, 1200]  # batches of 100 add up exactly
    assert (table["new_events"] == 400).all()
    assert table.loc[3, "live"] and table.loc[3, "status"] == "live"
    assert list(table["parent"].iloc[1:]) == [1, 2]
    # the final version's metrics are those of the stage after 1200 events, close to River's
    assert abs(table.loc[3, "accuracy"] - river_acc) < 0.02


# -- the adapters on a running stage ------------------------------------------------------------
def test_adapters_on_the_stage(fk):
    src = fk.sources.synthetic("clicks", rate=4000, seed=2)
    fk.stream("clicks", source=src, batch_size=250, fn=features)
    from sklearn.linear_model import SGDClassifier

    fk.train("river-clf", on="clicks", label="clicked", model=ctr_model(), publish_every=1000)
    fk.train("river-reg", on="clicks", label="target", features=["age", "position"],
             model=preprocessing.StandardScaler() | linear_model.LinearRegression(),
             publish_every=1000)
    fk.train("sk-sgd", on="clicks", label="clicked", features=SCALED, classes=[0, 1],
             model=SGDClassifier(loss="log_loss", learning_rate="constant", eta0=0.01),
             publish_every=1000)
    fk.train("custom", on="clicks", label="clicked", model=Majority(), publish_every=1000)
    names = ["river-clf", "river-reg", "sk-sgd", "custom"]
    wait_for(lambda: all(seen(fk, n) >= 4000 for n in names), timeout=120,
             what="4000 events learned by every adapter")
    wait_for(lambda: all(len(fk.models(n)) >= 2 for n in names), what="versions of each")
    st = fk.status()
    assert (st.loc[names, "status"] == "running").all(), st.loc[names, ["status", "error"]]

    m = {n: info(fk, n)["metrics"] for n in names}
    majority = 0.75  # the synthetic click rate is about 25%
    assert m["river-clf"]["accuracy_recent"] > majority + 0.02
    assert {"accuracy", "log_loss"} <= set(m["river-clf"])
    assert {"mae", "rmse", "r2"} <= set(m["river-reg"]) and "accuracy" not in m["river-reg"]
    assert m["river-reg"]["mae_recent"] < 1.0  # the target is linear in the two features
    assert m["sk-sgd"]["accuracy_recent"] > majority + 0.02 and "log_loss" in m["sk-sgd"]
    assert m["custom"]["accuracy_recent"] > majority - 0.05  # predicts "no click"

    # a published version is the learner itself: load it and predict with it
    rows = fk.peek("clicks", 20)
    for name in ("river-clf", "river-reg", "sk-sgd"):
        learner = load_state(state_bytes(fk, name, fk.live_version(name)))
        assert len(learner.predict(rows)) == 20
    reg = load_state(state_bytes(fk, "river-reg", fk.live_version("river-reg")))
    err = np.abs(reg.predict(rows).y_pred.astype(float) - rows["target"].to_numpy())
    assert err.mean() < 1.0
    custom = Majority()
    custom.set_state(state_bytes(fk, "custom", fk.live_version("custom")))
    assert sum(custom.counts.values()) >= 1000 and max(custom.counts, key=custom.counts.get) == 0


# -- versions, rollback, pin -----------------------------------------------------------------
def test_lineage_publish_by_time_rollback_pin_unpin(fk):
    src = fk.sources.synthetic("clicks", rate=3000, seed=3)
    fk.stream("clicks", source=src, batch_size=200)
    fk.train("timed", on="clicks", label="clicked", model=ctr_model(), publish_every="300ms")
    wait_for(lambda: len(fk.models("timed")) >= 4, timeout=60, what="four timed versions")

    table = versions(fk, "timed")
    assert list(table.index) == list(range(1, len(table) + 1))
    assert table["events_seen"].is_monotonic_increasing and (table["new_events"] > 0).all()
    assert table["newest_ingest_ts"].is_monotonic_increasing
    assert (table["oldest_new_ingest_ts"] <= table["newest_ingest_ts"]).all()
    assert (table["newest_ingest_ts"] <= table["created"]).all()
    assert (table["events_seen"].diff().iloc[1:] == table["new_events"].iloc[1:]).all()
    folder = Path(fk.api.connection().storage) / "models" / "timed"
    for v in table.index[:3]:
        data = state_bytes(fk, "timed", v)
        full = hashlib.sha256(data).hexdigest()
        assert table.loc[v, "checksum"] == full[:12]
        assert json.loads((folder / f"v{v:06d}.json").read_text())["checksum"] == full
        assert (folder / f"v{v:06d}.bin").read_bytes() == data

    fk.pause("timed")
    last = fk.publish("timed") or max(fk.models("timed")["version"])
    assert fk.live_version("timed") == last
    fk.rollback("timed", 2)
    table = versions(fk, "timed")
    assert fk.live_version("timed") == 2 and table.loc[2, "status"] == "live"
    assert (table.loc[3:, "status"] == "rolled-back").all()

    fk.pin("timed", 3)
    assert fk.live_version("timed") == 3 and versions(fk, "timed").loc[3, "pinned"]
    with pytest.raises(Exception, match="pinned"):
        fk.rollback("timed", 1)
    fk.resume("timed")
    wait_for(lambda: len(fk.models("timed")) >= last + 2, timeout=60,
             what="versions published while pinned")
    table = versions(fk, "timed")
    stored = table.loc[last + 1:]
    assert (stored["status"] == "published").all()
    assert stored["reason"].str.contains("pinned").all()
    assert fk.live_version("timed") == 3

    fk.unpin("timed")
    wait_for(lambda: fk.live_version("timed") > last, what="a version after the pin live")
    assert not versions(fk, "timed")["pinned"].any()
    kinds = fk.events()
    kinds = kinds[kinds["stage"] == "timed"]["kind"]
    assert {"version", "rollback", "pin", "unpin"} <= set(kinds)


def test_corrupt_version_file_is_refused_on_load(fk):
    src = fk.sources.replay(signed_frame(3000), label="label")
    fk.stream("signs", source=src, batch_size=250)
    fk.train("keep1", on="signs", label="label", model=logistic(), publish_every=500, keep=1)
    wait_for(lambda: len(fk.models("keep1")) >= 6, timeout=60, what="six versions")
    table = versions(fk, "keep1")
    assert list(table.index[table["in_memory"]]) == [6]  # keep=1: older versions only on disk

    # an evicted version loads from disk, checksum verified
    fk.rollback("keep1", 4)
    assert fk.live_version("keep1") == 4

    folder = Path(fk.api.connection().storage) / "models" / "keep1"
    path = folder / "v000002.bin"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(fk.CorruptCheckpointError, match="v000002.bin is corrupt and was refused"):
        fk.rollback("keep1", 2)
    assert fk.live_version("keep1") == 4  # nothing changed
    path.unlink()
    with pytest.raises(fk.CorruptCheckpointError, match="missing"):
        fk.pin("keep1", 2)
    assert fk.live_version("keep1") == 4


# -- the publish guard -----------------------------------------------------------------------
def test_guard_holds_back_a_worse_model(fk):
    src = fk.sources.replay(signed_frame(6000, seed=1), label="label")
    fk.stream("signs", source=src, batch_size=250)
    guard = fk.Guard(metric="accuracy_recent", margin=0.05, min_events=0)
    fk.train("guarded", on="signs", label="label", model=Oracle(turn=3000), publish_every=500,
             guard=guard)
    wait_for(lambda: seen(fk, "guarded") >= 6000, timeout=60, what="all events learned")
    wait_for(lambda: len(fk.models("guarded")) >= 12, what="twelve versions")
    table = versions(fk, "guarded")
    good = table[table["events_seen"] <= 3000]
    worse = table[table["events_seen"] > 3000]  # recent accuracy 0.5 and less from here on
    assert (good["accuracy_recent"] == 1.0).all() and (worse["accuracy_recent"] <= 0.5).all()
    assert (worse["status"] == "held").all()
    assert worse["reason"].str.contains("accuracy_recent .* < live 1 - margin 0.05").all()
    assert fk.live_version("guarded") == good.index.max()
    assert list(table.index[table["live"]]) == [good.index.max()]
    held = fk.events()
    held = held[(held["stage"] == "guarded") & (held["kind"] == "version")]
    assert (held["status"] == "held").sum() == len(worse)


# -- isolation ---------------------------------------------------------------------------------
def test_failing_learner_fails_alone(fk):
    src = fk.sources.synthetic("clicks", rate=3000, seed=4)
    fk.stream("clicks", source=src, batch_size=200)
    fk.train("sound", on="clicks", label="clicked", model=ctr_model(), publish_every=500)
    fk.train("broken", on="clicks", label="clicked", model=Breaks(after=2000), publish_every=500)
    wait_for(lambda: fk.status().loc["broken", "status"] == "failed", timeout=60,
             what="the broken learner to fail")
    row = fk.status().loc["broken"]
    assert "RuntimeError: learner broke after" in row["error"]
    assert "in learn" in row["traceback"] and "raise RuntimeError" in row["traceback"]
    with pytest.raises(fk.StageFailedError, match="broken"):
        fk.check("broken")
    fk.check("sound")  # does not raise

    at_failure = seen(fk, "sound"), len(fk.models("sound"))
    stuck = seen(fk, "broken")
    wait_for(lambda: seen(fk, "sound") > at_failure[0] + 2000, timeout=60,
             what="the sound learner to keep learning")
    wait_for(lambda: len(fk.models("sound")) > at_failure[1] + 2, timeout=60,
             what="the sound learner to keep publishing")
    assert fk.status().loc["sound", "status"] == "running"
    assert fk.status().loc["clicks", "status"] == "running"
    assert seen(fk, "broken") == stuck
    assert len(fk.models("broken")) <= 2000 // 500  # none after the failure


# -- dead letters --------------------------------------------------------------------------------
def _spoil_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Every 10th event loses its click label; every 7th gets a target that is no number;
    every 9th a class outside {0, 1} in ``outcome``."""
    off = df["_offset"].to_numpy()
    clicked = df["clicked"].astype("float64").where(off % 10 != 0)
    target = df["age"].astype(object).where(off % 7 != 0, "n/a")
    target = target.where(off % 14 != 7, np.inf)
    outcome = df["clicked"].where(off % 9 != 0, 2)
    return df.assign(clicked=clicked, target=target, outcome=outcome)


def test_missing_and_invalid_labels_go_to_dead_letters(fk):
    src = fk.sources.synthetic("clicks", rate=None, seed=5, max_events=4000)
    fk.stream("clicks", source=src, batch_size=500, fn=_spoil_labels, paused=True)
    fk.train("clf", on="clicks", label="clicked", model=ctr_model(), publish_every=None)
    fk.train("reg", on="clicks", label="target", features=["price"],
             model=linear_model.LinearRegression(), publish_every=None)
    from sklearn.linear_model import SGDClassifier

    fk.train("sgd", on="clicks", label="outcome", features=NUMERIC, classes=[0, 1],
             model=SGDClassifier(loss="log_loss"), publish_every=None)
    fk.resume("clicks")
    wait_for(lambda: seen(fk, "clf") >= 3600 and seen(fk, "reg") >= 4000 - 572
             and seen(fk, "sgd") >= 4000 - 445, timeout=60, what="every good event learned")
    clf = fk.dead_letters("clf")
    assert len(clf) == 400 and (clf["offset"] % 10 == 0).all()
    assert (clf["reason"] == "missing label 'clicked'").all()
    reg = fk.dead_letters("reg")
    assert sorted(reg["offset"]) == [o for o in range(4000) if o % 7 == 0]
    assert set(reg["reason"]) == {"invalid label 'target': not a finite number"}
    assert seen(fk, "clf") == 3600 and seen(fk, "reg") == 4000 - len(reg)
    sgd = fk.dead_letters("sgd")
    assert sorted(sgd["offset"]) == [o for o in range(4000) if o % 9 == 0]
    assert set(sgd["reason"]) == {"invalid label 'outcome': not one of the classes [0, 1]"}
    st = fk.status()
    assert st.loc["clf", "dead_letters"] == 400 and st.loc["reg", "dead_letters"] == len(reg)
    assert st.loc["sgd", "dead_letters"] == len(sgd) == 445
    assert (st.loc[["clf", "reg", "sgd"], "status"] == "running").all()
