"""``fk.shutdown()`` ends the dashboard's updates before Ray goes down.

An updater still running after ``ray.shutdown()`` calls a handle, and Ray's auto-init then
starts a new local Ray instance from the updater's thread, in the kernel, while the old one
is being taken down (seen in 2 of 3 runs of a plain connect / dashboard / shutdown script).
The driver runs in a process of its own, since a pytest process joins one Ray (the
session's) and this one is shut down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 420  # generous: a loaded machine starts Ray slowly

DRIVER = r"""
import json, sys
import ray
import fusionkit as fk

fk.connect(num_cpus=2, storage=sys.argv[1], checkpoint_every=None)
board = fk.dashboard(interval="50ms")  # no view yet: it updates (20 times a second)
deadline = __import__("time").monotonic() + 120
while board.updates < 3:  # a condition with a deadline, not a sleep
    assert __import__("time").monotonic() < deadline, "no dashboard updates"
    board._wake.wait(0.05)
fk.shutdown()
print("RESULT " + json.dumps({"running": board.running, "closed": board.closed,
                              "ray": ray.is_initialized(), "error": board.error}), flush=True)
"""


def test_shutdown_ends_the_dashboard_updates_before_ray_goes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", DRIVER, str(tmp_path / "storage")], env=env,
                         capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-2000:] + out.stderr[-4000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result == {"running": False, "closed": True, "ray": False, "error": None}, \
        out.stderr[-3000:]
    assert out.stderr.count("Started a local Ray instance") <= 1, out.stderr[-3000:]
