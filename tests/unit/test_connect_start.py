"""Starting a local Ray again after a start-up timeout: only Ray's leftovers are ended."""

from __future__ import annotations

import subprocess
import sys

from fusionkit.connect import _end_children


def test_end_children_ends_ray_processes_only():
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    ray_like = subprocess.Popen([*sleeper, "ray::IDLE"])  # named like a Ray worker
    other = subprocess.Popen(sleeper)  # e.g. a server the notebook started
    try:
        _end_children()
        assert ray_like.wait(timeout=10) is not None
        assert other.poll() is None
    finally:
        for p in (ray_like, other):
            p.kill()
            p.wait()
