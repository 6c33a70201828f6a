"""The embedded Ray is reachable from this machine only: after ``fk.connect()`` with no
address, every TCP listener of that Ray (GCS, raylet, agents, the driver, every worker and
actor) is on the loopback interface.

A pytest process joins one Ray (the session's, tests/conftest.py), so the embedded Ray is
started by a process of its own, in a new process session: the Ray's processes are those of
that session (and any that names the Ray's session folder), and only those are ended
afterwards; other Rays on the machine are never looked at or touched.
"""

from __future__ import annotations

import ipaddress
import json
import os
import queue
import subprocess
import sys
import threading
import time

import psutil
from _pipelines import end_session

TIMEOUT = 420  # generous: a loaded machine starts Ray slowly

# The driver: connect, report where the Ray is, hold it until told to stop.
DRIVER = r"""
import json, os, sys
import ray
from ray._private import ray_constants
import fusionkit as fk

switch = ray_constants.ENABLE_RAY_CLUSTER
conn = fk.connect(num_cpus=2, storage=sys.argv[1], checkpoint_every=None)
ray.get(ray.remote(lambda: 1).remote())  # one more worker, running a task
print("fusionkit from", fk.__file__, flush=True)
node = ray._private.worker.global_worker.node
print("READY " + json.dumps({
    "session_dir": node.get_session_dir_path(), "node_ip": node.node_ip_address,
    "address": conn.address, "started_ray": conn.started_ray,
    "switch_restored": ray_constants.ENABLE_RAY_CLUSTER == switch}), flush=True)
sys.stdin.readline()
fk.shutdown()
print("DONE", flush=True)
"""

# Another driver of this machine joins that Ray by its loopback address.
JOINER = r"""
import sys
import fusionkit as fk

conn = fk.connect(address=sys.argv[1], storage=sys.argv[2], checkpoint_every=None)
print("JOINED", conn.started_ray, flush=True)
"""


def join(address: str, storage: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", JOINER, address, storage], env=env,
                          cwd=os.path.dirname(storage), capture_output=True, text=True,
                          timeout=TIMEOUT)


def is_loopback(host: str) -> bool:
    addr = ipaddress.ip_address(host.split("%")[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # ::ffff:127.0.0.1, an IPv6 socket bound to 127.0.0.1
    return addr.is_loopback


def ray_processes(sid: int, session_dir: str) -> dict[int, str]:
    """pid -> name of every process of process session ``sid`` or naming ``session_dir``
    in its command line, and their children."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if os.getsid(p.pid) == sid or session_dir in " ".join(p.info["cmdline"] or ()):
                found[p.pid] = p
                found.update((c.pid, c) for c in p.children(recursive=True))
        except (ProcessLookupError, PermissionError, psutil.Error):
            pass
    names = {}
    for pid, p in found.items():
        try:
            names[pid] = p.name()
        except psutil.Error:
            pass
    return names


def tcp_listeners(pids: dict[int, str]) -> list[tuple[str, int, str]]:
    return sorted((c.laddr.ip, c.laddr.port, pids[c.pid])
                  for c in psutil.net_connections(kind="tcp")
                  if c.status == psutil.CONN_LISTEN and c.pid in pids)


def read_until(lines: queue.Queue, prefix: str, output: list[str]) -> str | None:
    """The first line of the driver's output that starts with ``prefix`` (None if the
    driver ended or ``TIMEOUT`` ran out first); every line read is kept in ``output``."""
    deadline = time.monotonic() + TIMEOUT
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            return None
        if line is None:  # the driver's output ended
            return None
        output.append(line)
        if line.startswith(prefix):
            return line
    return None


def test_embedded_ray_listens_on_loopback_only(tmp_path):
    """After ``fk.connect()`` starts its own Ray, no process of that Ray listens on an
    address other than loopback; the GCS address the driver uses is 127.0.0.1; Ray's
    single-machine switch that connect turns for the start is back as it was. Another
    driver joins it by that address with Ray's token (Ray 2.60 turns token authentication
    on for a Ray that ray.init starts) and is refused without it."""
    env = {**os.environ, "FUSIONKIT_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1",
           "RAY_raylet_start_wait_time_s": "120"}  # a busy machine starts a node slowly
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path / "storage")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                            start_new_session=True)
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    output: list[str] = []
    try:
        ready = read_until(lines, "READY ", output)
        assert ready, "the driver did not connect:\n" + "\n".join(output[-80:])
        info = json.loads(ready[len("READY "):])
        pids = ray_processes(proc.pid, info["session_dir"])
        listeners = tcp_listeners(pids)
        print("\n".join(f"{host}:{port} {name}" for host, port, name in listeners))
        names = {name for _, _, name in listeners}
        # the Ray's own servers were found, so the check below looks at the right processes
        assert {"gcs_server", "raylet"} <= names, listeners
        exposed = [row for row in listeners if not is_loopback(row[0])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        assert info["started_ray"] and info["node_ip"] == "127.0.0.1"
        assert info["address"].startswith("127.0.0.1:")
        assert info["switch_restored"]

        # a driver with Ray's token joins it by its loopback address; one without is refused
        storage = str(tmp_path / "storage")
        joined = join(info["address"], storage, {**env, "RAY_AUTH_MODE": "token"})
        assert "JOINED False" in joined.stdout, joined.stdout + joined.stderr[-4000:]
        stranger = {k: v for k, v in env.items() if not k.startswith("RAY_AUTH")}
        stranger["HOME"] = str(tmp_path / "stranger")  # no ~/.ray/auth_token there
        os.makedirs(stranger["HOME"])
        refused = join(info["address"], storage, stranger)
        assert refused.returncode != 0 and "JOINED" not in refused.stdout
        assert "InvalidAuthToken" in refused.stdout + refused.stderr, refused.stderr[-4000:]
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert read_until(lines, "DONE", output), "\n".join(output[-80:])
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        end_session(proc.pid)
