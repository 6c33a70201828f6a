"""The quickstart runs top to bottom with nbclient, and a failing stage fails a notebook run.

Every tutorial in ``notebooks/`` also runs under nbval (``--nbval-lax`` is in the pytest
options and ``notebooks`` in the test paths). Here the quickstart runs once more with
nbclient, in a fresh kernel (its own local Ray), so its outputs can be checked: the status
tables' ``text/html`` fallback and the live widgets. The deliberately failing notebook in
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
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
FAILING = ROOT / "tests" / "notebooks" / "failing_stage.ipynb"

pytestmark = pytest.mark.slow


def execute(path: Path, tmp_path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """Run ``path`` in a new kernel started in its folder; raise on the first error."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


def outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def test_quickstart_runs_with_nbclient_and_shows_its_stages(tmp_path):
    nb = execute(QUICKSTART, tmp_path)
    assert not [o for o in outputs(nb) if o.output_type == "error"]
    shown = [o for o in outputs(nb) if o.output_type in ("execute_result", "display_data")]
    html = "".join(o.data.get("text/html", "") for o in shown)
    for stage in ("clicks", "ctr", "ctr-api"):
        assert f"<b>{stage}</b>" in html  # the status tables' text/html fallback
    widgets = [o for o in shown if "application/vnd.jupyter.widget-view+json" in o.data]
    assert widgets, "live status widgets were displayed"
    assert any("stopped" in o.data.get("text/plain", "") for o in shown)


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
