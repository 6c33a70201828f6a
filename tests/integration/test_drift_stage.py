"""Drift watching on a real local Ray: alarms from a train stage, the policy, recovery."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import wait_for

from fusionkit.demo import ctr_model

FEATURES = ["price", "hour", "device"]


def events_seen(fk, name: str) -> int:
    return fk.infos(name)[0].get("events_seen", 0)


def pipeline(fk, n: int, drift=(), seed: int = 0, rate: float | None = None, **watch) -> float:
    """A click stream learned by the demo model, watched from its first event; returns the
    time it started (alarms and events of earlier tests in the session come before it)."""
    start = time.time()
    src = fk.sources.synthetic("clicks", rate=rate, seed=seed, max_events=n, start_time=0.0,
                               drift=drift)
    fk.stream("clicks", source=src, batch_size=500, paused=True)
    fk.train("ctr", on="clicks", label="clicked", model=ctr_model(), publish_every="500ms")
    info = fk.watch_drift("ctr", features=FEATURES, **watch)
    assert info["watched"] == FEATURES and info["alarms"] == 0
    fk.resume("clicks")
    return start


def windows_done(fk, n: int, window: int = 5000):
    """Wait until every window of every watched column up to event ``n`` is reported."""
    last = n - 1 - (n - 10_000) % window

    def done():
        d = fk.drift("ctr")
        rows = d[d["kind"] != "concept"]
        return set(rows.loc[rows["offset"] == last, "feature"]) >= {*FEATURES, "prediction"}

    wait_for(lambda: events_seen(fk, "ctr") >= n, timeout=240, what=f"{n} events learned")
    wait_for(done, timeout=30, what="the last windows reported")
    return fk.drift("ctr")


def test_no_alarm_on_a_stationary_stream_of_50k_events(fk):
    start = pipeline(fk, 50_000, seed=0)
    d = windows_done(fk, 50_000)
    windows = d[d["kind"] != "concept"]
    assert len(windows) == 8 * 4  # 8 windows after the reference, 3 features and the model
    assert not windows["alarm"].any(), windows[windows["alarm"]]
    assert (windows["psi"] < windows["psi_threshold"]).all()
    concept = d[d["kind"] == "concept"]
    assert concept["events"].sum() > 40_000 and not concept["alarm"].any()
    assert len(fk.alarms("ctr", since=start)) == 0 and len(fk.alarms(since=start)) == 0


def test_feature_and_categorical_drift_are_flagged_within_one_window(fk):
    drift = [fk.sources.FeatureDrift("price", at=20_000, shift=1.0),
             fk.sources.FeatureDrift("device", at=30_000, probs={"desktop": 0.7})]
    start = pipeline(fk, 35_000, drift, seed=1, concept=None)
    d = windows_done(fk, 35_000)
    alarms = fk.alarms("ctr", since=start)
    first = alarms.groupby("feature")["offset"].min()
    assert 20_000 <= first["price"] < 25_000  # the first window that holds the shift
    assert 30_000 <= first["device"] < 35_000
    assert "hour" not in first
    price = alarms[alarms["feature"] == "price"].iloc[0]
    assert price["statistic"] == "psi" and price["value"] >= price["threshold"] >= 0.2
    assert price["p_value"] < 0.01
    row = d[(d["feature"] == "price") & (d["offset"] == price["offset"])].iloc[0]
    assert row["test"] == "ks" and row["alarm"] and row["statistic"] > 0
    dev = d[(d["feature"] == "device") & (d["offset"] == first["device"])].iloc[0]
    assert dev["test"] == "chi2" and dev["p_value"] < 0.01
    assert (d["kind"] != "concept").all()  # concept=None: no error-rate rows
    events = fk.events(since=start)
    marked = events[(events["kind"] == "alarm") & (events["stage"] == "ctr")]
    assert marked["detail"].str.contains("price psi").any()
    assert marked["detail"].str.contains("device psi").any()


@pytest.mark.parametrize("policy", ["reset", "rollback"])
def test_concept_drift_fires_and_the_policy_reacts(fk, policy):
    start = pipeline(fk, 32_000, [fk.sources.ConceptDrift(at=20_000)], seed=2, policy=policy)
    def concept():
        a = fk.alarms("ctr", since=start)
        return a[a["kind"] == "concept"]

    wait_for(lambda: len(concept()) > 0, timeout=240, what="a concept alarm")
    first = concept().iloc[0]
    assert 20_000 <= first["offset"] < 21_000  # within a thousand events of the change
    assert first["after"] > first["before"]  # the error went up

    def policy_events():
        e = fk.events(since=start)
        return e[(e["kind"] == "policy") & (e["stage"] == "ctr")]

    wait_for(lambda: len(policy_events()) > 0, timeout=60, what="the policy's event")
    action = policy_events().iloc[0]
    assert f"offset {first['offset']}" in action["detail"]
    if policy == "reset":
        assert action["status"] == "reset" and "fresh model" in action["detail"]
    else:  # the versions learned before the change scored better than the model does now
        assert action["status"] == "rollback", action["detail"]
        version = int(action["version"])
        models = fk.models("ctr").set_index("version")
        assert models.loc[version, "events_seen"] <= 20_500
        events = fk.events(since=start)
        assert ((events["kind"] == "rollback") & (events["version"] == version)).any()
    wait_for(lambda: events_seen(fk, "ctr") >= 32_000, timeout=240, what="every event learned")
    assert fk.status().loc["ctr", "status"] in ("running", "finished")


def test_a_restarted_trainer_keeps_its_drift_watch_and_state(fk):
    n = 40_000
    start = pipeline(fk, n, [fk.sources.FeatureDrift("price", at=30_000, shift=1.0)], seed=3,
             rate=15_000, concept=None)
    wait_for(lambda: events_seen(fk, "ctr") >= 12_000, timeout=120, what="the reference")
    assert fk.checkpoint() is not None
    wait_for(lambda: events_seen(fk, "ctr") >= 17_000, timeout=120, what="17k events learned")
    os.kill(fk.infos("ctr")[0]["pid"], signal.SIGKILL)
    wait_for(lambda: len(fk.recoveries()) > 0, timeout=120, what="a recovery")
    d = windows_done(fk, n)
    price = d[d["feature"] == "price"].sort_values("offset")
    # the reference of the first 10k events and the window count came back from the
    # checkpoint: windows end where they would have without the failure, each once
    assert list(price["offset"]) == list(range(14_999, n, 5000))
    assert list(price["window"]) == list(range(1, 7))
    alarms = fk.alarms("ctr", since=start)
    # the price shift is flagged once, in the window that holds it; the model's outputs,
    # which depend on the price, may shift with it in the same window
    assert list(alarms.loc[alarms["feature"] == "price", "offset"]) == [34_999]
    assert set(alarms["feature"]) <= {"price", "prediction"}
    assert set(alarms["offset"]) == {34_999}
