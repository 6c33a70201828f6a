"""The drift watch of a train stage: what ``fk.watch_drift`` attaches to its actor.

After each micro-batch is predicted and learned, the train actor hands the batch, the
labels, the predictions and its learner to its :class:`DriftWatch`, which

- turns predictions into per-event errors (vectorized: 0/1 misclassification, or the
  absolute error of a regressor) and feeds a :class:`~fusionkit.drift_detection.monitor.DriftMonitor`
  with the watched features, the errors, and the learner to score samples of the
  reference's and each window's inputs with (prediction drift compares the model's answers
  to both with the model held fixed, so its own learning cannot raise an alarm; see
  :mod:`fusionkit.drift_detection.prediction`);
- sends what it produced to the monitor actor: window rows as they complete, the error
  rate and concept statistic summed over half a second, and every alarm at once (the
  monitor logs each as a ``kind="alarm"`` event, which dashboards draw as a marker);
- returns what the stage's policy asks on a concept-drift alarm (the model got worse), a
  :class:`~fusionkit.drift_detection.policy.Decision`: nothing by default, ``"reset"`` (a fresh copy
  of the stage's model) or ``"rollback"`` (the best of the registry's recent versions, when
  one scored better than the live model does now). The stage carries it out and hands the
  watch the :class:`~fusionkit.drift_detection.policy.Outcome`, logged as a ``kind="policy"`` event.
  The watch never touches the stage.

Its state (the monitor's windows and detectors) travels with the train actor's checkpoints.
"""

from __future__ import annotations

import functools
import math
import pickle
import threading
import time
import weakref
from typing import Any

import numpy as np
import pandas as pd

from fusionkit import _moved
from fusionkit._clock import now
from fusionkit.batch import feature_columns
from fusionkit.drift_detection.policy import NOTHING, Decision, Outcome, decide
from fusionkit.drift_detection.records import DriftResult
from fusionkit.drift_detection.spec import DriftSpec
from fusionkit.runtime.records import Event

__all__ = ["DriftWatch", "error_stream", "model_output"]

FLUSH_EVERY = 0.5  # seconds between reports of the error-rate series to the monitor


def error_stream(task: str, y_true: Any, y_pred: Any) -> np.ndarray:
    """Per-event errors, vectorized: 0/1 misclassification or absolute error; NaN where the
    model gave no prediction (the same values as ``Prequential.error_stream``).

    >>> error_stream("classification", [1, 0, 1], np.array([True, None, False], dtype=object))
    array([ 0., nan,  1.])
    >>> error_stream("regression", [1.0, 2.0], [1.5, np.nan])
    array([0.5, nan])
    """
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    if truth.shape != pred.shape:
        raise ValueError(f"{truth.size} labels but {pred.size} predictions")
    missing = pd.isna(pred) if pred.dtype.kind in "Ofc" else None
    if task == "classification":
        errors = (pred != truth).astype("float64")
    else:
        p = pd.to_numeric(pd.Series(pred, copy=False), errors="coerce").to_numpy("float64")
        errors = np.abs(truth.astype("float64") - p)
    if missing is not None and missing.any():
        errors[missing] = np.nan
    return errors


def model_output(learner: Any, X: pd.DataFrame) -> Any:
    """What prediction drift watches of a learner's answers to ``X``: the positive class's
    probability for a binary classifier, else the prediction."""
    prediction = learner.predict(X)
    return prediction.proba if prediction.proba is not None else prediction.y_pred


class DriftWatch:
    """Feeds a train stage's batches to a drift monitor, reports, and decides by the policy.

    ``sink`` is the monitor actor (``None``: keep rows here, for tests and benchmarks:
    ``take()`` returns them). ``features`` are the stage's model features, watched when
    the spec names none. A watch that fails (e.g. a watched column disappears from the
    stream) stops itself and logs why; the stage goes on learning.
    """

    def __init__(self, spec: DriftSpec, stage: str, task: str,
                 features: list[str] | None = None, sink: Any = None):  # fmt: skip
        self.spec, self.stage, self.task, self.sink = spec, stage, task, sink
        self.features = list(spec.features) if spec.features is not None else features
        # the columns the model reads: those of its inputs that prediction drift keeps
        self.model_features = None if features is None else list(features)
        self.monitor = spec.monitor(stage, self.features)
        self.monitor.prediction_monitor.columns = self.model_features
        self.alarms = self.actions = 0
        self.error: str | None = None
        self._init_buffers()

    def _init_buffers(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[dict[str, Any]] = []
        self._new: list[dict[str, Any]] = []  # alarms not yet sent
        self._concept: dict[str, Any] | None = None  # error-rate row being summed
        self._sent: list[tuple[Any, list, list]] = []  # reports the monitor has not confirmed
        self._flusher: threading.Thread | None = None
        self.cpu_reporting = 0.0  # CPU seconds of the flusher thread's reports
        self.events: list[Event] = []  # the last policy and error events

    # -- the per-batch step ----------------------------------------------------------------
    def observe(self, batch: pd.DataFrame, y: pd.Series, prediction: Any,
                learner: Any = None) -> Decision:  # fmt: skip
        """One predicted-then-learned batch (its labels ``y`` and the ``prediction`` made
        before learning it): update the monitor, report, and return what the policy asks.

        ``learner`` is the stage's model as it is now, after learning the batch: the one
        that scores both sides of a prediction drift test. Without one (a watch fed by
        hand), the predictions given are watched as those of a model that does not change.
        """
        if self.error is not None:
            return NOTHING
        try:
            result, scored = self._update(batch, y, prediction, learner)
        except Exception as exc:  # the stage keeps learning; the watch says why it stopped
            self.error = f"{type(exc).__name__}: {exc}"
            self._event("drift", f"drift watch stopped: {self.error}", status="stopped")
            return NOTHING
        self._collect(result, scored)
        concept = [a for a in result.alarms if a.kind == "concept"]
        return decide(self.spec.policy, concept[-1] if concept else None)

    def record(self, outcome: Outcome) -> None:
        """What the stage did about a decision: logged as a ``kind="policy"`` event."""
        self.actions += outcome.acted
        self._event("policy", outcome.detail, status=outcome.status, version=outcome.version)

    def _update(self, batch: pd.DataFrame, y: pd.Series, prediction: Any, learner: Any
                ) -> tuple[DriftResult, int]:  # fmt: skip
        if self.features is None:
            self.features = feature_columns(batch, exclude=(str(y.name),))
            self.monitor.feature_monitor.features = self.features
        if self.model_features is None:
            self.model_features = feature_columns(batch, exclude=(str(y.name),))
            self.monitor.prediction_monitor.columns = self.model_features
        errors = error_stream(self.task, y, prediction.y_pred)
        preds = score = None
        if self.spec.predictions and learner is not None:
            score = functools.partial(model_output, learner)
        elif self.spec.predictions:
            preds = prediction.proba if prediction.proba is not None else prediction.y_pred
        scored = int(np.count_nonzero(~np.isnan(errors)))
        return self.monitor.update(batch, preds, errors, score=score), scored

    def _collect(self, result: DriftResult, scored: int) -> None:
        rows = [r for r in result.rows if r["kind"] != "concept"]
        concept = [r for r in result.rows if r["kind"] == "concept"]
        alarms = [a.as_dict() for a in result.alarms]
        with self._lock:
            self._rows.extend(rows)
            self._new.extend(alarms)
            for r in concept:
                self._sum_concept(r, scored)
        self.alarms += len(alarms)
        if alarms:  # at once; rows go with the flusher thread's next report (a call to the
            self.flush(urgent=True)  # monitor per window cost the learning steps ~1%)
        elif self.sink is not None and self._flusher is None:
            self._start_flusher()

    def _sum_concept(self, row: dict[str, Any], scored: int) -> None:
        """Sum the per-batch error-rate rows over a reporting interval (weights: events)."""
        acc = self._concept
        if acc is None:
            acc = self._concept = {**row, "events": 0, "_sum": 0.0}
        acc["_sum"] += row["error_rate"] * scored
        acc["events"] += scored
        acc.update(time=row["time"], offset=row["offset"], event_time=row["event_time"],
                   error_rate=acc["_sum"] / acc["events"] if acc["events"] else math.nan,
                   alarm=acc["alarm"] or row["alarm"])
        z = row["z"]
        if z == z and not (acc["z"] >= z):
            acc["z"] = z

    # -- reporting -------------------------------------------------------------------------
    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Rows and alarms not yet reported (and forget them)."""
        with self._lock:
            rows, alarms = self._rows, self._new
            if self._concept is not None:
                rows = rows + [{k: v for k, v in self._concept.items() if not k.startswith("_")}]
            self._rows, self._new, self._concept = [], [], None
        return rows, alarms

    def flush(self, urgent: bool = False) -> None:
        """Send what is new to the monitor; at most one report in flight unless ``urgent``."""
        if self.sink is None:
            return
        if self._flusher is None:
            self._start_flusher()
        self._confirm()
        if self._sent and not urgent:
            return
        rows, alarms = self.take()
        if rows or alarms:
            ref = self.sink.drift_report.remote(self.stage, rows, alarms)
            with self._lock:
                self._sent.append((ref, rows, alarms))

    def _confirm(self) -> None:
        """Forget the reports the monitor has received."""
        import ray

        with self._lock:
            refs = [ref for ref, _, _ in self._sent]
        if not refs:
            return
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
        with self._lock:
            self._sent = [s for s in self._sent if s[0] not in ready]

    def unreported(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Window rows and alarms the monitor may not have yet: taken into checkpoints, so
        a window tested before a checkpoint and lost with the actor is reported after
        recovery (the replay does not test it again; the monitor keeps each once)."""
        with self._lock:
            rows = [r for _, sent, _ in self._sent for r in sent if r["kind"] != "concept"]
            alarms = [a for _, _, sent in self._sent for a in sent]
            return rows + self._rows, alarms + self._new

    def _start_flusher(self) -> None:
        ref = weakref.ref(self)
        self._flusher = threading.Thread(target=_flush_loop, args=(ref,), daemon=True,
                                         name=f"fk-drift-{self.stage}")
        self._flusher.start()

    def _event(self, kind: str, detail: str, status: str | None = None,
               version: int | None = None) -> None:
        event = Event(self.stage, kind, detail, version, status, now())
        self.events.append(event)
        del self.events[:-100]
        if self.sink is not None:
            self.sink.event.remote(event)

    # -- state ----------------------------------------------------------------------------
    def get_state(self) -> bytes:
        """The watch as bytes, for the train actor's checkpoints."""
        return pickle.dumps({"spec": self.spec, "monitor": self.monitor, "features": self.features,
                             "model_features": self.model_features, "alarms": self.alarms,
                             "actions": self.actions, "unreported": self.unreported()},
                            protocol=pickle.HIGHEST_PROTOCOL)  # fmt: skip

    def fresh(self) -> DriftWatch:
        """The same watch started over (the stage went back to its first event)."""
        return DriftWatch(self.spec, self.stage, self.task, self.model_features, self.sink)

    def resume(self, state: bytes | None) -> DriftWatch:
        """This watch as a checkpoint left it; started over if the checkpoint holds no
        state of this very watch (taken before it was attached, or of another one)."""
        saved = _load(state) if state is not None else None
        if saved is None or saved["spec"].token != self.spec.token:
            return self.fresh()
        watch = DriftWatch.__new__(DriftWatch)
        watch.spec, watch.stage, watch.task, watch.sink = self.spec, self.stage, self.task, self.sink
        watch.features, watch.monitor = saved["features"], saved["monitor"]
        watch.model_features = saved.get("model_features", self.model_features)
        watch.alarms, watch.actions, watch.error = saved["alarms"], saved["actions"], None
        watch._init_buffers()
        watch._rows, watch._new = (list(x) for x in saved.get("unreported", ([], [])))
        if (watch._rows or watch._new) and watch.sink is not None:
            watch._start_flusher()
        return watch

    def info(self) -> dict[str, Any]:
        """Settings and counts, for ``fk.watch_drift``'s answer."""
        return {"stage": self.stage, **self.spec.describe(), "watched": self.features,
                "alarms": self.alarms, "actions": self.actions, "error": self.error}


def _flush_loop(ref: weakref.ref) -> None:
    """Report every ``FLUSH_EVERY`` seconds until the watch is replaced (collected)."""
    stop = threading.Event()
    while not stop.wait(FLUSH_EVERY):
        watch = ref()
        if watch is None:
            return
        cpu = time.thread_time()
        try:
            watch.flush()
        except Exception:  # the monitor restarting: the next report carries the rows
            pass
        watch.cpu_reporting += time.thread_time() - cpu
        del watch


def _load(state: bytes) -> dict[str, Any]:
    """A watch's saved state, also one saved before its classes moved to fusionkit.drift_detection."""
    return _moved.loads(state)
