"""The actor of a train stage: prequential learning on micro-batches, publishing versions."""

from __future__ import annotations

import copy
import math
import threading
import traceback
from time import thread_time
from typing import Any

import numpy as np
import pandas as pd
import ray

from fusionkit._clock import monotonic
from fusionkit._rpc import cause_of
from fusionkit._suggest import did_you_mean
from fusionkit.batch import INGEST_TS, coalesce, feature_columns, model_features
from fusionkit.drift_detection.policy import Decision, Outcome, rollback_choice
from fusionkit.errors import FusionError, ModelDivergedError
from fusionkit.runtime.channel import Inbox
from fusionkit.runtime.checkpoint import EndOfStream
from fusionkit.runtime.records import Event
from fusionkit.runtime.reports import TrainReport
from fusionkit.runtime.specs import TrainSpec
from fusionkit.runtime.stage import StageActor
from fusionkit.streaming.features import Enricher
from fusionkit.streaming.validate import Schema
from fusionkit.training.comparison import ROLE, Comparison
from fusionkit.training.divergence import divergence
from fusionkit.training.explain import needs_numbers
from fusionkit.training.learners import fresh_learner
from fusionkit.training.prequential import Prequential
from fusionkit.training.served_scores import ServedScores

FRESHNESS_SAMPLE = 20_000  # ingest times kept per version for freshness quantiles
TAKE_OVER = 8  # batches queued behind the one admitted that are learned with it, at most
PEEK_ROWS = 1000  # the last events learned that fk.peek can show


def _missing_features(batch: pd.DataFrame, features: list[str]) -> list[str]:
    """The feature columns of ``batch`` with a missing value among numbers."""
    cols = [c for c in features if c in batch.columns
            and pd.api.types.is_numeric_dtype(batch[c]) and batch[c].isna().any()]
    return cols


class TrainWorker(StageActor):
    kind = "train"

    def __init__(self, spec: TrainSpec, index: int, monitor: Any, registry: Any,
                 state: dict | None = None):
        super().__init__(spec.name, index, monitor)
        self.spec = spec
        self.registry = registry
        self.learner = fresh_learner(spec)
        self.prequential = Prequential(self.learner.task)
        self.served = ServedScores(spec.label)  # served rows' predictions against labels
        self.compared = Comparison(spec.label)  # the models of a serve stage side by side
        self.inbox = Inbox()
        self.epoch = 0
        self.upstream = 1
        self._controller = None
        self.events_seen = 0
        self.offsets: dict[str, int] = {}
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        # what the publish in flight holds (ingest times, how many): learned events that are
        # in no stored version until it lands; a publish that fails gives them back to
        # ``_pending``, so the next one publishes them (even if no new event ever comes)
        self._inflight: tuple[list[np.ndarray], int] = ([], 0)
        self._last_publish = monotonic()
        self._publish_ref = None
        self._rng = np.random.default_rng(0)
        self._ticker: threading.Thread | None = None
        self.published = 0
        self.diverged: str | None = None  # why the model cannot be used (no more publishing)
        self.publish_error: str | None = None  # why the last publish failed (cleared by one)
        self.versions: list[int] = []  # the versions this stage published: its own lineage
        self._schema_sent = False
        self.drift = None  # a DriftWatch once fk.watch_drift attached one
        # fk.features: each batch enriched before it is learned, from this stage's own copy
        # of its tables (fusionkit.streaming.features)
        self.enrich = Enricher(spec.enrich) if spec.enrich is not None else None
        self._recent: list[pd.DataFrame] = []  # the last events learned, as learned (peek)
        # CPU seconds of this process's learning steps, and of the drift watch within them:
        # what watching for drift costs this stage (see info())
        self.cpu_learning = 0.0
        self.cpu_drift = 0.0
        if getattr(spec, "drift", None) is not None:
            self.watch_drift(spec.drift)
        if state:
            self.set_state(state)

    # -- control --------------------------------------------------------------------------
    def probe(self, sample: pd.DataFrame | None) -> dict[str, Any]:
        """Dry-run a copy of the learner on a sample of the upstream's output."""
        try:
            if sample is None or len(sample) == 0:
                return {"ok": True}
            if self.spec.label not in sample.columns:
                cols = [c for c in sample.columns if not str(c).startswith("_")]
                hint = did_you_mean(self.spec.label, cols, ". Did you mean {!r}?")
                return {"ok": False, "kind": "usage",
                        "error": f"label column {self.spec.label!r} is not in the output of stream "
                                 f"{self.spec.on!r}; its columns are {cols}{hint}"}
            if self.enrich is not None:  # a copy: the sample is not an event of the stream
                sample = copy.deepcopy(self.enrich)(sample)
            good, _, _ = self._split_labels(sample)
            learner = copy.deepcopy(self.learner)
            try:
                learner.predict_learn(good, good[self.spec.label])
            except Exception as exc:  # text a model made for numbers cannot take: say so
                plain = needs_numbers(self.learner, good, good[self.spec.label], exc, self.spec.on)
                if plain is None:
                    raise
                return {"ok": False, "kind": "usage", "error": plain}
            return {"ok": True}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                    "traceback": "".join(traceback.format_exception(exc))}

    def start(self) -> str:
        self.status = "running"
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, daemon=True, name=f"fk-{self.name}")
            self._ticker.start()
        return self.status

    def pause(self) -> str:
        """Stop taking batches and publishing (``fk.publish`` still does). A version already
        on its way to the registry lands before this returns, so nothing newer goes live
        while the stage is paused, e.g. across a rollback."""
        status = super().pause()
        if status == "paused":
            with self.inbox.exclusive():  # after the batch being learned, if any
                self.settle_publish()
        return status

    def stop(self) -> str:
        status = super().stop()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        return status

    def get_state(self) -> dict[str, Any]:
        return {"learner": self.learner.get_state(), "events_seen": self.events_seen,
                "prequential": self.prequential.get_state(), "offsets": dict(self.offsets),
                "versions": list(self.versions),
                "drift": self.drift.get_state() if self.drift is not None else None,
                "dead": self.dead.get_state(), "served": self.served.get_state(),
                "compared": self.compared.get_state(),
                "tables": self.enrich.get_state() if self.enrich is not None else None}

    def set_state(self, state: dict[str, Any]) -> None:
        self.learner.set_state(state["learner"])
        self.events_seen = state.get("events_seen", 0)
        if state.get("prequential") is not None:
            self.prequential.set_state(state["prequential"])
        self.offsets = dict(state.get("offsets", {}))
        self.versions = list(state.get("versions", []))
        if self.drift is not None:
            self.drift = self.drift.resume(state.get("drift"))
        self.dead.set_state(state.get("dead"))
        self.served.set_state(state.get("served"))
        self.compared.set_state(state.get("compared"))
        if self.enrich is not None:
            self.enrich.set_state(state.get("tables"))

    def peek(self, n: int = 5) -> pd.DataFrame | None:
        """The last ``n`` events (up to ``PEEK_ROWS``) as the model learned them: with the
        features ``fk.features`` made, and the label."""
        parts = self._recent
        return pd.concat(parts).tail(n) if parts else None

    def seed_tables(self, states: dict[str, Any]) -> None:
        """Start this stage's copies of its tables from the tables' states now (a train
        stage defined after its tables: the events they already hold count)."""
        if self.enrich is not None:
            with self.inbox.exclusive():
                self.enrich.set_state(states)

    def info(self) -> TrainReport:
        return TrainReport(
            **self._report(), events_seen=self.events_seen, published=self.published,
            metrics=self.prequential.values(), waiting=self.inbox.waiting,
            cpu_learning=self.cpu_learning, cpu_drift=self.cpu_drift,
            cpu_drift_reporting=getattr(self.drift, "cpu_reporting", 0.0),
            publish_error=self.publish_error,  # fk.status() shows it
            served=self.served.rows(), compared=self.compared.rows())

    # -- checkpoints and recovery ---------------------------------------------------------
    def set_upstream(self, n: int) -> None:
        """How many upstream actors send to this one (barriers align over all of them)."""
        self.upstream = max(1, int(n))

    def restore(self, state: dict[str, Any] | None, epoch: int) -> str:
        """Go back to a checkpoint's state (or a fresh learner) and take the replay."""
        with self.inbox.exclusive():
            self.awaiting_rollback = False
            self.epoch = epoch
            self.inbox = Inbox()
            if state:
                self.set_state(state)
            else:
                self.learner = fresh_learner(self.spec)
                self.prequential = Prequential(self.learner.task)
                self.events_seen = 0
                self.versions = []
                self.drift = self.drift.fresh() if self.drift is not None else None
                self.dead.set_state(None)
                self.served.set_state(None)
                self.compared.set_state(None)
                if self.enrich is not None:
                    self.enrich.set_state(None)
            self._pending, self._pending_n, self._inflight = [], 0, ([], 0)
            self.diverged = None  # back to a model from before it diverged (or a fresh one)
            if self.status in ("starting", "failed"):
                self.status = "running"
        if self._ticker is None:
            self.start()
        return self.status

    def watch_drift(self, spec: Any, sample: pd.DataFrame | None = None) -> dict[str, Any]:
        """Attach a drift watch (a ``DriftSpec``; ``None`` removes it), its columns checked
        on ``sample`` of the input: ``{"ok": False, "error": ...}`` names a column the
        stream does not have (fusionkit.drift_detection.watch)."""
        from fusionkit.drift_detection.watch import DriftWatch  # River and SciPy load on first use

        with self.inbox.exclusive():
            if spec is None:
                self.drift = None
                return {"ok": True, "watch": None}
            features = self.spec.features
            if features is None and sample is not None:
                features = feature_columns(sample, exclude=(self.spec.label,))
            error = spec.unknown_column(features, sample, self.spec.on)
            if error is not None:
                return {"ok": False, "error": error}
            self.drift = DriftWatch(spec, self.name, self.learner.task, features, self.monitor)
            return {"ok": True, "watch": self.drift.info()}

    def _apply(self, decision: Decision) -> None:
        """Carry out what the drift watch decided on a concept-drift alarm, and tell it."""
        try:
            if decision.action == "reset":
                self.learner = fresh_learner(self.spec)
                outcome = Outcome("reset", f"learner reset to a fresh model after {decision.reason}")
            else:
                outcome = self._roll_back(decision)
        except Exception as exc:
            outcome = Outcome("error", f"{decision.action} failed: {type(exc).__name__}: {exc}")
        self.drift.record(outcome)

    def _roll_back(self, decision: Decision) -> Outcome:
        """Roll back to the best recent version of this stage's own, if it scored better
        than the live model does now."""
        primary = self.prequential.primary
        error = decision.error_now  # the error the detector sees now, in metric units:
        if error == error:
            current = 1.0 - error if self.learner.task == "classification" else error
        else:
            current = self.prequential.values().get(primary.recent, math.nan)
        self.settle_publish()  # a version in flight must not go live after this
        table = ray.get(self.registry.table.remote(self.name))
        choice = rollback_choice(table, self.versions, primary.recent, primary.higher_is_better,
                                 current)  # fmt: skip
        if choice.version is not None:
            state = ray.get(self.registry.state.remote(self.name, choice.version))
            ray.get(self.registry.rollback.remote(self.name, choice.version))
            self.learner.set_state(state)
        return Outcome(choice.status, f"{choice.detail}, after {decision.reason}", choice.version)

    def publish_now(self) -> int:
        """Publish a version now (if anything was learned since the last one)."""
        with self.inbox.exclusive():
            self.settle_publish()  # one in flight that failed gives its events back first
            due = self._pending_n
            version = self._publish(wait=True)
        if due and not version and self.publish_error is not None:
            raise FusionError(f"stage {self.name!r}: {self.publish_error}")
        return version

    # -- data -----------------------------------------------------------------------------
    def push(self, sender: str, seq: int, batch: pd.DataFrame, epoch: int = 0) -> None:
        if not self._arrives(sender, seq, batch, epoch):
            return
        if isinstance(batch, EndOfStream):  # nothing to learn: its turn in the order passes
            with self.inbox.admit(sender, seq):
                return
        inbox = self.inbox
        with inbox.admit(sender, seq, batch) as mine:
            if not mine:
                return  # learned with an earlier push's batch (take_over)
            if epoch < self.epoch or inbox is not self.inbox:
                return
            if self.status in ("failed", "stopped"):
                return
            # what queued up behind this batch is learned with it: one step instead of one
            # per batch, so a busy trainer catches up instead of keeping a queue (batch by
            # batch when versions are cut every N events, to cut them where they always were)
            batches = [batch, *inbox.take_over(sender, seq, TAKE_OVER)]
            if self.enrich is not None:  # batch by batch, as the table stage takes them
                batches = self._enriched(batches)
                if batches is None:
                    return
            for part in batches if self.spec.publish_events else coalesce(batches):
                t0, cpu0 = monotonic(), thread_time()
                try:
                    self._learn(part)
                except Exception as exc:
                    self._fail(exc, "in the learner")
                    return
                self.cpu_learning += thread_time() - cpu0
                self.reporter.latency(monotonic() - t0)
                try:  # a failing publish must not cut short the batches taken over
                    self._maybe_publish()
                except Exception as exc:
                    self._publish_failed(exc)
            self.reporter.flush()

    def _split_labels(self, batch: pd.DataFrame):
        label = self.spec.label
        if label not in batch.columns:
            return batch.iloc[0:0], batch, f"missing label column {label!r}"
        y = batch[label]
        bad = y.isna()
        reason = f"missing label {label!r}"
        if self.learner.task == "regression":
            num = pd.to_numeric(y, errors="coerce")
            wrong = num.isna() & ~bad | ~np.isfinite(num.fillna(0).to_numpy(dtype="float64"))
            if wrong.any():
                reason = pd.Series(reason, index=batch.index)
                reason[wrong] = f"invalid label {label!r}: not a finite number"
                bad = bad | wrong
        classes = getattr(self.learner, "fixed_classes", None)
        if self.learner.task == "classification" and classes is not None:
            wrong = ~y.isin(classes) & ~bad
            if wrong.any():
                reason = pd.Series(reason, index=batch.index)
                reason[wrong] = f"invalid label {label!r}: not one of the classes {classes}"
                bad = bad | wrong
        if not bad.any():
            return batch, batch.iloc[0:0], reason
        if isinstance(reason, pd.Series):
            reason = reason[bad]
        return batch[~bad], batch[bad], reason

    def _enriched(self, batches: list[pd.DataFrame]) -> list[pd.DataFrame] | None:
        """Each batch with the features ``fk.features`` makes: every event, labelled or not,
        goes into this stage's copies of the tables, batch by batch as the table stage
        takes them, so their values are the table's to the last bit. None: failed."""
        try:
            return [self.enrich(b) for b in batches]
        except Exception as exc:
            self._fail(exc, "in the feature function")
            return None

    def _learn(self, batch: pd.DataFrame) -> None:
        good, bad, reason = self._split_labels(batch)
        if len(bad):
            self.dead.add(bad, reason)
            self.reporter.count(dead_letters=len(bad))
        self.reporter.count(events_in=len(batch))
        if len(good) == 0:
            return
        scored = good
        if ROLE in good.columns:  # a shadow's answers are scored, but each request learned once
            self.compared.add(good)
            good = good[(good[ROLE] != "shadow").to_numpy()]
            if len(good) == 0:
                self.served.add(scored)
                return
        self._keep_recent(good)
        if self._schema_sent is False:
            self._send_schema(good)
        y = good[self.spec.label]
        pred = self.learner.predict_learn(good, y)
        why = divergence(self.learner, pred)
        if why is not None:
            self._diverge(why, good)
        self.prequential.update(y, pred)
        self.served.add(scored)  # (served rows only: what the answers they got were worth)
        if self.drift is not None:
            cpu0 = thread_time()
            decision = self.drift.observe(good, y, pred, self.learner)
            if decision.action != "none":
                self._apply(decision)
            self.cpu_drift += thread_time() - cpu0
        self.events_seen += len(good)
        self.reporter.count(events_out=len(good))
        self._pending.append(good[INGEST_TS].to_numpy(dtype="float64", copy=True))
        self._pending_n += len(good)
        values = self.prequential.values()
        self.reporter.gauge(**values, events_seen=self.events_seen)

    def _keep_recent(self, batch: pd.DataFrame) -> None:
        """Keep ``batch`` for ``peek``: the last ``PEEK_ROWS`` rows, at most."""
        parts = [*self._recent, batch.tail(PEEK_ROWS)]
        while len(parts) > 1 and sum(map(len, parts[1:])) >= PEEK_ROWS:
            parts.pop(0)
        self._recent = parts

    def _diverge(self, why: str, batch: pd.DataFrame | None = None) -> None:
        """The model diverged: say so (an event), publish nothing more, fail the stage.
        Missing values among the features are the likelier cause when there are some: the
        advice names them instead."""
        self.diverged = why
        self._pending, self._pending_n, self._inflight = [], 0, ([], 0)
        self._event("diverged", why)
        advice = ("Lower the learning rate or scale the features, then define the stage "
                  "again (or fk.restore() the last checkpoint)")
        missing = _missing_features(batch, self.spec.features or model_features(
            batch, self.spec.label)) if batch is not None else []
        if missing:
            advice = (f"The features {missing} hold missing values (NaN), which this model "
                      f"cannot learn from: fill them in (a table's defaults=, or fillna in "
                      f"the feature function), then define the stage again")
        raise ModelDivergedError(
            f"the model diverged after {self.events_seen} events: {why}; it is not "
            f"published. {advice}")

    def _send_schema(self, batch: pd.DataFrame) -> None:
        features = self.spec.features or model_features(batch, self.spec.label)
        self.registry.set_schema.remote(self.name, Schema.infer(batch[features]))
        self._schema_sent = True

    def _maybe_publish(self) -> None:
        if not self._resume.is_set():  # paused (a batch admitted just before the pause)
            return
        spec = self.spec
        due_events = spec.publish_events and self._pending_n >= spec.publish_events
        due_time = spec.publish_every and monotonic() - self._last_publish >= spec.publish_every
        if self._pending_n and (due_events or due_time):
            self._publish()

    def _tick(self) -> None:
        """Publish every ``publish_every`` seconds, and report metrics while no batch comes
        (the last batches of a finished stream would otherwise never reach the monitor)."""
        every, idle = self.spec.publish_every, self.reporter.interval
        wait = min(every or idle, idle)
        while not self._stop.wait(wait):
            with self.inbox.exclusive():
                ref = self._publish_ref
                if ref is not None and ray.wait([ref], timeout=0)[0]:
                    self.settle_publish()  # a failed one gives its events back: sent again
                due = every and self._pending_n and monotonic() - self._last_publish >= every
                try:
                    if due and self._resume.is_set():  # no versions while paused
                        self._publish()
                    self.reporter.flush()
                except Exception as exc:  # the timer never dies: the next turn tries again
                    self._publish_failed(exc)
            if not every:
                continue
            left = self._last_publish + every - monotonic()  # wake when the next one is due
            wait = min(left if left > 0.001 else max(0.005, every / 4), idle)

    def _publish(self, wait: bool = False) -> int:
        if not self._pending_n or self.diverged is not None:
            return 0
        ingest = np.concatenate(self._pending)
        sample = ingest
        if len(sample) > FRESHNESS_SAMPLE:
            sample = self._rng.choice(sample, FRESHNESS_SAMPLE, replace=False)
        meta = {"events_seen": self.events_seen, "newest_ingest_ts": float(ingest.max()),
                "oldest_new_ingest_ts": float(ingest.min()), "new_events": int(len(ingest)),
                "metrics": self.prequential.values()}
        state = self.learner.get_state()
        self.settle_publish()  # one publish in flight at a time
        self._publish_ref = self.registry.publish.remote(self.name, state, meta, sample)
        self._inflight = (self._pending, self._pending_n)
        self._pending, self._pending_n = [], 0
        self._last_publish = monotonic()
        self.published += 1
        if wait:
            return self.settle_publish() or 0
        return 0

    def settle_publish(self) -> int | None:
        """Wait for the publish in flight, if any, and note its version in the lineage.
        None if there was none, or it failed: a registry restarting (counted), or one that
        could not store the version (a full disk, a folder that cannot be written:
        reported in ``info()`` and as an event; learning goes on and the next publish
        tries again). A failed publish's events are pending again: the next publish (the
        timer's, or ``fk.publish``) stores them, even if no new event comes; without that,
        the last events learned before a registry restart were in no version at all."""
        ref, self._publish_ref = self._publish_ref, None
        held, self._inflight = self._inflight, ([], 0)
        if ref is None:
            return None
        try:
            version = int(ray.get(ref)["version"])
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            self.reporter.count(publish_errors=1)  # registry restarting: the next one counts
            self._unpublished(held)
            return None
        except ray.exceptions.RayTaskError as err:
            self._publish_failed(cause_of(err))
            self._unpublished(held)
            return None
        if self.publish_error is not None:
            self.publish_error = None
            self._event("publish recovered", f"v{version} published")
        self.versions = [*self.versions[-999:], version]
        return version

    def _unpublished(self, held: tuple[list[np.ndarray], int]) -> None:
        """A publish failed: its events are pending again, before those learned since."""
        self._pending = [*held[0], *self._pending]
        self._pending_n += held[1]

    def _publish_failed(self, exc: BaseException) -> None:
        self.reporter.count(publish_errors=1)
        first = self.publish_error is None
        self.publish_error = (f"publishing failed: {type(exc).__name__}: {exc}; the stage "
                              "goes on learning and publishes again once it can")
        if first:
            self._event("publish failed", self.publish_error)

    def _event(self, kind: str, detail: str) -> None:
        """A pipeline event of this stage, to the monitor."""
        if self.monitor is not None:
            self.monitor.event.remote(Event(self.name, kind, detail))
