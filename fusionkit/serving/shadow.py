"""Shadow models: each answers every request too, off the response path, into the log only.

The request is answered by the primary (or a canary) first; only then is it offered to the
replica's shadow queue. The shadows answer in a worker process of their own (``ShadowWorker``,
a Ray actor the replica starts on its node, which dies with it), not in the replica: a
shadow's prediction holds the GIL of the process it runs in, and in the replica that would
delay the next client's request by as long as the shadow takes (a 100-row request answered
by a River model: milliseconds).

The replica sends what queued up in one call to the worker, one call at a time and at most
every ``LINGER`` seconds unless a full call's worth waits, so the cost of a Ray call in the
replica is shared by the requests of that interval. That cost is the shadow's only one on
the replica's side, and it falls on the requests answered meanwhile (the call's threads
take the GIL and a core). Measured with serve_latency.py on 2 cores: with a call every
20 ms, a worker answering nothing still made 100-row requests 13% slower (one run); with
the worker answering, 100-row requests were 16% (HTTP) and 22% (handle) slower at p50 at a
call every 20 ms, 12% and 15% at 100 ms (medians of three runs each).

The worker answers each request with each shadow model and appends the rows to the served
log (its own files in it) under the request's ids and time, with ``_role="shadow"``, so
that a join gives a shadow's rows the same outcomes as the client's.

Bounded: at most ``SHADOW_QUEUE`` requests wait in a replica; a shadow slower than the
traffic drops the requests there is no room for, counted per model (``dropped``, in the
replica's report and ``shadow_dropped`` in its totals), rather than queueing without bound
or slowing the answers. A shadow that fails on a request (a model error, rows its schema
refuses) counts ``shadow_errors`` and changes nothing for the client; so does a worker that
died (Ray starts it again, and it loads the shadows again).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import deque
from typing import Any

import ray

from fusionkit._clock import monotonic
from fusionkit.runtime.specs import ServeSpec
from fusionkit.runtime.stage import Reporter
from fusionkit.serving.holder import ModelHolder

log = logging.getLogger("fusionkit")
SHADOW_QUEUE = 256  # requests waiting for the shadow models, at most, per replica
BATCH_ROWS = 2_000  # rows sent to the worker in one call, at most (pickled with the GIL held)
LINGER = 0.1  # seconds from one call to the worker to the next, unless a full call waits
NICE = 10  # where SCHED_IDLE is missing: niceness above the replica's (19 at most)
FIRST_WAIT = 5.0  # seconds a worker waits for a shadow it has not loaded yet (a restart)

# a request for the shadows: (models, rows, request ids, when it was answered)
Request = tuple[tuple[str, ...], Any, list[str], float]


class ShadowPool:
    """A replica's queue of requests for its shadow models, and the thread that sends them to
    its shadow worker (``server``: the replica's ModelServer)."""

    def __init__(self, server: Any, size: int = SHADOW_QUEUE):
        self.server = server
        self.size = size
        self.dropped: dict[str, int] = {}
        self.answered: dict[str, int] = {}
        self._queue: deque[Request] = deque()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._worker: Any = None
        self._thread: threading.Thread | None = None

    def follow(self, models: tuple[str, ...], wait: float) -> None:
        """The routing names these shadows: have the worker load them before requests come,
        waiting up to ``wait`` seconds for it (those with a live version)."""
        if not models:
            return
        try:
            ray.get(self.worker().follow.remote(tuple(models), wait), timeout=wait + 30.0)
        except Exception as exc:  # the requests it misses are dropped and counted
            log.warning("fusionkit serve %s: shadow worker loading %s: %s: %s",
                        self.server.spec.name, ", ".join(models), type(exc).__name__, exc)

    def offer(self, models: tuple[str, ...], rows: Any, ids: list[str], t: float) -> None:
        """Queue a request (its rows, their request ids, when it was answered) for each shadow
        model, or drop it, counted for each, when the queue is full."""
        with self._lock:
            if len(self._queue) < self.size:
                self._queue.append((models, rows, ids, t))
                self._queued_rows += _rows(rows)
                models = ()
            if self._thread is None:
                self._thread = threading.Thread(target=self._send, daemon=True,
                                                name="fk-shadow")
                self._thread.start()
        for model in models:  # no room
            self._tally(model, dropped=1)
        self._ready.set()

    def worker(self) -> Any:
        """The replica's shadow worker, started on first use on the replica's node."""
        with self._lock:
            if self._worker is None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                      soft=True)
                self._worker = (_worker_class().options(scheduling_strategy=here)
                                .remote(self.server.spec, self.server.replica))
            return self._worker

    def call(self, batch: list[Request]) -> dict[str, list[int]]:
        """The worker's answer to ``batch``: per model, [answered, dropped, errors]."""
        return ray.get(self.worker().answer.remote(batch))

    def _send(self) -> None:
        while not self.server._stop.is_set():
            if not self._ready.wait(0.5):
                continue
            self._ready.clear()
            batch = self._take()
            if not batch:
                continue
            started = monotonic()
            try:
                tally = self.call(batch)
            except Exception as exc:  # the worker died: Ray starts it again
                log.warning("fusionkit serve %s: shadow worker: %s: %s", self.server.spec.name,
                            type(exc).__name__, exc)
                tally = {m: [0, 0, 0] for models, *_ in batch for m in models}
                for models, *_ in batch:
                    for m in models:
                        tally[m][2] += 1
            for model, (answered, dropped, errors) in tally.items():
                self._tally(model, answered, dropped, errors)
            if self._queued_rows < BATCH_ROWS:  # else a full call waits: at once
                self.server._stop.wait(max(0.0, LINGER - (monotonic() - started)))

    def _take(self) -> list[Request]:
        """The oldest queued requests, up to ``BATCH_ROWS`` rows (at least one request)."""
        batch: list[Request] = []
        rows = 0
        with self._lock:
            while self._queue and (not batch or rows + _rows(self._queue[0][1]) <= BATCH_ROWS):
                batch.append(self._queue.popleft())
                taken = _rows(batch[-1][1])
                rows += taken
                self._queued_rows -= taken
            if self._queue:
                self._ready.set()
        return batch

    def _tally(self, model: str, answered: int = 0, dropped: int = 0, errors: int = 0) -> None:
        if answered:
            self.answered[model] = self.answered.get(model, 0) + answered
        if dropped:
            self.dropped[model] = self.dropped.get(model, 0) + dropped
        counts = {"shadow_answered": answered, "shadow_dropped": dropped,
                  "shadow_errors": errors}
        self.server.reporter.count(**{k: v for k, v in counts.items() if v})


def lower_priority() -> None:
    """Run this process only on CPU time nothing else wants: a shadow on a busy machine
    drops, counted, rather than slow the clients' answers.

    Linux's ``SCHED_IDLE`` does that: the process gets a core almost only when it would
    otherwise idle (its weight is 3, against 36 for a process at niceness 15, where Ray
    starts its workers), and another process that wakes (a replica with a request) takes
    the core from it at once. A niceness alone does less: a worker at 19 (weight 15)
    beside a replica at 15 still gets nearly a third of a shared core, in slices that can
    delay the replica's answer. Where ``SCHED_IDLE`` is missing, the niceness is the fallback."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:  # not allowed here (a restricted container): the niceness
            pass
    os.nice(NICE)


@functools.cache
def _worker_class() -> Any:
    return ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=2)(ShadowWorker)


def _rows(rows: Any) -> int:
    """How many rows a request has (a list of records, or an object of columns)."""
    if isinstance(rows, dict):
        return max((len(v) for v in rows.values() if isinstance(v, list)), default=1)
    return len(rows)


class ShadowWorker(ModelHolder):
    """The process where a replica's shadow models answer (a Ray actor per replica)."""

    def __init__(self, spec: ServeSpec, replica: str):
        # counts go back to the replica with each answer: it reports them
        super().__init__(spec, replica, f"{replica}-shadow",
                         Reporter(None, spec.name, "serve", replica))
        lower_priority()

    def follow(self, models: tuple[str, ...], wait: float) -> None:
        """Follow these models; return once those with a live version are loaded (at most
        ``wait`` seconds)."""
        self._follow_models(models, wait=wait)

    def answer(self, batch: list[Request]) -> dict[str, list[int]]:
        """Answer each request with each of its shadow models; per model, [answered,
        dropped (no live version to answer with), errors]."""
        from fusionkit.serving.routing import SHADOW

        models = dict.fromkeys(m for request in batch for m in request[0])
        self._follow_models(list(models), wait=FIRST_WAIT)  # at once when they are loaded
        tally = {m: [0, 0, 0] for m in models}
        for names, rows, ids, t in batch:
            for model in names:
                loaded = self._models.get(model)
                if loaded is None:  # no live version yet: nothing to answer with
                    tally[model][1] += 1
                    continue
                try:
                    self._answer_with(model, loaded, SHADOW, rows, ids, t)
                    tally[model][0] += 1
                except Exception as exc:  # the client has its answer: count, log, go on
                    tally[model][2] += 1
                    log.warning("fusionkit serve %s: shadow %s: %s: %s", self.spec.name, model,
                                type(exc).__name__, exc)
        return tally
