"""A failing stage fails a notebook run under nbval, with the stage's remote traceback.

Every tutorial in ``notebooks/`` runs under nbval (``--nbval-lax`` is in the pytest options
and ``notebooks`` in the test paths), each in a fresh kernel with its own local Ray; the
handles' ``text/html`` fallback and live widgets are checked in ``test_magics.py``, and the
browser test runs the quickstart in JupyterLab. The deliberately failing notebooks in
``tests/notebooks`` must fail ``pytest --nbval-lax`` (run in a subprocess, with the
project's pytest options, as CI runs it), which is what CI relies on to catch a broken
pipeline or a broken magic, and the report must show why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAILING = ROOT / "tests" / "notebooks" / "failing_stage.ipynb"
BROKEN_MAGIC = ROOT / "tests" / "notebooks" / "broken_magic.ipynb"

pytestmark = pytest.mark.slow


def nbval(tmp_path: Path, notebook: Path) -> tuple[int, str]:
    """``pytest --nbval-lax`` on ``notebook`` in a subprocess: its exit code and report."""
    env = {**os.environ, "FUSIONKIT_HOME": str(tmp_path / "fusionkit-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), str(notebook)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def test_failing_notebook_fails_nbval(tmp_path):
    code, report = nbval(tmp_path, FAILING)
    assert code != 0, report
    assert "StageFailedError" in report and "stage 'broken' (probe) failed" in report
    assert "explode" in report  # the remote frames of the stage's function
    assert "1 failed" in report, report


def test_broken_magic_fails_nbval(tmp_path):
    """A misspelled magic raises IPython's own ``UsageError``, which IPython prints instead
    of showing as an error output: nbval alone passes the cell (nbval issue #147); with the
    project's ``-p fusionkit.pytest_nbval`` the kernel's error reply fails it."""
    code, report = nbval(tmp_path, BROKEN_MAGIC)
    assert code != 0, report
    assert "UsageError: Line magic function `%fusoin` not found." in report, report
    assert "1 failed, 2 passed" in report, report  # only the broken cell
