"""Fault injection on a real local Ray: kill stage actors mid-run; nothing lost, nothing twice."""

from __future__ import annotations

import os
import random
import signal

import pytest
from _pipelines import OffsetCounter, events_seen, learned_counts, model_state
from conftest import wait_for, wait_restarted

N_EVENTS = 40_000


def infos(fk, name):
    return fk.infos(name)


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def run_and_kill(fk, victim: str, parallelism: int, seed: int) -> None:
    rng = random.Random(seed)
    src = fk.sources.synthetic("clicks", rate=15_000, seed=seed, max_events=N_EVENTS)
    fk.stream("clicks", source=src, batch_size=500, parallelism=parallelism,
              key_by="user_id" if parallelism > 1 else None)
    fk.train("count", on="clicks", label="clicked", model=OffsetCounter(N_EVENTS),
             publish_every=None)
    kill_at = rng.randint(N_EVENTS // 5, N_EVENTS // 2)
    wait_for(lambda: fk.infos("count")[0].get("events_seen", 0) >= kill_at // 2,
             timeout=60, what="first events learned")
    assert fk.checkpoint() is not None
    wait_for(lambda: fk.infos("count")[0].get("events_seen", 0) >= kill_at, timeout=60,
             what=f"{kill_at} events learned")
    stage, role = victim.split(":")
    target = next(i for i in infos(fk, stage) if i.get("role", "train") == role)
    kill(target["pid"])
    wait_for(lambda: len(fk.recoveries()) > 0, timeout=90, what="a recovery")
    try:
        wait_for(lambda: fk.infos("count")[0].get("events_seen", 0) >= N_EVENTS,
                 timeout=120, what="every event learned after recovery")
    except AssertionError:
        print("RECOVERIES", fk.recoveries().to_dict("records"))
        print("STREAM", [(i["status"], i.get("offset"), i["totals"]) for i in infos(fk, "clicks")])
        print("TRAIN", [(i["status"], i.get("events_seen"), i["totals"]) for i in infos(fk, "count")])
        raise
    counts = learned_counts(fk, "count")
    assert counts.sum() == N_EVENTS, f"learned {counts.sum()} events, produced {N_EVENTS}"
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    rec = fk.recoveries().iloc[-1]
    assert rec["seconds"] > 0
    assert fk.status().loc[stage, "restarts"] >= 1


@pytest.mark.parametrize("seed", [1, 2])
def test_stream_actor_killed(fk, seed):
    run_and_kill(fk, "clicks:fused", parallelism=1, seed=seed)


@pytest.mark.parametrize("seed", [3, 4])
def test_trainer_killed(fk, seed):
    run_and_kill(fk, "count:train", parallelism=1, seed=seed)


def test_parallel_source_killed(fk):
    run_and_kill(fk, "clicks:source", parallelism=2, seed=5)


def test_parallel_operator_killed(fk):
    run_and_kill(fk, "clicks:ops", parallelism=2, seed=6)


def test_registry_killed_keeps_versions_and_publishing(fk):
    import ray

    src = fk.sources.synthetic("clicks", rate=10_000, seed=7)
    fk.stream("clicks", source=src, batch_size=500)
    fk.train("count", on="clicks", label="clicked", model=OffsetCounter(10_000_000),
             publish_every="200ms")
    wait_for(lambda: (fk.live_version("count") or 0) >= 3, timeout=60, what="three versions")
    before = fk.models("count")
    registry = fk.api.handles()["registry"]
    kill(ray.get(registry.pid.remote()))
    # Ray restarts the registry; it reloads every version from disk and takes new ones
    wait_for(lambda: (fk.live_version("count") or 0) > before["version"].max() + 2, timeout=90,
             what="new versions after the registry restarted")
    after = fk.models("count")
    kept = after.set_index("version").loc[before["version"], "checksum"]
    assert list(kept) == list(before["checksum"])
    assert fk.status().loc["count", "status"] == "running"


def test_a_publish_lost_with_the_registry_is_published_again(fk):
    """The registry dies holding a publish (SIGSTOP, so the call is surely in flight, then
    SIGKILL): the events that version held are in the next one, although the stream has
    ended and nothing new is learned (they were in no version at all before)."""
    import threading

    import ray

    n = 5_000
    src = fk.sources.synthetic("clicks", rate=20_000, seed=5, max_events=n)
    fk.stream("clicks", source=src, batch_size=500)
    fk.train("count", on="clicks", label="clicked", model=OffsetCounter(n), publish_every=None)
    wait_for(lambda: events_seen(fk, "count") >= n, timeout=90, what="every event learned")
    registry = fk.api.handles()["registry"]
    pid = ray.get(registry.pid.remote())
    answer: list = []
    os.kill(pid, signal.SIGSTOP)
    try:
        publishing = threading.Thread(target=lambda: answer.append(fk.publish("count")),
                                      daemon=True)
        publishing.start()
        wait_for(lambda: fk.infos("count")[0].get("published", 0) >= 1, timeout=60,
                 what="the publish sent to the stopped registry")
    finally:
        kill(pid)
    publishing.join(timeout=120)
    assert answer and not answer[0], f"the publish in flight did not fail: {answer}"

    wait_restarted(registry, pid, what="the registry restarted")
    version = fk.publish("count")
    assert version, "nothing published after the registry restarted: the events are lost"
    counts = model_state(fk, "count", version)
    assert (counts == 1).all(), f"{(counts == 0).sum()} events in no version"


def host_handle(actor_id: str):
    """The named stage host with this actor id (hosts are detached, named actors)."""
    import ray

    from fusionkit.control.actors import NAMESPACE
    from fusionkit.control.controller import HOST_PREFIX

    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == NAMESPACE and entry["name"].startswith(HOST_PREFIX):
            actor = ray.get_actor(entry["name"], namespace=NAMESPACE)
            if actor._actor_id.hex() == actor_id:
                return actor
    raise AssertionError(f"no host with id {actor_id}")


@pytest.mark.parametrize("also", ["nothing", "trainer gone"])
def test_controller_killed(fk, also):
    """SIGKILL the controller mid-stream: Ray restarts it, it reads its stage table back and
    adopts the stage actors (or starts a pipeline that lost one again from its checkpoint);
    calls wait through the restart; every event is learned exactly once."""
    import time

    import ray

    seed = 8 if also == "nothing" else 9
    src = fk.sources.synthetic("clicks", rate=5_000, seed=seed, max_events=N_EVENTS)
    fk.stream("clicks", source=src, batch_size=500)
    fk.train("count", on="clicks", label="clicked", model=OffsetCounter(N_EVENTS),
             publish_every=None)
    seen = lambda: fk.infos("count")[0].get("events_seen", 0)  # noqa: E731
    wait_for(lambda: seen() >= N_EVENTS // 8, timeout=60, what="first events learned")
    assert fk.checkpoint() is not None
    controller = fk.controller_info()
    before, pid, restarts = controller.stages, controller.pid, controller.restarts
    n_recoveries = len(fk.recoveries())
    trainer = host_handle(before["count"][0]) if also == "trainer gone" else None
    kill(pid)
    t0 = time.monotonic()
    if trainer is not None:  # gone for good while the controller is down
        ray.kill(trainer, no_restart=True)
    info = fk.controller_info()  # waits through the restart
    print(f"controller answered again {time.monotonic() - t0:.2f}s after SIGKILL")
    assert info.restarts == restarts + 1
    assert info.pid != pid
    assert set(info.stages) == {"clicks", "count"}
    wait_for(lambda: len(fk.recoveries()) > n_recoveries, timeout=90, what="the restart recorded")
    rec = fk.recoveries().iloc[-1]
    print(f"controller recovery: {rec.to_dict()}")
    assert rec["stage"] == "(controller)"
    wait_for(lambda: seen() >= N_EVENTS, timeout=120, what="every event learned after the restart")
    after = fk.controller_info().stages
    if also == "nothing":  # the very same stage actors, adopted
        assert after["clicks"] == before["clicks"] and after["count"] == before["count"]
    else:  # started again on fresh hosts from the checkpoint
        assert after["count"] != before["count"]
        assert rec["checkpoint"] is not None
    counts = learned_counts(fk, "count")
    assert counts.sum() == N_EVENTS, f"learned {counts.sum()} events, produced {N_EVENTS}"
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    assert fk.checkpoint() is not None  # checkpoints go on under the restarted controller
