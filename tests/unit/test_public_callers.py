"""Nothing outside ``fusionkit/``, nor the notebook layer inside it, calls the controller's
methods by name.

The controller's remote methods (``ping``, ``pid``, ``actors``, ``spec``, ``wait_warm``...)
are its own business: the control plane is being reshaped behind them. Tests, benchmarks,
docs and notebooks use what a user has, the public API (``fk.controller_info()``,
``fk.wait_warm()``, ``fk.stage(name).spec``, ``StageHandle.actor_ids()``, ``fk.infos``),
so what they show is what a user can do, and a renamed controller method breaks nothing
outside the package. The magics and the dashboard (``fusionkit/notebook``) are a user of the
same kind: they stand on ``fusionkit.stages`` and the API, never on the controller's names.
"""

from __future__ import annotations

import re
from pathlib import Path

import fusionkit

REPO = Path(fusionkit.__file__).parent.parent

# each: a way to reach the controller's methods by name
BY_NAME = {
    "fk.api.call / fusionkit.api.call": re.compile(r"\bapi\.call\("),
    "call imported from fusionkit.api or fusionkit.connect":
        re.compile(r"from fusionkit\.(?:api|connect) import [^\n]*\bcall\b"),
    "the controller handle of fusionkit.connect":
        re.compile(r"from fusionkit\.connect import [^\n]*\bcontroller\b|\bconnect\.controller\b"),
    "a method of the controller handle":
        re.compile(r"\bcontroller(?:\(\))?\.\w+\.remote\("),
    "the controller actor by its name":
        re.compile(r"get_actor\(\s*(?:CONTROLLER|[\"']fusionkit-controller[\"'])"),
}


def _callers() -> list[Path]:
    here = Path(__file__).resolve()
    files = [*REPO.glob("tests/**/*.py"), *REPO.glob("benchmarks/**/*.py"),
             *REPO.glob("docs/**/*.md"), *REPO.glob("notebooks/*.ipynb"),
             *REPO.glob("tests/**/*.ipynb"), REPO / "README.md",
             *REPO.glob("fusionkit/notebook/**/*.py")]
    return sorted(p for p in files if p.resolve() != here and ".ipynb_checkpoints" not in p.parts)


def _by_name(text: str) -> list[str]:
    """Each line of ``text`` that reaches the controller's methods by name, with how."""
    return [f"line {n}: {line.strip()} ({how})"
            for n, line in enumerate(text.splitlines(), 1)
            for how, pattern in BY_NAME.items() if pattern.search(line)]


def test_the_check_sees_each_way_in() -> None:
    """Each form the tests and benchmarks used before the public API had these reports."""
    for line in ('fk.api.call("pid")', 'folder = fk.api.call("ping")["storage"]',
                 "from fusionkit.connect import controller",
                 "ray.get(controller().wait_warm.remote())",
                 "ray.get(fk.connect().controller.actors.remote())",
                 "from fusionkit.api import call",
                 "ray.get_actor(CONTROLLER, namespace=NAMESPACE)"):
        assert _by_name(line), line
    for line in ("fk.controller_info().pid", "fk.wait_warm(120)", "fk.stage('x').spec",
                 "fk.infos('count')", "ray.get(reg.pid.remote())",
                 "fk.api.handles()['registry']", "# the controller answers"):
        assert not _by_name(line), line


def test_nothing_outside_fusionkit_calls_the_controller_by_name() -> None:
    files = _callers()
    assert any(p.name == "_common.py" for p in files) and any(p.suffix == ".md" for p in files)
    assert any(p.name == "commands.py" and p.parent.name == "notebook" for p in files)
    found = [f"{p.relative_to(REPO)} {hit}" for p in files for hit in _by_name(p.read_text())]
    assert not found, ("calls a controller method by name; use the public API "
                       "(fk.controller_info, fk.wait_warm, fk.stage(name).spec, "
                       "StageHandle.actor_ids, fk.infos):\n" + "\n".join(found))


def test_the_public_api_has_the_controllers_reports() -> None:
    for name in ("controller_info", "ControllerInfo", "wait_warm", "stage", "infos",
                 "StageHandle"):
        assert name in fusionkit.__all__ and hasattr(fusionkit, name), name
    assert isinstance(fusionkit.StageHandle.spec, property)
    assert callable(fusionkit.StageHandle.actor_ids)
