"""Warm stage hosts: worker processes started ahead of time, which become stage actors.

Starting a Ray actor means starting a Python process and importing pandas, River and Ray
(about 4 s on a laptop). The controller keeps a few hosts started and warm, so defining a
stage (re-running a notebook cell) takes a host that is ready and returns at once; a new
spare host is started in the background.
"""

from __future__ import annotations

import warnings
from typing import Any

WORKERS = ("stream", "train", "join")
FORWARDED = ("probe", "start", "stop", "pause", "resume", "info", "peek", "set_targets",
             "get_state", "set_state", "dead_letters", "publish_now", "flush_chain",
             "request_checkpoint", "checkpoint_done", "restore", "set_upstream",
             "watch_drift", "hold", "wake")


class StageHost:
    """A warm process that becomes one stage actor (``become``) and forwards calls to it."""

    def __init__(self) -> None:
        # import what every stage needs while nobody waits
        from fusionkit.streaming import worker as _stream  # noqa: F401
        from fusionkit.training import worker as _train  # noqa: F401

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
            self.become(*again)

    def ready(self) -> bool:
        return True

    def become(self, worker: str, *args: Any) -> bool:
        from fusionkit.streaming.worker import StreamWorker
        from fusionkit.training.worker import TrainWorker

        if worker == "join":
            from fusionkit.streaming.join_worker import JoinWorker as cls
        else:
            cls = {"stream": StreamWorker, "train": TrainWorker}[worker]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.impl = cls(*args)
        self.role = worker
        return True

    def push(self, sender: str, seq: int, batch: Any, epoch: int = 0) -> None:
        return self.impl.push(sender, seq, batch, epoch)


def _forwarder(name: str):
    def method(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.impl, name)(*args, **kwargs)

    method.__name__ = name
    method.__qualname__ = f"StageHost.{name}"
    return method


for _name in FORWARDED:
    setattr(StageHost, _name, _forwarder(_name))
