"""A process that holds the live versions of models and answers rows with them.

Both a serve replica (``fusionkit.serving.replica``) and its shadow worker
(``fusionkit.serving.shadow``) are one: each follows the registry for the models it answers
with (a long poll per model, on a thread of its own), builds a new version's model off the
answering path, then replaces one reference, so that rows are answered wholly by one
version, which the answer names. What it answers is appended to the stage's served log
(``log=``), with the model, the version and the role that answered.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import numpy as np
import ray

from fusionkit._clock import monotonic, now
from fusionkit.runtime.names import NAMESPACE, REGISTRY
from fusionkit.runtime.specs import ServeSpec
from fusionkit.runtime.stage import Reporter
from fusionkit.serving.inputs import check_records, parse_rows
from fusionkit.serving.served_log import as_floats, number_columns, request_ids, served_records
from fusionkit.sources.logfiles import LogWriter
from fusionkit.training.protocol import load_state

log = logging.getLogger("fusionkit")


class ModelHolder:
    """Live model versions, followed in the registry, and answering rows with them.

    ``replica``: the serve replica the answers are logged as; ``writer``: the name of this
    process's own files in the served log (a replica's id, or its shadow worker's);
    ``reporter``: where counts go (a replica's reports to the monitor)."""

    def __init__(self, spec: ServeSpec, replica: str, writer: str, reporter: Reporter):
        self.spec = spec
        self.replica = replica
        self.reporter = reporter
        self.registry = ray.get_actor(REGISTRY, namespace=NAMESPACE)
        # model -> (version, learner, schema): replaced whole on a swap, read once a request
        self._models: dict[str, tuple[int, Any, Any]] = {}
        self._generations: dict[str, int] = {}
        self._following: set[str] = set()
        self._polled: set[str] = set()  # models whose live version was asked for once
        self._announced: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._log = LogWriter(spec.log_folder, writer) if spec.log_folder else None
        self._numbers: tuple[Any, list[str]] = (None, [])  # a schema's number features
        self._nullable: tuple[Any, Any] = (None, None)  # a schema, and it with all nullable

    # -- following the registry -----------------------------------------------------------
    def _follow_models(self, models: Any, wait: float) -> None:
        """Follow each of ``models``' live version (a thread each); wait up to ``wait``
        seconds for those with a live version to be loaded."""
        for model in models:
            if model not in self._following:
                self._following.add(model)
                threading.Thread(target=self._follow, args=(model,), daemon=True,
                                 name=f"fk-follow-{model}").start()
        deadline = monotonic() + wait
        while (monotonic() < deadline and not self._stop.is_set()
               and any(m not in self._models and m not in self._polled for m in models)):
            self._stop.wait(0.02)

    def _follow(self, model: str) -> None:
        while not self._stop.is_set():
            try:
                self._swap(model, *ray.get(self.registry.follow.remote(
                    model, self._generations.get(model, -1), 5.0)))
                self._polled.add(model)  # loaded, or no live version to load
            except Exception as exc:  # registry restarting: keep serving what we have
                log.warning("fusionkit serve %s: following the registry: %s", self.spec.name, exc)
                self._stop.wait(0.5)
            self.reporter.flush()

    def _swap(self, model: str, version: int | None, generation: int, state: bytes | None,
              schema: Any) -> None:
        """Build the new version's model off the answering path, then replace one
        reference."""
        if version is None:  # nothing live yet: wait for the next change from here
            self._generations[model] = generation
        if version is None or state is None or generation == self._generations.get(model):
            return
        learner = load_state(state)
        self._models = {**self._models, model: (version, learner, schema)}  # atomic for readers
        self._generations[model] = generation
        self._swapped(model, version)

    def _swapped(self, model: str, version: int) -> None:
        """Called once ``model``'s ``version`` answers."""

    def __del__(self):
        self._stop.set()

    # -- answering ------------------------------------------------------------------------
    def _answer_with(self, name: str, loaded: tuple[int, Any, Any], role: str, rows: Any,
                     ids: list[str] | None = None, t: float | None = None) -> dict[str, Any]:
        """Rows answered by model ``name`` (its (version, learner, schema)), logged with
        ``role`` at time ``t``; ``ids``: the request ids to log them under (a shadow's are
        the request's, and its ``t`` the request's, so a join gives both rows the same
        outcomes)."""
        version, learner, schema = loaded
        schema = self._checked_as(schema)
        if isinstance(rows, list) and schema is not None and hasattr(learner, "predict_records"):
            frame = check_records(rows, schema, self.spec.max_rows)
            if ids is None and self._log is not None:
                ids = request_ids(rows, len(frame))
            pred = learner.predict_records(frame)
        else:
            frame = parse_rows(rows, schema, self.spec.max_rows)
            if ids is None and self._log is not None:
                ids = request_ids(rows, len(frame))
            pred = learner.predict(frame)
        out: dict[str, Any] = {"predictions": _jsonable(pred.y_pred), "version": version,
                               "model": name}
        if pred.proba is not None:
            out["proba"] = _jsonable(pred.proba)
        if ids is not None:  # in the log before the answer leaves
            self._log.append(served_records(ids, self._features(frame, schema),
                                            out["predictions"], out.get("proba"),
                                            name, version, self.replica,
                                            now() if t is None else t, role))
            out["request_ids"] = ids
        if (name, version) not in self._announced:
            self._announced.add((name, version))
            self.registry.served.remote(name, version, now())
        return out

    def _checked_as(self, schema: Any) -> Any:
        """The schema rows are checked against: the model's; with ``fk.features`` every
        column may be missing, since the feature definition made the rows, not the client
        (a key a table does not hold and has no default for reads NaN, and the model gets
        NaN, as on the training path)."""
        if schema is None or self.spec.enrich is None:
            return schema
        cached = self._nullable
        if cached[0] is not schema:
            cached = self._nullable = (schema, dataclasses.replace(
                schema, nullable=frozenset(schema.columns)))
        return cached[1]

    def _features(self, frame: Any, schema: Any) -> list[dict[str, Any]]:
        """The rows' features as validated, for the log: the model's columns, numbers as
        floats."""
        if not isinstance(frame, list):  # a DataFrame (an object of columns, or no schema)
            keep = list(schema.columns) if schema is not None else [
                c for c in frame.columns if c != "request_id" and not str(c).startswith("_")]
            frame = frame[keep].to_dict("records")
        cached = self._numbers  # read once: answers are logged from several threads
        if cached[0] is not schema:
            cached = self._numbers = (schema, number_columns(schema))
        return as_floats(frame, cached[1]) if cached[1] else frame


def _jsonable(values: Any) -> list[Any]:
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        arr = arr.astype("float64")
        if np.isfinite(arr).all():
            return arr.tolist()
        return [None if not np.isfinite(v) else float(v) for v in arr]
    if arr.dtype.kind in "iub":
        return arr.tolist()
    return [v.item() if hasattr(v, "item") else v for v in arr.tolist()]
