"""A failing stage fails a notebook run under nbval, with the stage's remote traceback.

Every tutorial in ``notebooks/`` runs under nbval (``--nbval-lax`` is in the pytest options
and ``notebooks`` in the test paths), each in a fresh kernel with its own local Ray; the
handles' ``text/html`` fallback and live widgets are checked in ``test_magics.py``, and the
browser test runs the quickstart in JupyterLab. The deliberately failing notebook in
``tests/notebooks`` must fail ``pytest --nbval-lax`` (run in a subprocess), which is what
CI relies on to catch a broken pipeline, and the report must show why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAILING = ROOT / "tests" / "notebooks" / "failing_stage.ipynb"

pytestmark = pytest.mark.slow


def test_failing_notebook_fails_nbval(tmp_path):
    env = {**os.environ, "FUSIONKIT_HOME": str(tmp_path / "fusionkit-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), str(FAILING)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    report = proc.stdout + proc.stderr
    assert proc.returncode != 0, report
    assert "StageFailedError" in report and "stage 'broken' (probe) failed" in report
    assert "explode" in report  # the remote frames of the stage's function
    assert "1 failed" in report, report
