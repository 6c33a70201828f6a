"""fusionkit's stand-in for ``rfc3987_syntax`` in Ray worker processes: the real package is
loaded on its first use instead of at start-up.

rfc3987_syntax builds about 25 Lark parsers when it is imported, 1.7 s of CPU. jsonschema
imports it when it is installed (JupyterLab's dependencies install it), and every Ray worker
imports jsonschema while it imports ray, so each actor and replica process paid those 1.7 s
before running any code: a stage host started in 1.2 s instead of 0.4 s. ``fusionkit.connect``
puts the folder above this one first on the workers' PYTHONPATH. jsonschema gets the same
names from here, and the first call loads the real package and hands over to it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import threading

_STAND_IN_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_lock = threading.Lock()
_real_module = None


def _real():
    """The installed rfc3987_syntax, imported on first use; it replaces this module in
    ``sys.modules`` so later imports get it directly."""
    global _real_module
    with _lock:
        if _real_module is None:
            search = [p for p in sys.path
                      if os.path.abspath(p or os.curdir) != _STAND_IN_FOLDER]
            spec = importlib.machinery.PathFinder.find_spec(__name__, search)
            if spec is None or spec.loader is None:
                raise ImportError("rfc3987_syntax is not installed", name=__name__)
            module = importlib.util.module_from_spec(spec)
            stand_in = sys.modules.get(__name__)
            sys.modules[__name__] = module  # its `from .syntax_helpers import *` needs it there
            try:
                spec.loader.exec_module(module)
            except BaseException:
                sys.modules[__name__] = stand_in
                raise
            _real_module = module
        return _real_module


def is_valid_syntax(term: str, value: str) -> bool:
    """The name jsonschema imports; see the real ``rfc3987_syntax.is_valid_syntax``."""
    return _real().is_valid_syntax(term, value)


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_real(), name)
