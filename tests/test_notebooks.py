"""A failing stage fails a notebook run, under nbclient and under nbval.

Every tutorial in ``notebooks/`` runs under nbval (``--nbval-lax`` is in the pytest options
and ``notebooks`` in the test paths), each in a fresh kernel with its own local Ray; the
handles' ``text/html`` fallback and live widgets are checked in ``test_magics.py``, and the
browser test runs the quickstart in JupyterLab. The deliberately failing notebook in
``tests/notebooks`` must fail both nbclient and ``pytest --nbval-lax`` (run in a
subprocess), which is what CI relies on to catch a broken pipeline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
FAILING = ROOT / "tests" / "notebooks" / "failing_stage.ipynb"

pytestmark = pytest.mark.slow


def execute(path: Path, tmp_path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run ``path`` in a new kernel started in its folder; raise on the first error."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


def test_failing_notebook_fails_nbclient(tmp_path):
    with pytest.raises(CellExecutionError) as err:
        execute(FAILING, tmp_path)
    message = str(err.value)
    assert "StageFailedError" in message and "stage 'broken' (probe) failed" in message
    assert "explode" in message  # the remote frames of the stage's function


def test_failing_notebook_fails_nbval(tmp_path):
    env = {**os.environ, "FUSIONKIT_HOME": str(tmp_path / "fusionkit-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(tmp_path), str(FAILING)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    report = proc.stdout + proc.stderr
    assert proc.returncode != 0, report
    assert "StageFailedError" in report and " failed" in report
