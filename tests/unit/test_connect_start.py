"""Starting a local Ray: again after a start-up timeout (only Ray's leftovers are ended),
and with fusionkit's worker path first on the workers' PYTHONPATH."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import wait_for

from fusionkit.connect import WORKER_PATH, _end_children, worker_pythonpath


def test_end_children_ends_ray_processes_only():
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    ray_like = subprocess.Popen([*sleeper, "ray::IDLE"])  # named like a Ray worker
    other = subprocess.Popen(sleeper)  # e.g. a server the notebook started
    try:
        # a child is named by its command line once it has exec'ed (a Ray worker has long
        # before fusionkit ends it); until then it shows this process's
        wait_for(lambda: "ray::IDLE" in psutil.Process(ray_like.pid).cmdline(), timeout=30,
                 what="the child's command line")
        _end_children()
        assert ray_like.wait(timeout=10) is not None
        assert other.poll() is None
    finally:
        for p in (ray_like, other):
            p.kill()
            p.wait()


def test_worker_path_stand_in_defers_rfc3987_syntax_and_hands_over():
    """A fresh interpreter with fusionkit's worker path first imports ray without building
    rfc3987_syntax's parsers, and jsonschema's IRI check still gives the real answers."""
    pytest.importorskip("rfc3987_syntax")
    code = (
        "import sys, ray\n"
        "m = sys.modules['rfc3987_syntax']\n"
        "print(m.__file__.startswith(sys.argv[1]))\n"
        "from jsonschema import FormatChecker\n"
        "fc = FormatChecker(['iri'])\n"
        "print(fc.conforms('https://example.org/a?b#c', 'iri'), fc.conforms('::not an iri', 'iri'))\n"
        "print(sys.modules['rfc3987_syntax'].__file__.startswith(sys.argv[1]))\n"
    )
    env = dict(os.environ, PYTHONPATH=worker_pythonpath(""))
    out = subprocess.run([sys.executable, "-c", code, WORKER_PATH], env=env, text=True,
                         capture_output=True, check=True, timeout=120).stdout.split()
    assert out == ["True", "True", "False", "False"]


def test_worker_pythonpath_puts_the_stand_in_first_once():
    path = worker_pythonpath(os.pathsep.join(["/a", WORKER_PATH, "", "/b"]))
    assert path.split(os.pathsep) == [WORKER_PATH, "/a", "/b"]
    assert Path(WORKER_PATH, "rfc3987_syntax", "__init__.py").is_file()
