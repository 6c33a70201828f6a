"""``fusionkit demo`` from the command line ends cleanly: its last words are the summary and
the report's path, with none of Ray's noise about actors killed under waiting calls.

The demo starts a local Ray of its own and takes it down again, in a subprocess, as a user
runs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

NOISE = ("graceful_shutdown", "listen_for_change", "killed by `ray.kill`", "(raylet)",
         "Traceback", "UserWarning", "Started Serve", "INFO")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_ends_with_the_summary_and_the_report_path(tmp_path):
    report = tmp_path / "report.html"
    env = {**os.environ, "FUSIONKIT_HOME": str(tmp_path / "fusionkit-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "fusionkit.cli", "demo", "--seconds", "4", "--rate", "1000",
         "--qps", "10", "--port", str(free_port()), "--report", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    both = proc.stdout + proc.stderr
    assert proc.returncode == 0, both
    assert [n for n in NOISE if n in both] == [], both
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines[-1] == f"report: {report}", both
    assert any(line.startswith("events learned") for line in lines), both
    # the summary says what its freshness figures measure
    assert any(line.startswith("freshness: per event, the time from") for line in lines), both
    # the progress lines' clock starts with the stream, and the drift is marked among them
    assert any(line.startswith("-- concept drift at event ") for line in lines), both
    counts = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in lines
              if line.startswith(("events streamed", "events learned"))}
    assert counts["events learned"] == counts["events streamed"], both
    assert report.is_file()
