"""The serve stage on a real Ray Serve: swaps under load, rollback, bad requests, monitor, scale.

Starting Ray Serve takes seconds, so one pipeline (stream -> train -> serve) is defined per
module and every test here runs against it. Its train stage publishes only when told
(``fk.publish``), so the test decides when the model changes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from _pipelines import free_port
from conftest import wait_for

from fusionkit.demo import ctr_model
from fusionkit.serving.client import PredictionError
from fusionkit.serving.deploy import handle
from fusionkit.training.protocol import Learner, Prediction

STREAM, MODEL, API = "sv-clicks", "sv-ctr", "sv-api"
FRONT = f"{API}-http"  # the retrying HTTP front's deployment, once the stage has 2 replicas
TOKEN = "s3cret"
MAX_ROWS = 50
AUTH = {"authorization": f"Bearer {TOKEN}"}



@dataclass
class Answer:
    status: int          # HTTP status, or 200/-1 for the handle (ok / raised)
    version: int | None
    error: str = ""


@dataclass
class Load:
    """A thread that asks the serve stage for predictions, one request at a time."""

    ask: object                      # () -> Answer
    pause: float = 0.005
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(self.ask())
            except Exception as exc:  # a failed request is recorded, never raised here
                self.answers.append(Answer(-1, None, f"{type(exc).__name__}: {exc}"))
            self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def latest(self) -> int | None:
        return self.answers[-1].version if self.answers else None

    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    def versions(self) -> list[int | None]:
        return [a.version for a in self.answers]


@dataclass
class Pipeline:
    url: str
    rows: list[dict]        # well-formed request rows (features only)
    client: httpx.Client

    def post(self, **kwargs) -> httpx.Response:
        kwargs.setdefault("headers", AUTH)
        return self.client.post(self.url, **kwargs)

    @property
    def port(self) -> int:
        return httpx.URL(self.url).port

    def http_load(self, url: str | None = None) -> Load:
        client = httpx.Client(timeout=30.0)  # its own connections, apart from the test's
        url = url or self.url

        def ask() -> Answer:
            r = client.post(url, json={"rows": self.rows}, headers=AUTH)
            body = r.json()
            return Answer(r.status_code, body.get("version"), body.get("error", ""))

        return Load(ask)

    def handle_load(self, fk, name: str = API) -> Load:
        def ask() -> Answer:
            out = fk.predict(name, self.rows)
            assert len(out) == len(self.rows)
            assert out["version"].nunique() == 1  # one request, one version
            return Answer(200, int(out["version"].iloc[0]))

        return Load(ask, pause=0.01)


@pytest.fixture(scope="module")
def pipeline(fk_session):
    import fusionkit as fk

    fk.stream(STREAM, source=fk.sources.synthetic(STREAM, rate=2_000, seed=3), batch_size=200)
    fk.train(MODEL, on=STREAM, label="clicked", model=ctr_model(), publish_every=None, keep=10)
    wait_for(lambda: fk.publish(MODEL), timeout=60, what="a first version")
    port = free_port()
    fk.serve(API, model=MODEL, port=port, token=TOKEN, max_rows=MAX_ROWS)
    sample = fk.peek(STREAM, 3)
    rows = sample.drop(columns=[c for c in sample.columns
                                if c.startswith("_") or c == "clicked"]).to_dict("records")
    with httpx.Client(timeout=30.0) as client:
        p = Pipeline(f"http://127.0.0.1:{port}/{API}", rows, client)
        wait_for(lambda: p.post(json={"rows": rows}).status_code == 200, timeout=60,
                 what="the serve stage answering over HTTP")
        yield p
    for name in (API, MODEL, STREAM):
        fk.stop(name)


def publish_and_see(fk, loads: list[Load]) -> int:
    """Publish a version and wait until every load has been answered by it (or a newer one)."""
    version = wait_for(lambda: fk.publish(MODEL), timeout=30, what="a version to publish")
    for load in loads:
        wait_for(lambda ld=load: (ld.latest() or 0) >= version, timeout=30,
                 what=f"v{version} answered")
    return version


def drops(versions: list[int | None]) -> list[tuple[int, int]]:
    """Every place where an answer came from an older version than the one before it."""
    return [(a, b) for a, b in zip(versions, versions[1:], strict=False) if b < a]


def test_swaps_under_load_and_rollback(fk_session, pipeline):
    import fusionkit as fk

    with pipeline.http_load() as http, pipeline.handle_load(fk) as hnd:
        wait_for(lambda: http.answers and hnd.answers, what="first answers")
        published = [publish_and_see(fk, [http, hnd]) for _ in range(50)]
        target = published[-4]
        fk.rollback(MODEL, target)
        wait_for(lambda: http.latest() == target and hnd.latest() == target, timeout=30,
                 what=f"rolled-back v{target} answered")
        after = [publish_and_see(fk, [http, hnd]) for _ in range(3)]

    assert published == sorted(published) and len(set(published)) == 50
    assert after[0] > published[-1]  # new versions after a rollback are numbered onwards
    for load in (http, hnd):
        assert load.failures() == []
        versions = load.versions()
        assert all(isinstance(v, int) for v in versions)  # every answer names its version
        # in order, except the one step back to the rollback target
        assert drops(versions) == [(published[-1], target)]
        seen = set(versions)
        assert set(published[-3:]) | {target} | set(after) <= seen
    info = handle(API).info.remote().result(timeout_s=30)
    assert info["swaps"] >= 50 + 1 + 3
    assert info["version"] == after[-1] == fk.live_version(MODEL)


BAD_BODIES = [
    ("malformed JSON", {"content": b"{nope"}, 400, "not valid JSON"),
    ("deeply nested JSON", {"content": b"[" * 100_000 + b"]" * 100_000}, 400, "not valid JSON"),
    ("not an object", {"json": [1, 2]}, 400, '{"rows"'),
    ("rows not a list", {"json": {"rows": 5}}, 400, "rows must be"),
    ("no rows", {"json": {"rows": []}}, 400, "no rows"),
    ("missing features", {"json": {"rows": [{"price": 1.0}]}}, 400, "missing feature(s): 'device'"),
]


@pytest.mark.parametrize("case, request_kwargs, status, message", BAD_BODIES,
                         ids=[b[0] for b in BAD_BODIES])
def test_bad_requests_get_4xx(pipeline, case, request_kwargs, status, message):
    r = pipeline.post(**request_kwargs)
    assert r.status_code == status, (case, r.text)
    assert message in r.json()["error"]


def test_predict_from_inside_a_running_event_loop(fk_session, pipeline):
    """A Jupyter kernel runs each cell inside its asyncio loop; ``fk.predict`` is called there
    synchronously, where a Serve handle's blocking ``result()`` refuses to run."""
    import asyncio

    import fusionkit as fk

    async def cell():
        asyncio.get_running_loop()  # as in a notebook cell: a loop is running here
        return fk.predict(API, pipeline.rows)

    out = asyncio.run(cell())
    assert len(out) == len(pipeline.rows)
    assert out["version"].nunique() == 1 and out["version"].iloc[0] >= 1
    assert {"prediction", "proba", "version"} <= set(out.columns)


def test_predict_leaves_serve_quiet_in_the_driver(fk_session, pipeline):
    """fusionkit runs Serve's own processes at WARNING; a driver's Serve logger follows, so
    a handle's first request no longer logs "Started <...SharedRouterLongPollClient...>" at
    INFO under a notebook cell (a level the user chose is left alone)."""
    import logging

    import fusionkit as fk

    logger = logging.getLogger("ray.serve")
    logger.setLevel(logging.INFO)  # Ray's default in a driver
    fk.predict(API, pipeline.rows)
    assert logger.level == logging.WARNING
    logger.setLevel(logging.ERROR)
    fk.predict(API, pipeline.rows)
    assert logger.level == logging.ERROR
    logger.setLevel(logging.WARNING)


def test_bad_rows_tokens_and_sizes_get_4xx_and_leave_the_replica_healthy(fk_session, pipeline):
    import fusionkit as fk

    good = pipeline.rows[0]
    before = handle(API).info.remote().result(timeout_s=30)["replica"]
    cases = [
        ({"json": {"rows": [dict(good, price="abc")]}}, 400, "wrong type in 'price'"),
        ({"json": {"rows": [dict(good, device=5)]}}, 400, "wrong type in 'device'"),
        ({"json": {"rows": [dict(good, age=True)]}}, 400, "wrong type in 'age'"),
        ({"json": {"rows": [good, dict(good, price=None)]}}, 400, "row 1: missing value"),
        ({"json": {"rows": [dict(good, position=1.5)]}}, 400, "not an integer"),
        ({"content": json.dumps({"rows": [dict(good, price=123.25)]}).replace("123.25", "1e999")
          .encode()}, 400, "non-finite value in 'price'"),
        ({"json": {"rows": [good] * (MAX_ROWS + 1)}}, 413, f"> {MAX_ROWS}"),
        ({"json": {"rows": [good]}, "headers": {}}, 401, "bearer token"),
        ({"json": {"rows": [good]}, "headers": {"authorization": "Bearer nope"}}, 401, "token"),
        ({"json": {"rows": [good]}, "headers": {"authorization": TOKEN}}, 401, "token"),
    ]
    with pipeline.http_load() as load:
        for kwargs, status, message in cases:
            r = pipeline.post(**kwargs)
            assert r.status_code == status, (kwargs, r.text)
            assert message in r.json()["error"], r.text
        r = pipeline.client.put(pipeline.url, json={"rows": [good]}, headers=AUTH)
        assert r.status_code == 405 and "POST" in r.json()["error"]
        with pytest.raises(PredictionError, match="wrong type in 'price'") as err:
            fk.predict(API, [dict(good, price="abc")])
        assert err.value.status == 400
        with pytest.raises(PredictionError, match="too many rows"):
            fk.predict(API, [good] * (MAX_ROWS + 1))
        wait_for(lambda: len(load.answers) >= 20, what="good requests alongside the bad ones")
    assert load.failures() == []
    # the same replica is still up and answering
    assert handle(API).info.remote().result(timeout_s=30)["replica"] == before
    assert pipeline.client.get(pipeline.url, headers=AUTH).json()["version"] is not None
    assert pipeline.post(json={"rows": pipeline.rows}).status_code == 200
    assert fk.status().loc[API, "status"] == "running"


def test_serving_latency_requests_and_freshness_reach_the_monitor(fk_session, pipeline):
    import fusionkit as fk

    since = time.time()
    with pipeline.http_load() as load:
        version = publish_and_see(fk, [load])
        wait_for(lambda: fk.metrics(API)["requests"].sum() >= len(load.answers) // 2,
                 what="request counts in the monitor")
        wait_for(lambda: fk.freshness(MODEL, since=since)["events"] > 0,
                 what=f"freshness of v{version}")
    m = fk.metrics(API)
    assert {"requests", "errors", "p50_ms", "p95_ms", "p99_ms", "rate_requests"} <= set(m.columns)
    lat = m.dropna(subset=["p50_ms"])
    assert len(lat) and (lat["p99_ms"] >= lat["p50_ms"]).all() and (lat["p50_ms"] > 0).all()
    assert fk.status().loc[API, "rate"] >= 0
    fresh = fk.freshness(MODEL)
    assert fresh["events"] > 0 and 0 < fresh["p50_ms"] <= fresh["p99_ms"]
    series = fk.freshness_series(MODEL)
    assert {"time", "version", "n", "p50_ms", "p99_ms"} <= set(series.columns)
    assert len(series) >= 2 and series["n"].sum() == fresh["events"]
    assert np.all(np.diff(series["time"].to_numpy()) >= 0)
    assert fk.freshness(MODEL, publish=True)["events"] >= fresh["events"]
    recent = fk.freshness(MODEL, since=since)  # only the version published in this test
    assert 0 < recent["events"] < fresh["events"]
    assert recent["events"] == series.loc[series["time"] > since, "n"].sum()


def replicas_running(deployment: str = API, app: str = API) -> int:
    """Running replicas of a serve stage's model (deployment = the stage's name) or of its
    front (``<name>-http``)."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return status.deployments[deployment].replica_states.get("RUNNING", 0)


def test_scale_replicas_under_load(fk_session, pipeline):
    import fusionkit as fk

    with pipeline.http_load() as load:
        fk.scale(API, 2)
        wait_for(lambda: replicas_running() == 2 and replicas_running(FRONT) == 2, timeout=120,
                 what="two running replicas, behind two of the retrying front")
        version = publish_and_see(fk, [load])
        seen: dict[str, int] = {}

        def both_replicas_on_version() -> bool:
            info = handle(API).info.remote().result(timeout_s=30)
            seen[info["replica"]] = info["version"]
            return len(seen) == 2 and all(v >= version for v in seen.values())

        wait_for(both_replicas_on_version, timeout=60, what=f"both replicas on v{version}")
    assert load.failures() == []
    assert fk.status().loc[API, "parallelism"] == 2


def replica_actors(app: str = API) -> list:
    """The Ray actors of a serve stage's model replicas (named app#deployment#id)."""
    import ray

    return [ray.get_actor(a["name"], namespace=a["namespace"])
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{app}#{app}#")]


def front_retries(app: str) -> int:
    """Requests a serve stage's HTTP front asked again, summed over its replicas."""
    from ray import serve

    front, seen = serve.get_deployment_handle(f"{app}-http", app_name=app), {}

    def every_replica_answered() -> bool:
        info = front.info.remote().result(timeout_s=30)
        seen[info["replica"]] = info["retried"]
        return len(seen) >= replicas_running(f"{app}-http", app)

    wait_for(every_replica_answered, timeout=60, what="an answer from every front replica")
    return sum(seen.values())


class SlowToServe(Learner):
    """A running mean of the label that takes 0.2 s to answer a serve request, and leaves a
    file named after its process id in ``busy`` while it answers: the test kills a replica
    that holds a request."""

    task = "regression"

    def __init__(self, busy: str):
        self.model = [0.0, 0]  # sum and count of the labels learned
        self.busy = busy

    def predict(self, X):
        return Prediction(np.full(len(X), self.model[0] / max(self.model[1], 1)))

    def learn(self, X, y):
        self.model[0] += float(np.sum(y.to_numpy(dtype="float64")))
        self.model[1] += len(y)

    def predict_records(self, rows):
        mark = Path(self.busy, str(os.getpid()))
        mark.touch()
        try:
            time.sleep(0.2)
            return super().predict_records(rows)
        finally:
            mark.unlink(missing_ok=True)


def test_replica_killed_under_load(fk_session, pipeline, request, tmp_path):
    """A serve stage with two replicas, one killed while HTTP and handle requests keep
    coming: no request fails (the stage's HTTP front and ``fk.predict`` ask another replica
    when the one holding a request dies; here each request spends 0.2 s in a replica, and
    the front shows it asked again), and the replacement answers with the live version
    from its first request."""
    import ray
    import ray.cloudpickle

    import fusionkit as fk

    ray.cloudpickle.register_pickle_by_value(request.module)  # SlowToServe travels by value
    model, app = "sv-slow", "sv-slow-api"
    fk.train(model, on=STREAM, label="clicked", model=SlowToServe(str(tmp_path)),
             publish_every=None)
    wait_for(lambda: fk.publish(model), timeout=60, what="a first version")
    live = fk.live_version(model)
    fk.serve(app, model=model, replicas=2, port=pipeline.port, token=TOKEN)
    wait_for(lambda: replicas_running(app, app) == 2 and len(replica_actors(app)) == 2
             and replicas_running(f"{app}-http", app) == 2, timeout=120,
             what="two running replicas behind two of the front")
    url = pipeline.url.replace(f"/{API}", f"/{app}")
    try:
        with ExitStack() as stack:
            https = [stack.enter_context(pipeline.http_load(url)) for _ in range(6)]
            h = stack.enter_context(pipeline.handle_load(fk, app))
            wait_for(lambda: min(len(x.answers) for x in [*https, h]) > 3, what="steady load")
            before = {handle(app).info.remote().result(timeout_s=30)["replica"]
                      for _ in range(20)}
            ids = {a._actor_id for a in replica_actors(app)}
            busy = wait_for(lambda: [int(p.name) for p in tmp_path.iterdir()], timeout=30,
                            what="a replica answering a request")
            os.kill(busy[0], signal.SIGKILL)  # it holds that request (0.2 s) and its queue
            wait_for(lambda: replicas_running(app, app) == 2 and len(replica_actors(app)) == 2
                     and {a._actor_id for a in replica_actors(app)} != ids,
                     timeout=120, what="a replacement replica running")
            counts = [len(x.answers) for x in [*https, h]]
            wait_for(lambda: all(len(x.answers) > k + 5
                                 for x, k in zip([*https, h], counts, strict=True)),
                     what="requests answered after the replacement")
            seen: dict[str, int] = {}

            def replacement_answered() -> bool:
                info = handle(app).info.remote().result(timeout_s=30)
                seen[info["replica"]] = info["version"]
                return len(set(seen) - before) >= 1

            wait_for(replacement_answered, timeout=60, what="an answer from the replacement")
        for load in [*https, h]:
            assert load.failures() == [], load.failures()[:3]
            assert {a.version for a in load.answers} == {live}
        assert all(seen[r] == live for r in set(seen) - before)
        assert front_retries(app) >= 1, "the killed replica held no request: none asked again"
    finally:
        fk.stop(app)
        fk.stop(model)


def test_serve_again_after_stop_on_another_address(fk_session, pipeline):
    """Stopping a serve stage and serving again elsewhere restarts Ray Serve (one HTTP
    address per cluster): this driver's predictions keep working, through the new Serve.
    Last in the module: the pipeline's own URL is gone afterwards."""
    import fusionkit as fk

    before = fk.predict(API, pipeline.rows)
    fk.stop(API)
    port = free_port()
    fk.serve(API, model=MODEL, port=port, token=TOKEN, max_rows=MAX_ROWS)
    out = fk.predict(API, pipeline.rows)
    assert len(out) == len(pipeline.rows)
    assert out["version"].iloc[0] >= before["version"].iloc[0]
    r = pipeline.client.post(f"http://127.0.0.1:{port}/{API}", json={"rows": pipeline.rows},
                             headers=AUTH)
    assert r.status_code == 200 and r.json()["version"] == out["version"].iloc[0]
    assert fk.status().loc[API, "status"] == "running"
