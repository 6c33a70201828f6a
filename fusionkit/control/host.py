"""Warm stage hosts: worker processes started ahead of time, which become stage actors.

Starting a Ray actor means starting a Python process and importing pandas, River and Ray
(about 4 s on a laptop). The controller keeps a few hosts started and warm, so defining a
stage (re-running a notebook cell) takes a host that is ready and returns at once; a new
spare host is started in the background.

A host is told what to become by an :class:`~fusionkit.runtime.records.Assignment`, and
forwards to the worker it became every public method the worker classes offer
(``FORWARDED``, read from the classes, so a method added to a worker is reachable at once).
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

from fusionkit.runtime.records import WORKERS, Assignment
from fusionkit.runtime.stage import StageActor
from fusionkit.streaming.join_worker import JoinWorker
from fusionkit.streaming.table_worker import TableWorker
from fusionkit.streaming.worker import StreamWorker
from fusionkit.training.worker import TrainWorker

__all__ = ["FORWARDED", "WORKERS", "Assignment", "StageHost"]

WORKER_CLASSES: dict[str, type[StageActor]] = {"stream": StreamWorker, "train": TrainWorker,
                                               "join": JoinWorker, "table": TableWorker}


def public_methods(cls: type) -> set[str]:
    """The methods a class offers callers: its functions (own and inherited) not named
    with a leading underscore."""
    return {name for name, _ in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")}


class StageHost:
    """A warm process that becomes one stage actor (``become``) and forwards calls to it."""

    def __init__(self) -> None:
        self.impl: Any = None
        self.role = "spare"
        self._recover()

    def _recover(self) -> None:
        """After Ray restarted this process, become the stage actor it was again; the
        controller then rolls the pipeline back to its last checkpoint."""
        import ray

        ctx = ray.get_runtime_context()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if not ctx.was_current_actor_reconstructed:
                return
        from fusionkit.runtime.names import CONTROLLER, NAMESPACE

        controller = ray.get_actor(CONTROLLER, namespace=NAMESPACE)
        again = ray.get(controller.host_restarted.remote(ctx.get_actor_id()))
        if again is not None:
            self.become(again)

    def ready(self) -> bool:
        return True

    def become(self, assignment: Assignment) -> bool:
        """Become the stage actor ``assignment`` describes."""
        a = assignment
        cls = WORKER_CLASSES[a.worker]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if a.worker == "stream":
                self.impl = cls(a.spec, a.role, a.index, a.monitor, a.state)
            elif a.worker in ("join", "table"):
                self.impl = cls(a.spec, a.index, a.monitor, a.state)
            else:
                self.impl = cls(a.spec, a.index, a.monitor, a.registry, a.state)
        self.role = a.worker
        return True

    def push(self, sender: str, seq: int, batch: Any, epoch: int = 0) -> None:
        return self.impl.push(sender, seq, batch, epoch)


# every public method of a stage actor, except what the host answers itself
FORWARDED: tuple[str, ...] = tuple(sorted(
    set().union(*(public_methods(c) for c in WORKER_CLASSES.values()))
    - set(vars(StageHost))))


def _forwarder(name: str):
    def method(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.impl, name)(*args, **kwargs)

    method.__name__ = name
    method.__qualname__ = f"StageHost.{name}"
    return method


for _name in FORWARDED:
    setattr(StageHost, _name, _forwarder(_name))
