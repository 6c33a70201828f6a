"""A serve replica: follows the registry and swaps models between requests.

Each replica long-polls the registry for a change of the live version, fetches the new
state and builds the model off the request path, then replaces one reference. A request
reads that reference once, so it is answered wholly by one version and never waits for a
swap. Every answer names the version that made it.

The same holds for the stage's routing (``fusionkit.serving.routing``: the primary, the
canaries, the shadows): the replica follows it in the registry, loads the models that
answer (the primary and the canaries, one follower each) and has its shadow worker load the
shadows, and only then replaces the routing it answers by; a request reads the routing,
then the models, once each. Shadows answer after the request, in that worker process
(``fusionkit.serving.shadow``), which alone holds their versions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from typing import Any

import ray

from fusionkit._clock import monotonic, now
from fusionkit.runtime.names import CONTROLLER, MONITOR, NAMESPACE
from fusionkit.runtime.reports import ReplicaReport
from fusionkit.runtime.specs import ServeSpec
from fusionkit.runtime.stage import Reporter
from fusionkit.serving.holder import ModelHolder
from fusionkit.serving.inputs import BadRequest, check_rows
from fusionkit.serving.limits import read_request, token_ok
from fusionkit.serving.routing import routing_of
from fusionkit.serving.served_log import column_records, feedback_records
from fusionkit.serving.shadow import ShadowPool
from fusionkit.sources.logfiles import LogWriter
from fusionkit.streaming.features import FeatureError, RowFeatures, TableCopy
from fusionkit.streaming.tables import merge_parts, split_keys

log = logging.getLogger("fusionkit")
FIRST_VERSION_WAIT = 30.0
FIRST_OTHERS_WAIT = 5.0  # canaries and shadows: routed to the primary until they load
TABLE_WAIT = 10.0  # how long a request waits for a table's values
TABLE_POLL = 1.0  # how long a table's actor holds a replica's ask for changes when none come


class ModelServer(ModelHolder):
    """The Ray Serve deployment class of a serve stage."""

    def __init__(self, spec: ServeSpec):
        replica = _replica_id()
        monitor = ray.get_actor(MONITOR, namespace=NAMESPACE)
        super().__init__(spec, replica, replica, Reporter(monitor, spec.name, "serve", replica))
        self.swaps = 0
        # its own files in the log of the feedback, if asked for
        self._feedback = (LogWriter(spec.feedback_folder, self.replica)
                          if spec.feedback_folder else None)
        # who answers what: the registry's routing of the stage (fk.canary, fk.promote), or
        # the definition's when none was set since
        routing, self._route_generation = ray.get(
            self.registry.follow_route.remote(spec.name, -1, 0.0))
        self._routing = routing if routing is not None else routing_of(spec)
        self.shadow = ShadowPool(self)
        # fk.features: request rows get their tables' freshest values, then the feature
        # function; a copy of each table actor's values, kept up to date by a thread each
        self._tables: dict[str, list[Any]] = {}  # table -> its actors, asked of the controller
        self.features = None
        if spec.enrich is not None:
            copies = {t.name: [TableCopy(t) for _ in range(t.parallelism)]
                      for t in spec.enrich.specs}
            self.features = RowFeatures(
                spec.enrich, self._read_table, spec.staleness, copies=copies,
                counted=lambda **n: self.reporter.count(
                    **{f"features_{k}": v for k, v in n.items()}))
            for name, parts in copies.items():
                for i, copy in enumerate(parts):
                    threading.Thread(target=self._follow_table, args=(name, i, copy),
                                     daemon=True, name=f"fk-table-{name}-{i}").start()
            # a new replica has its copies before it takes a request (else it reads the
            # tables' actors until they come)
            deadline = monotonic() + FIRST_VERSION_WAIT
            while (monotonic() < deadline and not all(
                    c.token is not None for parts in copies.values() for c in parts)):
                self._stop.wait(0.02)
        # a new replica loads the live version before it takes any request
        deadline = monotonic() + FIRST_VERSION_WAIT
        primary = self._routing.primary
        while primary not in self._models and monotonic() < deadline:
            self._swap(primary, *ray.get(self.registry.follow.remote(
                primary, self._generations.get(primary, -1), 1.0)))
        self._follow_models(self._routing.answering, wait=FIRST_OTHERS_WAIT)
        self.shadow.follow(self._routing.shadow, wait=FIRST_OTHERS_WAIT)
        self._thread = threading.Thread(target=self._follow_routes, daemon=True,
                                        name="fk-routes")
        self._thread.start()

    @property
    def _current(self) -> tuple[int | None, Any, Any]:
        """The primary model's (version, learner, schema)."""
        return self._models.get(self._routing.primary, (None, None, None))

    # -- following the registry -----------------------------------------------------------
    def _follow_routes(self) -> None:
        """Swap to a new routing once every model it names is loaded (off the request path:
        a promoted model answers at once, as a new version does)."""
        while not self._stop.is_set():
            try:
                routing, generation = ray.get(self.registry.follow_route.remote(
                    self.spec.name, self._route_generation, 5.0))
            except Exception as exc:
                log.warning("fusionkit serve %s: following the routing: %s", self.spec.name, exc)
                self._stop.wait(0.5)
                continue
            if routing is None:  # a restarted registry: keep the routing we have
                self._route_generation = generation
                continue
            if generation == self._route_generation:
                continue
            self._follow_models(routing.answering, wait=FIRST_VERSION_WAIT)
            self.shadow.follow(routing.shadow, wait=FIRST_VERSION_WAIT)
            self._routing = routing  # one reference: a request reads it once
            self._route_generation = generation
            self.reporter.gauge(routing=generation)

    def _swapped(self, model: str, version: int) -> None:
        if model == self._routing.primary:
            self.swaps += 1
            self.reporter.gauge(version=version)

    @property
    def _generation(self) -> int:
        return self._generations.get(self._routing.primary, -1)

    # -- answering ------------------------------------------------------------------------
    def answer(self, rows: Any) -> dict[str, Any]:
        """Predict for rows (list of records or dict of columns); raise BadRequest on bad input.

        The routing and the models are read once: a request is answered by one routing,
        each row wholly by one version. A stage with canaries routes each row (by its sticky
        key) and says which model answered each; shadows get the request afterwards."""
        t0, t = monotonic(), now()
        check_rows(rows, self.spec.max_rows)  # counted before anything is built from them
        routing, models = self._routing, self._models
        if routing.primary not in models:
            raise BadRequest(503, f"model {routing.primary!r} has no live version yet")
        raw = None
        if self.features is not None:  # routed by the raw rows, answered with their features
            raw = _record_list(rows)
            rows = self._featurize(raw)
        if routing.canary:
            records = rows if isinstance(rows, list) else column_records(rows)
            picks = [m if m in models else routing.primary
                     for m in (routing.pick(r) for r in raw or records)]
        else:
            records, picks = rows, []
        if len(set(picks)) <= 1:
            name = picks[0] if picks else routing.primary
            out = self._answer_with(name, models[name], routing.role(name), rows, t=t)
            n = len(out["predictions"])
            if routing.canary:
                out["models"], out["versions"] = [name] * n, [out["version"]] * n
        else:
            out = self._answer_split(records, picks, routing, models, t)
            n = len(picks)
        if routing.shadow and "request_ids" in out:
            self.shadow.offer(routing.shadow, records if routing.canary else rows,
                              out["request_ids"], t)
        self.reporter.count(requests=1, events_in=n)
        self.reporter.latency(monotonic() - t0)
        self.reporter.flush()
        return out

    def _answer_split(self, records: list[Any], picks: list[str], routing: Any,
                      models: dict[str, Any], t: float) -> dict[str, Any]:
        """Rows routed to several models: each model answers its rows, in one answer."""
        n = len(records)
        merged: dict[str, list[Any]] = {"predictions": [None] * n, "proba": [None] * n,
                                        "request_ids": [None] * n, "models": list(picks),
                                        "versions": [None] * n}
        has_proba = has_ids = True
        for name in dict.fromkeys(picks):
            where = [i for i, m in enumerate(picks) if m == name]
            part = self._answer_with(name, models[name], routing.role(name),
                                     [records[i] for i in where], t=t)
            has_proba &= "proba" in part
            has_ids &= "request_ids" in part
            for j, i in enumerate(where):
                merged["predictions"][i] = part["predictions"][j]
                merged["versions"][i] = part["version"]
                if "proba" in part:
                    merged["proba"][i] = part["proba"][j]
                if "request_ids" in part:
                    merged["request_ids"][i] = part["request_ids"][j]
        out: dict[str, Any] = {"predictions": merged["predictions"],
                               "version": merged["versions"][0], "model": picks[0]}
        if has_proba:
            out["proba"] = merged["proba"]
        if has_ids:
            out["request_ids"] = merged["request_ids"]
        out["models"], out["versions"] = merged["models"], merged["versions"]
        return out

    def _featurize(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Request rows with their features made (``fusionkit.streaming.features``); the
        keys read, from the copies of the tables or their actors, counted in the totals
        (``features_copied``, ``features_misses``, ``features_read``, ``features_cached``)."""
        try:
            return self.features(records)
        except FeatureError as err:
            raise BadRequest(err.status, err.message) from None

    def _table_actors(self, name: str) -> list[Any]:
        """The actors of table ``name`` (asked of the controller once, and again after a
        failed call to one of them)."""
        actors = self._tables.get(name)
        if actors is None:
            controller = ray.get_actor(CONTROLLER, namespace=NAMESPACE)
            actors = self._tables[name] = ray.get(controller.table_actors.remote(name))
        return actors

    def _follow_table(self, name: str, index: int, copy: TableCopy) -> None:
        """Keep ``copy`` of table actor ``index``'s values up to date: ask what changed
        since the copy's version (a long poll), about every ``staleness / 2`` seconds."""
        while not self._stop.is_set():
            try:
                actor = self._table_actors(name)[index]
                copy.apply(*ray.get(actor.changes.remote(copy.token, copy.version, name,
                                                         TABLE_POLL), timeout=TABLE_WAIT))
            except Exception as exc:  # requests read the actors meanwhile
                log.debug("fusionkit serve %s: following table %s: %s", self.spec.name,
                          name, exc)
                self._tables.pop(name, None)
                self._stop.wait(0.5)
                continue
            self._stop.wait(self.spec.staleness / 2)

    def _read_table(self, name: str, keys: list[Any]) -> Any:
        """The values of ``keys`` in table ``name``: one call to each of its actors holding
        some of them, all at once; its actors are asked of the controller again once if
        one is gone or no longer keeps the table."""
        why: BaseException | None = None
        for _ in range(2):
            try:
                actors = self._table_actors(name)
                where = split_keys(keys, len(actors))
                refs = [a.lookup.remote([keys[i] for i in at], name)
                        for a, at in zip(actors, where, strict=True) if len(at)]
                frames = iter(ray.get(refs, timeout=TABLE_WAIT))
                return merge_parts([next(frames) if len(at) else None for at in where], where)
            except Exception as exc:
                self._tables.pop(name, None)
                why = exc
        raise BadRequest(503, f"table {name!r} cannot be read now: "
                              f"{type(why).__name__}: {str(why).splitlines()[0][:200]}")

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
                             pid=os.getpid(), model=self._routing.primary,
                             routing=self._route_generation,
                             shadow_dropped=dict(self.shadow.dropped))

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
                return 200, {"model": self._routing.primary, "version": self._current[0],
                             "routing": self._route_generation}
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
            args = (request.method, request.headers.get("authorization", ""), body,
                    request.url.path)
            if self.features is None:
                status, payload = self.http(*args)
            else:  # it may wait on a table's actor: not on the event loop
                status, payload = await asyncio.get_running_loop().run_in_executor(
                    None, self.http, *args)
        return JSONResponse(payload, status_code=status)


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


def _record_list(rows: Any) -> list[dict[str, Any]]:
    """A request's rows as a list of records (an object of columns turned into one)."""
    records = column_records(rows) if isinstance(rows, dict) else rows
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise BadRequest(400, "rows must be a list of objects or an object of columns")
    if not records:
        raise BadRequest(400, "no rows to predict")
    return records


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
