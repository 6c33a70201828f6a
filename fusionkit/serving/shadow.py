"""Shadow models: each answers every request too, off the response path, into the log only.

The request is answered by the primary (or a canary) first; only then is it offered to each
shadow's queue, and a thread per shadow model answers from there and appends its rows to the
served log under the request's ids, with ``_role="shadow"``. The client's latency is the
primary's. The queues are bounded (``SHADOW_QUEUE`` requests): a shadow slower than the
traffic drops the requests it has no room for, counted per model (``dropped``, in the
replica's report and ``shadow_dropped`` in its totals), rather than queueing without bound
or slowing the answers. A shadow that fails on a request (a model error, rows its schema
refuses) counts ``shadow_errors`` and changes nothing for the client.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

log = logging.getLogger("fusionkit")
SHADOW_QUEUE = 256  # requests waiting for a shadow model, at most, per model and replica


class ShadowPool:
    """The shadow models' queues and threads of one replica (``server``: its ModelServer)."""

    def __init__(self, server: Any, size: int = SHADOW_QUEUE):
        self.server = server
        self.size = size
        self.queues: dict[str, queue.Queue] = {}
        self.dropped: dict[str, int] = {}
        self.answered: dict[str, int] = {}
        self._lock = threading.Lock()

    def offer(self, models: tuple[str, ...], rows: Any, ids: list[str], t: float) -> None:
        """Hand a request (its rows, their request ids, when it was answered) to each
        shadow model, or drop it for a shadow whose queue is full."""
        for model in models:
            q = self.queues.get(model) or self._start(model)
            try:
                q.put_nowait((rows, ids, t))
            except queue.Full:
                self.dropped[model] = self.dropped.get(model, 0) + 1
                self.server.reporter.count(shadow_dropped=1)

    def _start(self, model: str) -> queue.Queue:
        with self._lock:
            if model not in self.queues:
                self.queues[model] = queue.Queue(maxsize=self.size)
                threading.Thread(target=self._work, args=(model, self.queues[model]),
                                 daemon=True, name=f"fk-shadow-{model}").start()
            return self.queues[model]

    def _work(self, model: str, q: queue.Queue) -> None:
        from fusionkit.serving.routing import SHADOW

        server = self.server
        while not server._stop.is_set():
            try:
                rows, ids, t = q.get(timeout=0.5)
            except queue.Empty:
                continue
            loaded = server._models.get(model)
            if loaded is None:  # no live version yet: nothing to answer with
                self.dropped[model] = self.dropped.get(model, 0) + 1
                server.reporter.count(shadow_dropped=1)
                continue
            try:
                server._answer_with(model, loaded, SHADOW, rows, ids, t)
                self.answered[model] = self.answered.get(model, 0) + 1
                server.reporter.count(shadow_answered=1)
            except Exception as exc:  # the client has its answer: count, log, go on
                server.reporter.count(shadow_errors=1)
                log.warning("fusionkit serve %s: shadow %s: %s: %s", server.spec.name, model,
                            type(exc).__name__, exc)
