"""The drift watch of a train stage: what ``fk.watch_drift`` attaches to its actor.

After each micro-batch is predicted and learned, the train actor hands the batch, the
labels and the predictions to its :class:`DriftWatch`, which

- turns predictions into per-event errors (vectorized: 0/1 misclassification, or the
  absolute error of a regressor) and feeds a :class:`~fusionkit.monitor.drift.DriftMonitor`
  with the watched features, the errors, and the stage's learner to score samples of the
  reference's and each window's inputs with (prediction drift compares the model's answers
  to both with the model held fixed, so its own learning cannot raise an alarm; see
  :mod:`fusionkit.monitor.prediction_drift`);
- sends what it produced to the monitor actor: window rows as they complete, the error
  rate and concept statistic summed over half a second, and every alarm at once (the
  monitor logs each as a ``kind="alarm"`` event, which dashboards draw as a marker);
- applies the stage's policy on a concept-drift alarm (the model got worse), off by
  default: ``"reset"`` replaces the learner by a fresh copy of the stage's model,
  ``"rollback"`` goes back to the best of the registry's recent versions when one scored
  better than the live model does now (the learner continues from it and it goes live).
  What the policy did is logged as a ``kind="policy"`` event.

Its state (the monitor's windows and detectors) travels with the train actor's checkpoints.
"""

from __future__ import annotations

import functools
import math
import pickle
import threading
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._clock import now
from fusionkit._suggest import did_you_mean
from fusionkit.batch import feature_columns
from fusionkit.errors import FusionError
from fusionkit.monitor.drift import Alarm, DriftMonitor, DriftResult

__all__ = ["DriftSpec", "DriftWatch", "POLICIES", "attach", "error_stream",
           "model_output"]

POLICIES = ("reset", "rollback")
FLUSH_EVERY = 0.5  # seconds between reports of the error-rate series to the monitor


@dataclass(frozen=True)
class DriftSpec:
    """What to watch on a train stage, and what to do on a concept-drift alarm.

    The parameters are those of :class:`~fusionkit.monitor.drift.DriftMonitor` (see it for
    the calibration of ``psi_alarm`` and ``ks_alpha`` to the window size), plus ``policy``
    (``None``, ``"reset"`` or ``"rollback"``) and ``predictions`` (watch the model's output
    as the pseudo-feature ``"prediction"``: ``prediction_sample`` rows of the reference and
    of each window scored by the model as it is at the test). ``features=None`` watches
    every feature the model learns from. Bad values are refused here, before anything runs.

    Examples
    --------
    >>> DriftSpec(features=("price",), window=2000).window
    2000
    >>> DriftSpec(policy="rest")
    Traceback (most recent call last):
    ...
    fusionkit.errors.FusionError: unknown drift policy 'rest': choose None, 'reset' or 'rollback'. Did you mean 'reset'?
    """

    features: tuple[str, ...] | None = None
    reference: str | int | pd.DataFrame = "first 10000 events"
    window: int = 5000
    psi_alarm: float = 0.2
    ks_alpha: float = 0.01
    concept: str | Any | None = "adwin"
    policy: str | None = None
    categorical: tuple[str, ...] | None = None
    sliding_reference: bool = False
    predictions: bool = True
    concept_params: dict[str, Any] | None = None
    prediction_sample: int = 500
    token: str = field(default_factory=lambda: uuid.uuid4().hex, compare=False)

    def __post_init__(self) -> None:
        if self.policy is not None and self.policy not in POLICIES:
            hint = did_you_mean(self.policy, POLICIES)
            raise FusionError(f"unknown drift policy {self.policy!r}: choose None, 'reset' or "
                              f"'rollback'.{hint}")
        for name in ("features", "categorical"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise FusionError(f"{name} must be a list of column names, not the string "
                                  f"{value!r}; write [{value!r}]")
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.window, bool) or not isinstance(self.window, int | np.integer):
            raise FusionError(f"window must be a number of events (int), not {self.window!r}")
        if not (isinstance(self.psi_alarm, int | float) and 0 < self.psi_alarm < math.inf):
            raise FusionError(f"psi_alarm must be a positive number, not {self.psi_alarm!r}")
        if not (isinstance(self.ks_alpha, int | float) and 0 < self.ks_alpha < 1):
            raise FusionError(f"ks_alpha must be a probability in (0, 1), not {self.ks_alpha!r}")
        try:
            self.monitor("")  # checks window, reference and the detector with its parameters
        except (TypeError, ValueError) as exc:
            raise FusionError(f"watch_drift: {exc}") from None

    def monitor(self, stage: str, features: list[str] | None = None) -> DriftMonitor:
        """A fresh :class:`DriftMonitor` for this spec."""
        feats = list(self.features) if self.features is not None else features
        return DriftMonitor(
            feats, self.reference, int(self.window), self.psi_alarm, self.ks_alpha,
            self.concept, self.sliding_reference,
            list(self.categorical) if self.categorical is not None else None,
            stage=stage, concept_params=self.concept_params,
            prediction_sample=int(self.prediction_sample),
        )  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """The settings as plain values (a DataFrame reference as its length)."""
        ref = self.reference
        return {"features": list(self.features) if self.features is not None else None,
                "reference": f"DataFrame of {len(ref)} events" if isinstance(ref, pd.DataFrame)
                else ref, "window": self.window, "psi_alarm": self.psi_alarm,
                "ks_alpha": self.ks_alpha, "concept": self.concept, "policy": self.policy,
                "prediction_sample": self.prediction_sample if self.predictions else None}


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
    """Feeds a train stage's batches to a drift monitor, reports, and applies the policy.

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
        self.events: list[dict[str, Any]] = []  # the last policy and error events

    # -- the per-batch step ----------------------------------------------------------------
    def observe(self, worker: Any, batch: pd.DataFrame, y: pd.Series, prediction: Any) -> None:
        """One predicted-then-learned batch: update the monitor, report, apply the policy."""
        if self.error is not None:
            return
        try:
            result, scored = self._update(batch, y, prediction, getattr(worker, "learner", None))
        except Exception as exc:  # the stage keeps learning; the watch says why it stopped
            self.error = f"{type(exc).__name__}: {exc}"
            self._event({"kind": "drift", "status": "stopped",
                         "detail": f"drift watch stopped: {self.error}"})
            return
        self._collect(result, scored)
        concept = [a for a in result.alarms if a.kind == "concept"]
        if concept and self.spec.policy is not None and worker is not None:
            self._act(worker, concept[-1])

    def _update(self, batch: pd.DataFrame, y: pd.Series, prediction: Any, learner: Any
                ) -> tuple[DriftResult, int]:  # fmt: skip
        """``learner`` is the stage's model as it is now (after learning this batch): the
        one that scores both sides of a prediction drift test. Without one (a watch fed by
        hand), the predictions given are watched as those of a model that does not change."""
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

    def _event(self, record: dict[str, Any]) -> None:
        record = {"time": now(), "stage": self.stage, **record}
        self.events.append(record)
        del self.events[:-100]
        if self.sink is not None:
            self.sink.event.remote(record)

    # -- the policy --------------------------------------------------------------------------
    def _act(self, worker: Any, alarm: Alarm) -> None:
        change = f"error {alarm.before:.3g} -> {alarm.after:.3g}" if alarm.after == alarm.after \
            else f"{alarm.statistic} {alarm.value:.3g}"  # fmt: skip
        why = f"concept drift at offset {alarm.offset} ({change})"
        version = None
        try:
            if self.spec.policy == "reset":
                from fusionkit.training.learners import fresh_learner

                worker.learner = fresh_learner(worker.spec)
                status, detail = "reset", f"learner reset to a fresh model after {why}"
            else:
                status, version, detail = self._rollback(worker, alarm)
                detail = f"{detail}, after {why}"
        except Exception as exc:
            status, detail = "error", f"{self.spec.policy} failed: {type(exc).__name__}: {exc}"
        self.actions += status in ("reset", "rollback")
        self._event({"kind": "policy", "status": status, "version": version, "detail": detail})

    def _rollback(self, worker: Any, alarm: Alarm) -> tuple[str, int | None, str]:
        """Roll back to the best recent version if it scored better than the live model now."""
        import ray

        primary = worker.prequential.primary
        if alarm.after == alarm.after:  # the error the detector sees now, in metric units
            current = 1.0 - alarm.after if worker.learner.task == "classification" else alarm.after
        else:
            current = worker.prequential.values().get(primary.recent, math.nan)
        worker.settle_publish()  # a version in flight must not go live after this
        table = ray.get(worker.registry.table.remote(worker.name))
        metric = primary.recent
        if metric not in table.columns:
            return "kept", None, "no published version has a recent metric yet"
        # only this stage's own versions: an earlier definition of the same name (another
        # model, or the same one before a restart from scratch) left versions it never learned
        mine = table["version"].isin(worker.versions)
        ok = table[mine & table["in_memory"] & (table["status"] != "held")].dropna(subset=[metric])
        if ok.empty:
            return "kept", None, "no recent version to roll back to"
        best = ok.loc[ok[metric].idxmax() if primary.higher_is_better else ok[metric].idxmin()]
        value, version = float(best[metric]), int(best["version"])
        better = value > current if primary.higher_is_better else value < current
        if not better:
            return "kept", None, (f"kept the model: no recent version beats it ({metric} of "
                                  f"v{version} {value:.3f}, now {current:.3f})")
        state = ray.get(worker.registry.state.remote(worker.name, version))
        ray.get(worker.registry.rollback.remote(worker.name, version))
        worker.learner.set_state(state)
        return "rollback", version, (f"rolled back to v{version} ({metric} {value:.3f}, "
                                     f"now {current:.3f})")

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
        saved = pickle.loads(state) if state is not None else None
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



def attach(worker: Any, spec: DriftSpec | None, sample: pd.DataFrame | None = None
           ) -> dict[str, Any]:  # fmt: skip
    """Give a train actor a drift watch (or none), checking the columns on a sample of its
    input; ``{"ok": False, "error": ...}`` names a column the stream does not have."""
    if spec is None:
        worker.drift = None
        return {"ok": True, "watch": None}
    features = worker.spec.features
    if features is None and sample is not None:
        features = feature_columns(sample, exclude=(worker.spec.label,))
    watched = list(spec.features) if spec.features is not None else features
    if sample is not None and watched is not None:
        columns = [c for c in sample.columns if not str(c).startswith("_")]
        for name in [*watched, *(spec.categorical or ())]:
            if name not in sample.columns:
                hint = did_you_mean(name, columns)
                return {"ok": False, "error": f"cannot watch {name!r}: stream "
                        f"{worker.spec.on!r} has no such column; its columns are {columns}.{hint}"}
    worker.drift = DriftWatch(spec, worker.name, worker.learner.task, features, worker.monitor)
    return {"ok": True, "watch": worker.drift.info()}
