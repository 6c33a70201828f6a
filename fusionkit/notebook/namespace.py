"""The user's namespace: run a ``%%fusion`` cell body there and pick what the stage takes.

The body is ordinary Python, run like any cell (IPython's transformations apply, its lines
show in tracebacks). The stage then takes what the body defined at top level: a function
for ``stream``, a model for ``train``, or the variable named with ``--fn`` / ``--model``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import pandas as pd

from fusionkit._suggest import did_you_mean
from fusionkit.notebook.parsing import HINT, CellError, FusionUsageError

LEARNER_METHODS = ("learn_one", "learn_many", "learn", "partial_fit")


def run_body(shell: Any, cell: str) -> list[str]:
    """Run ``cell`` in the user namespace; return the names it binds at top level, in order.

    Exceptions raised by the body propagate unchanged, with the body's lines in the
    traceback.
    """
    source = shell.transform_cell(cell)
    filename = shell.compile.cache(source, shell.execution_count, raw_code=cell)
    code = shell.compile(source, filename, "exec")
    exec(code, shell.user_global_ns, shell.user_ns)
    return top_level_names(source)


def top_level_names(source: str) -> list[str]:
    """Names a piece of code binds at module level (defs, classes, assignments), in order."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    seen: dict[str, None] = {}
    for name in names:
        seen.pop(name, None)
        seen[name] = None  # a name bound twice counts where it was bound last
    return list(seen)


def is_function(value: Any) -> bool:
    return callable(value) and not isinstance(value, type) and not is_model(value)


def is_model(value: Any) -> bool:
    return not isinstance(value, type) and any(
        callable(getattr(value, m, None)) for m in LEARNER_METHODS)


def lookup(ns: dict[str, Any], name: str, flag: str, accept: Callable[[Any], bool],
           what: str) -> Any:
    """The variable ``name`` of the namespace, checked to be ``what``."""
    if name not in ns:
        fits = [k for k, v in ns.items() if not k.startswith("_") and accept(v)]
        raise FusionUsageError(
            f"{flag} {name}: there is no variable {name!r} in the notebook"
            f"{did_you_mean(name, fits, HINT)}")
    value = ns[name]
    if not accept(value):
        raise FusionUsageError(f"{flag} {name}: {name!r} is a {type(value).__name__}, not {what}")
    return value


def pick_function(ns: dict[str, Any], bound: list[str], fn: str | None) -> Callable | None:
    """The stream stage's function: ``--fn NAME``, else the one function the cell defined."""
    if fn is not None:
        return lookup(ns, fn, "--fn", callable, "a function")
    functions = [n for n in bound if is_function(ns.get(n))]
    if len(functions) == 1:
        return ns[functions[0]]
    if not functions:
        raise CellError(
            "the cell defines no function: define one that takes a DataFrame of events and "
            "returns one (def featurize(df): ...), or name one with --fn NAME")
    listing = ", ".join(functions)
    raise CellError(f"the cell defines several functions ({listing}): name the one the "
                    f"stage runs with --fn {functions[-1]}")


def pick_model(ns: dict[str, Any], bound: list[str], model: str | None) -> Any:
    """The train stage's model: ``--model VAR``, else ``model`` or the one model the cell made."""
    if model is not None:
        return lookup(ns, model, "--model", lambda v: not isinstance(v, type), "a model")
    if "model" in bound and ns.get("model") is not None:
        return ns["model"]
    models = [n for n in bound if is_model(ns.get(n))]
    if len(models) == 1:
        return ns[models[0]]
    if not models:
        raise CellError(
            "the cell defines no model: assign one to `model` "
            "(model = linear_model.LogisticRegression()), or name a variable with --model VAR")
    raise CellError(f"the cell defines several models ({', '.join(models)}): assign the one "
                    f"to train to `model`, or name it with --model {models[-1]}")


def is_source_data(value: Any) -> bool:
    """What ``--source VAR`` accepts: a fusionkit source or a DataFrame to replay."""
    from fusionkit.sources.base import Source

    return isinstance(value, Source | pd.DataFrame)
