"""A serve replica: follows the registry and swaps models between requests.

Each replica long-polls the registry for a change of the live version, fetches the new
state and builds the model off the request path, then replaces one reference. A request
reads that reference once, so it is answered wholly by one version and never waits for a
swap. Every answer names the version that made it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

import numpy as np
import ray

from fusionkit._clock import monotonic, now
from fusionkit.runtime.names import MONITOR, NAMESPACE, REGISTRY
from fusionkit.runtime.reports import ReplicaReport
from fusionkit.runtime.specs import ServeSpec
from fusionkit.runtime.stage import Reporter
from fusionkit.serving.inputs import BadRequest, check_records, check_rows, parse_rows
from fusionkit.serving.limits import RETRIES, read_request, token_ok
from fusionkit.serving.served_log import (
    as_floats,
    feedback_records,
    number_columns,
    request_ids,
    served_records,
)
from fusionkit.sources.logfiles import LogWriter
from fusionkit.training.protocol import load_state

log = logging.getLogger("fusionkit")
FIRST_VERSION_WAIT = 30.0


class ModelServer:
    """The Ray Serve deployment class of a serve stage."""

    def __init__(self, spec: ServeSpec):
        self.spec = spec
        self.registry = ray.get_actor(REGISTRY, namespace=NAMESPACE)
        monitor = ray.get_actor(MONITOR, namespace=NAMESPACE)
        self.replica = _replica_id()
        self.reporter = Reporter(monitor, spec.name, "serve", self.replica)
        self._current: tuple[int | None, Any, Any] = (None, None, None)  # version, learner, schema
        self._generation = -1
        self._announced: set[int] = set()
        self._stop = threading.Event()
        self.swaps = 0
        # its own files in the logs of the served rows and of the feedback, if asked for
        self._log = LogWriter(spec.log_folder, self.replica) if spec.log_folder else None
        self._feedback = (LogWriter(spec.feedback_folder, self.replica)
                          if spec.feedback_folder else None)
        self._numbers: tuple[Any, list[str]] = (None, [])  # a schema's number features
        # a new replica loads the live version before it takes any request
        deadline = monotonic() + FIRST_VERSION_WAIT
        while self._current[0] is None and monotonic() < deadline:
            self._swap(*ray.get(self.registry.follow.remote(spec.model, self._generation, 1.0)))
        self._thread = threading.Thread(target=self._follow, daemon=True, name="fk-follow")
        self._thread.start()

    # -- following the registry -----------------------------------------------------------
    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._swap(*ray.get(self.registry.follow.remote(self.spec.model,
                                                                self._generation, 5.0)))
            except Exception as exc:  # registry restarting: keep serving what we have
                log.warning("fusionkit serve %s: following the registry: %s", self.spec.name, exc)
                self._stop.wait(0.5)
            self.reporter.flush()

    def _swap(self, version: int | None, generation: int, state: bytes | None,
              schema: Any) -> None:
        """Build the new version's model off the request path, then replace one reference."""
        if version is None:  # nothing live yet: wait for the next change from here
            self._generation = generation
        if version is None or state is None or generation == self._generation:
            return
        learner = load_state(state)
        self._current = (version, learner, schema)  # one reference: atomic for readers
        self._generation = generation
        self.swaps += 1
        self.reporter.gauge(version=version)

    def __del__(self):
        self._stop.set()

    # -- answering ------------------------------------------------------------------------
    def answer(self, rows: Any) -> dict[str, Any]:
        """Predict for rows (list of records or dict of columns); raise BadRequest on bad input."""
        t0 = monotonic()
        check_rows(rows, self.spec.max_rows)  # counted before anything is built from them
        version, learner, schema = self._current
        if learner is None:
            raise BadRequest(503, f"model {self.spec.model!r} has no live version yet")
        if isinstance(rows, list) and schema is not None and hasattr(learner, "predict_records"):
            frame = check_records(rows, schema, self.spec.max_rows)
            ids = request_ids(rows, len(frame)) if self._log is not None else None
            pred = learner.predict_records(frame)
        else:
            frame = parse_rows(rows, schema, self.spec.max_rows)
            ids = request_ids(rows, len(frame)) if self._log is not None else None
            pred = learner.predict(frame)
        out: dict[str, Any] = {"predictions": _jsonable(pred.y_pred), "version": version}
        if pred.proba is not None:
            out["proba"] = _jsonable(pred.proba)
        if ids is not None:  # in the log before the answer leaves
            self._log.append(served_records(ids, self._features(frame, schema),
                                            out["predictions"], out.get("proba"),
                                            self.spec.model, version, self.replica, now()))
            out["request_ids"] = ids
        if version not in self._announced:
            self._announced.add(version)
            self.registry.served.remote(self.spec.model, version, now())
        self.reporter.count(requests=1, events_in=len(frame))
        self.reporter.latency(monotonic() - t0)
        self.reporter.flush()
        return out

    def _features(self, frame: Any, schema: Any) -> list[dict[str, Any]]:
        """The rows' features as validated, for the log: the model's columns, numbers as
        floats."""
        if not isinstance(frame, list):  # a DataFrame (an object of columns, or no schema)
            keep = list(schema.columns) if schema is not None else [
                c for c in frame.columns if c != "request_id" and not str(c).startswith("_")]
            frame = frame[keep].to_dict("records")
        if self._numbers[0] is not schema:
            self._numbers = (schema, number_columns(schema))
        return as_floats(frame, self._numbers[1]) if self._numbers[1] else frame

    def take_feedback(self, payload: Any) -> dict[str, Any]:
        """Feedback rows into the feedback stream's log (``BadRequest`` if malformed)."""
        if self._feedback is None:
            raise BadRequest(404, f"serve stage {self.spec.name!r} takes no feedback: define it "
                                  f"with feedback='<stream name>'")
        records = feedback_records(payload, self.spec.max_rows, now())
        self._feedback.append(records)
        self.reporter.count(feedback=len(records))
        self.reporter.flush()
        return {"accepted": len(records)}

    def predict(self, rows: Any) -> dict[str, Any]:
        """The Python handle's way in: errors come back as ``{"error": ..., "status": ...}``."""
        try:
            return self.answer(rows)
        except BadRequest as err:
            self.reporter.count(errors=1)
            return {"error": err.message, "status": err.status}

    def version(self) -> int | None:
        return self._current[0]

    def report(self) -> ReplicaReport:
        """What this replica reports about itself (the stage's ``infos`` read its totals)."""
        return ReplicaReport(replica=self.replica, version=self._current[0], swaps=self.swaps,
                             generation=self._generation, totals=dict(self.reporter.totals),
                             pid=os.getpid())

    def info(self) -> dict[str, Any]:
        """``report`` as a dict, for a caller holding a Serve handle."""
        return self.report().to_dict()

    def http(self, method: str, authorization: str, body: bytes,
             path: str = "") -> tuple[int, dict[str, Any]]:
        """One HTTP request, as (status, JSON body): from Serve's proxy through ``__call__``,
        or from the stage's retrying front (``HttpFront``), both of which have checked the
        token and capped the body before reading it. ``path`` ending in ``/feedback`` (under
        the stage's route) is feedback."""
        try:
            if not token_ok(authorization, self.spec.token):
                raise BadRequest(401, "missing or wrong bearer token")
            if is_feedback(path, self.spec.route):
                if method != "POST":
                    raise BadRequest(405, f"method {method} not allowed: POST feedback rows")
                return 200, self.take_feedback(_json(body))
            if method == "GET":
                return 200, {"model": self.spec.model, "version": self._current[0]}
            if method != "POST":
                raise BadRequest(405, f"method {method} not allowed: POST rows, "
                                      "or GET the live version")
            payload = _json(body)
            if not isinstance(payload, dict) or "rows" not in payload:
                raise BadRequest(400, 'expected a JSON object {"rows": [{...}, ...]}')
            return 200, self.answer(payload["rows"])
        except BadRequest as err:
            return self.refused(err)
        except Exception as exc:  # a fault of the model or of fusionkit, not of the request
            log.exception("fusionkit serve %s: answering a request", self.spec.name)
            self.reporter.count(errors=1)
            return 500, {"error": f"{type(exc).__name__}: {exc}"}

    def refused(self, err: BadRequest) -> tuple[int, dict[str, Any]]:
        self.reporter.count(errors=1)
        self.reporter.flush()
        return err.status, {"error": err.message}

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:  # the token, then the body's length, before a byte of the body is read
            body = await read_request(request, self.spec.token, self.spec.max_body_bytes)
        except BadRequest as err:
            status, payload = self.refused(err)
        else:
            status, payload = self.http(request.method,
                                        request.headers.get("authorization", ""), body,
                                        request.url.path)
        return JSONResponse(payload, status_code=status)


class HttpFront:
    """The HTTP way in of a serve stage with several replicas: hands each request to a model
    replica and, if that replica dies holding it, to another one.

    Serve's proxy routes around a dead replica but does not send again a request the replica
    had already accepted, so without a front the one request a dying replica holds fails.
    Predictions change nothing, so asking again is safe. The front holds no model; it costs
    each request one more call between processes. It checks the token and the body's size
    itself, so what it refuses is never read, nor sent on to a replica.

    The front's own replicas are Serve replicas too, behind the same proxy: one that dies
    (a SIGKILL) fails the requests it holds at that moment with the proxy's 500, and nothing
    in fusionkit sits before it to ask again. Holding no model, they rarely die on their own
    (no model to run out of memory with, no user code); a client that must never see a
    failure retries a 500 (predictions are safe to ask again).
    """

    def __init__(self, model: Any, spec: ServeSpec):
        self.model, self.spec, self.name = model, spec, spec.name
        self.retried = 0  # requests asked again because their replica died
        self.replica = _replica_id()

    def info(self) -> dict[str, Any]:
        return {"replica": self.replica, "retried": self.retried, "pid": os.getpid()}

    async def __call__(self, request: Any) -> Any:
        from ray.exceptions import RayActorError
        from starlette.responses import JSONResponse

        try:
            body = await read_request(request, self.spec.token, self.spec.max_body_bytes)
        except BadRequest as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        args = (request.method, request.headers.get("authorization", ""), bytes(body),
                request.url.path)
        for attempt in range(RETRIES + 1):
            try:
                status, payload = await self.model.http.remote(*args)
                return JSONResponse(payload, status_code=status)
            except RayActorError as exc:
                if attempt == RETRIES:
                    log.warning("fusionkit serve %s: no replica answered: %s", self.name, exc)
                else:
                    self.retried += 1
        return JSONResponse({"error": f"serve stage {self.name!r}: every replica asked died "
                                      f"holding the request ({RETRIES + 1} tries)"},
                            status_code=503)


def is_feedback(path: str, route: str | None) -> bool:
    """Whether an HTTP request's path is the feedback route under the stage's ``route``
    (whether or not Serve left the route in the path).

    >>> is_feedback("/ctr-api/feedback", "/ctr-api"), is_feedback("/ctr-api", "/ctr-api")
    (True, False)
    >>> is_feedback("/feedback/", "/ctr-api"), is_feedback("", "/ctr-api")
    (True, False)
    """
    path = path.rstrip("/")
    return path.endswith("/feedback") and path != (route or "").rstrip("/")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequest(400, f"request body is not valid JSON: {why}") from None


def _replica_id() -> str:
    """This Serve replica's id ("0" outside a replica, e.g. in a test)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return "0"


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
