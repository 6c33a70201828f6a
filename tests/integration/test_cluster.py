"""Multi-node Ray: placement hints, the loss of a node, a cluster joined by address.

A pytest process joins one Ray (the session's, tests/conftest.py), so each scenario runs in
a process of its own (cluster_scenarios.py beside this file) with its own Ray cluster, in a
new process session: every process it starts (nodes, workers) carries that session id, and
only those are ended afterwards; other Rays on the machine are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _pipelines import end_session, free_port

SCRIPT = Path(__file__).with_name("cluster_scenarios.py")
TIMEOUT = 420  # generous: a loaded machine starts Ray nodes slowly
ENV = {
    # a busy machine can miss Ray's node start-up wait (30 s by default)
    "RAY_raylet_start_wait_time_s": "120",
    "PYTHONUNBUFFERED": "1",
}


def run(*args: str, tmp_path: Path, env: dict[str, str] | None = None) -> dict:
    env = {**os.environ, **ENV, "FUSIONKIT_HOME": str(tmp_path / "home"), **(env or {})}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    t0 = time.monotonic()
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    finally:
        end_session(proc.pid)
    took = time.monotonic() - t0
    print(out[-8000:])
    print(f"scenario {args[0]}: {took:.1f}s, exit code {proc.returncode}")
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"scenario {args[0]} failed (see its output above)"
    return json.loads(lines[-1][len("RESULT "):])


@pytest.fixture(scope="module")
def nodes_run(tmp_path_factory):
    """One three-node cluster for the placement and node-loss checks (a cluster start is
    the slow part): the scenario's result, or the failure it ran into."""
    folder = tmp_path_factory.mktemp("nodes")
    try:
        return run("nodes", str(folder), tmp_path=folder)
    except AssertionError as exc:
        return exc


def scenario_part(nodes_run, part: str) -> dict:
    if isinstance(nodes_run, AssertionError):
        raise nodes_run
    return nodes_run[part]


def test_stages_land_on_the_nodes_their_hints_name(nodes_run):
    """A head and two workers: resources= pins the stream to w1 and the trainer to w2;
    a parallel stream with placement="spread" has its four actors on all three nodes; a
    resource no node offers is refused at once."""
    out = scenario_part(nodes_run, "placement")
    assert out["stream"] == [out["w1"]] and out["train"] == [out["w2"]]
    assert len({out["head"], out["w1"], out["w2"]}) == 3
    assert len(out["spread"]) == 4
    assert set(out["spread"]) == {out["head"], out["w1"], out["w2"]}
    assert "gpu9" in out["refused"]


def test_node_loss_recovers_exactly_once(nodes_run):
    """Then, on the same cluster, remove the worker node that holds the train stage
    mid-stream: the trainer comes back on the other worker from the last checkpoint;
    every event is learned exactly once."""
    out = scenario_part(nodes_run, "node_loss")
    assert out["learned"] == 20_000
    assert out["train_node_after"] != out["train_node_before"]
    assert out["victim"] not in out["infra_after"].values()


@pytest.fixture()
def ray_head(tmp_path):
    """A real ``ray start --head`` on loopback, with a temp dir of its own; ended afterwards
    by its process session (``ray stop`` would stop every Ray on the machine). Token
    authentication with a token of its own: ``ray start`` turns it on by itself when the
    machine has a ~/.ray/auth_token, and a driver must then present the token."""
    import secrets
    import shutil
    import tempfile

    temp = Path(tempfile.mkdtemp(prefix="fkray-", dir="/tmp"))  # short: Unix socket paths
    port = free_port()
    ray_bin = str(Path(sys.executable).with_name("ray"))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = {**os.environ, **ENV, **auth}
    start = subprocess.Popen(
        [ray_bin, "start", "--head", "--port", str(port), "--num-cpus", "2",
         "--include-dashboard=false", "--node-ip-address", "127.0.0.1",
         "--temp-dir", str(temp), "--disable-usage-stats"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)
    try:
        out, _ = start.communicate(timeout=180)
        assert start.returncode == 0, f"ray start failed:\n{out}"
        yield f"127.0.0.1:{port}", auth
    finally:
        if start.poll() is None:
            start.kill()
        end_session(start.pid)
        shutil.rmtree(temp, ignore_errors=True)


def test_connect_by_address_to_ray_start_head(ray_head, tmp_path):
    """fk.connect(address=...) joins a cluster started with ``ray start --head`` and runs a
    stream -> train to the end, every event learned exactly once."""
    address, auth = ray_head
    out = run("address", str(tmp_path), address, tmp_path=tmp_path, env=auth)
    assert out["learned"] == 5_000
    assert out["address"].endswith(f":{address.split(':')[1]}")


def test_placement_hints_are_checked_before_anything_runs():
    """Bad hints are refused in the caller, with no Ray needed."""
    import fusionkit as fk

    src = fk.sources.synthetic("clicks", rate=10)
    with pytest.raises(ValueError, match="placement must be"):
        fk.stream("s", source=src, placement="everywhere")
    with pytest.raises(ValueError, match="positive amount"):
        fk.stream("s", source=src, resources={"w1": 0})
    with pytest.raises(ValueError, match="positive amount"):
        fk.train("t", on="s", model=None, label="y", resources={"w1": True})
    with pytest.raises(TypeError, match="resources must be a dict"):
        fk.train("t", on="s", model=None, label="y", resources=["w1"])


def test_hints_become_ray_options():
    from fusionkit.control.controller import _placement
    from fusionkit.runtime.specs import StreamSpec, TrainSpec

    assert _placement(StreamSpec("s", source=None)) == {}
    spec = TrainSpec("t", on="s", model=None, label="y",
                     resources={"CPU": 1.0, "GPU": 0.5, "memory": 1e9, "w1": 1.0},
                     placement="spread")
    assert _placement(spec) == {"num_cpus": 1.0, "num_gpus": 0.5, "memory": 1e9,
                                "resources": {"w1": 1.0}, "scheduling_strategy": "SPREAD"}
    assert spec.resources == {"CPU": 1.0, "GPU": 0.5, "memory": 1e9, "w1": 1.0}  # unchanged
