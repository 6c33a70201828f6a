"""Multi-node scenarios, each run in its own process by test_cluster.py.

A pytest process joins one Ray (the session's); a cluster of several nodes needs a Ray of
its own, so each scenario runs here: ``python cluster_scenarios.py <scenario> <folder>``.
It prints ``RESULT <json>`` on success and exits non-zero on a failed check.

- ``nodes``: a head and two worker nodes (``ray.cluster_utils.Cluster``), one cluster for
  two parts (starting one takes a while). Placement: stages pinned with ``resources=``
  land on the nodes that offer them, ``placement="spread"`` spreads a parallel stream, an
  unknown resource is refused at once. Node loss: the train stage runs on a worker node,
  that node is removed mid-stream; the trainer comes back on the other worker, the
  pipeline rolls back to its checkpoint and every event is learned exactly once.
- ``address <host:port>``: a cluster started with ``ray start --head`` (by the test),
  joined by address; a small stream -> train runs to the end.
"""

from __future__ import annotations

import json
import sys
import time

from _pipelines import OffsetCounter, events_seen, learned_counts

import fusionkit as fk


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def nodes_of(name: str) -> list[str]:
    return list(fk.actors(name)["node"])


def agent_ports() -> dict[str, int]:
    """Ports for a node's agents, chosen here: with 0 the raylet waits for the agents to
    write theirs, and gives up after 15 s (a loaded machine starts Python slowly)."""
    import socket

    socks = [socket.socket() for _ in range(4)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return dict(zip(["metrics_agent_port", "metrics_export_port", "runtime_env_agent_port",
                     "dashboard_agent_listen_port"], ports, strict=True))


START_ATTEMPTS = 4


def stop(cluster) -> None:
    import ray

    fk.shutdown()
    ray.shutdown()  # the driver leaves first: a cluster refuses to remove a node it is on
    cluster.shutdown()


def start_cluster(folder: str):
    """A head and two worker nodes. A node whose raylet gave up waiting for its agents (a
    loaded machine) is a failed start: everything this attempt started is ended, and the
    cluster is started again, a few times."""
    from ray.cluster_utils import Cluster

    from fusionkit.connect import _end_children

    t0 = time.monotonic()
    for attempt in range(1, START_ATTEMPTS + 1):
        cluster = None
        try:
            # few CPUs per node (stage actors ask for none); custom resources name the nodes
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 1, "resources": {"head": 1}, "include_dashboard": False,
                **agent_ports()})
            workers = [cluster.add_node(num_cpus=1, resources={f"w{i}": 1, "trainer": 1},
                                        **agent_ports()) for i in (1, 2)]
            cluster.wait_for_nodes()
            break
        except Exception as exc:
            print(f"cluster start {attempt} of {START_ATTEMPTS} failed: {exc}", flush=True)
            if cluster is not None:
                try:
                    cluster.shutdown()
                except Exception:
                    pass
            _end_children()
            if attempt == START_ATTEMPTS:
                raise
    t1 = time.monotonic()
    fk.connect(address=cluster.address, storage=f"{folder}/storage", checkpoint_every=None)
    print(f"TIMING three nodes started in {t1 - t0:.1f}s, connected in "
          f"{time.monotonic() - t1:.1f}s", flush=True)
    return cluster, workers


def nodes(folder: str) -> dict:
    cluster, workers = start_cluster(folder)
    try:
        out = {"placement": placement(cluster, workers)}
        fk.stop()
        out["node_loss"] = node_loss(cluster, workers)
        return out
    finally:
        stop(cluster)


def placement(cluster, workers) -> dict:
    w1, w2 = workers
    head = cluster.head_node.node_id
    src = fk.sources.synthetic("clicks", rate=2_000, seed=1)
    fk.stream("clicks", source=src, batch_size=200, resources={"w1": 0.5})
    fk.train("count", on="clicks", label="clicked", model=OffsetCounter(10_000_000),
             publish_every=None, resources={"w2": 1})
    wait_for(lambda: events_seen(fk, "count") > 1_000, 60, "events learned across nodes")
    stream_nodes, train_nodes = nodes_of("clicks"), nodes_of("count")
    assert stream_nodes == [w1.node_id], (stream_nodes, w1.node_id)
    assert train_nodes == [w2.node_id], (train_nodes, w2.node_id)
    # the hints travel with the spec (the controller's stage table)
    spec = fk.stage("count").spec
    assert spec.resources == {"w2": 1.0} and spec.placement == "pack", spec

    fk.stream("wide", source=fk.sources.synthetic("wide", rate=2_000, seed=2),
              batch_size=200, parallelism=3, key_by="user_id", placement="spread", start=True)
    wait_for(lambda: all(i["status"] == "running" for i in fk.infos("wide")),
             60, "the spread stream running")
    spread = nodes_of("wide")  # fusionkit gives each actor the next node in turn
    assert len(spread) == 4, spread

    try:
        fk.stream("nowhere", source=fk.sources.synthetic("x", rate=10), resources={"gpu9": 1})
    except fk.FusionError as exc:
        refused = str(exc)
    else:
        raise AssertionError("a resource no node offers was accepted")
    assert "gpu9" in refused and "w1" in refused, refused
    assert "nowhere" not in fk.controller_info().stages
    return {"stream": stream_nodes, "train": train_nodes, "spread": spread, "head": head,
            "w1": w1.node_id, "w2": w2.node_id, "refused": refused}


def node_loss(cluster, workers) -> dict:
    n_events = 20_000
    src = fk.sources.synthetic("clicks", rate=4_000, seed=3, max_events=n_events)
    fk.stream("clicks", source=src, batch_size=500, paused=True, resources={"head": 0.5})
    # either worker offers "trainer": the actor can come back on the other one
    fk.train("count", on="clicks", label="clicked", model=OffsetCounter(n_events),
             publish_every=None, resources={"trainer": 1})
    fk.resume("clicks")
    wait_for(lambda: events_seen(fk, "count") >= n_events // 5, 60, "first events learned")
    assert fk.checkpoint() is not None
    wait_for(lambda: events_seen(fk, "count") >= n_events // 3, 60, "more events learned")
    (before,) = nodes_of("count")
    victim = next(w for w in workers if w.node_id == before)
    survivor = next(w for w in workers if w is not victim)
    infra = infra_nodes()
    head = cluster.head_node.node_id
    assert len(infra) == 3 and set(infra.values()) == {head}, (infra, head)
    t0 = time.monotonic()
    cluster.remove_node(victim)
    wait_for(lambda: len(fk.recoveries()) > 0, 120, "a recovery after the node loss")
    recovered_s = time.monotonic() - t0
    wait_for(lambda: events_seen(fk, "count") >= n_events, 120,
             "every event learned after the node loss")
    counts = learned_counts(fk, "count")
    assert counts.sum() == n_events, f"learned {counts.sum()} events, produced {n_events}"
    assert (counts == 1).all(), f"{(counts == 0).sum()} lost, {(counts > 1).sum()} twice"
    (after,) = nodes_of("count")
    assert after == survivor.node_id, (after, survivor.node_id, before)
    rec = fk.recoveries().iloc[-1].to_dict()
    assert rec["stage"] == "count" and rec["checkpoint"] is not None, rec
    assert fk.status().loc["count", "restarts"] >= 1
    return {"train_node_before": before, "train_node_after": after,
            "recovery_s": rec["seconds"], "node_removed_to_recovered_s": recovered_s,
            "checkpoint": int(rec["checkpoint"]), "learned": int(counts.sum()),
            "victim": victim.node_id, "infra_before": infra, "infra_after": infra_nodes()}


def infra_nodes() -> dict[str, str]:
    """The nodes of the controller, the registry and the monitor (from Ray's actor table)."""
    import ray

    from fusionkit.control.actors import CONTROLLER, MONITOR, REGISTRY

    out = {}
    for a in ray._private.state.actors().values():
        if a.get("Name") in (CONTROLLER, MONITOR, REGISTRY) and a.get("State") == "ALIVE":
            out[a["Name"]] = a["Address"]["NodeID"]
    return out


def address(folder: str, addr: str) -> dict:
    n_events = 5_000
    conn = fk.connect(address=addr, storage=f"{folder}/storage", checkpoint_every=None)
    try:
        assert not conn.started_ray
        src = fk.sources.synthetic("clicks", rate=5_000, seed=4, max_events=n_events)
        fk.stream("clicks", source=src, batch_size=500, paused=True)
        fk.train("count", on="clicks", label="clicked", model=OffsetCounter(n_events),
                 publish_every=None)
        fk.resume("clicks")
        wait_for(lambda: events_seen(fk, "count") >= n_events, 60, "every event learned")
        counts = learned_counts(fk, "count")
        assert counts.sum() == n_events and (counts == 1).all(), counts.sum()
        return {"address": conn.address, "learned": int(counts.sum()),
                "nodes": sorted(set(fk.actors()["node"]))}
    finally:
        fk.shutdown()


if __name__ == "__main__":
    scenario, folder, *rest = sys.argv[1:]
    t = time.monotonic()
    out = {"nodes": nodes, "address": address}[scenario](
        folder, *rest)
    out["seconds"] = round(time.monotonic() - t, 1)
    print("RESULT " + json.dumps(out), flush=True)
