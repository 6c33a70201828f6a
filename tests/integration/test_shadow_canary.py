"""Shadow and canary serving on a real Ray and Ray Serve, over HTTP through Serve's proxy:
a shadow answers every request into the served log with the request's ids; fk.compare's
numbers equal pandas over the served rows and their labels; a canary's share of 10,000
rows is within 2 points of its setting and sticky per user; fk.canary changes the share and
fk.promote the answering model live, under HTTP load, with no failed request; the dashboard
shows fk.compare's numbers from the status rows."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import pytest
from _pipelines import free_port
from conftest import wait_for, wait_restarted

from fusionkit.demo import ctr_model
from fusionkit.training.protocol import Learner, Prediction

STREAM, MAIN, OTHER, API = "sc-clicks", "sc-ctr", "sc-coin", "sc-api"
TWIN = "sc-coin2"  # a model equal to OTHER
SURE = "sc-sure"  # a model worse than any: sure of a click on every row
SERVED, FEEDBACK, EXAMPLES, LEARN = "sc-served", "sc-feedback", "sc-examples", "sc-learn"
Z = 1.959963984540054


class Coin(Learner):
    """A model that knows nothing: probability 0.5, predicts 0."""

    task = "classification"

    def predict(self, X: pd.DataFrame) -> Prediction:
        return Prediction(np.zeros(len(X), dtype="int64"), np.full(len(X), 0.5))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        pass


class Sure(Coin):
    """A model sure of a click on every row (probability 0.99): its log loss on the rows
    without a click is 4.6, far worse than any model's, however little that one learned."""

    def predict(self, X: pd.DataFrame) -> Prediction:
        return Prediction(np.ones(len(X), dtype="int64"), np.full(len(X), 0.99))


@pytest.fixture(scope="module")
def stage(fk_session, request):
    import ray.cloudpickle

    import fusionkit as fk

    ray.cloudpickle.register_pickle_by_value(request.module)
    fk.stream(STREAM, source=fk.sources.synthetic(STREAM, rate=2_000, seed=7), batch_size=200)
    fk.train(MAIN, on=STREAM, label="clicked", model=ctr_model(), publish_every=None)
    fk.train(OTHER, on=STREAM, label="clicked", model=Coin(), publish_every=None)
    fk.train(TWIN, on=STREAM, label="clicked", model=Coin(), publish_every=None)
    fk.train(SURE, on=STREAM, label="clicked", model=Sure(), publish_every=None)
    wait_for(lambda: all(fk.publish(m) for m in (MAIN, OTHER, TWIN, SURE)), timeout=60,
             what="first versions")
    port = free_port()
    options = dict(port=port, log=SERVED, feedback=FEEDBACK)
    fk.serve(API, model=MAIN, shadow=[OTHER], **options)
    fk.join(EXAMPLES, left=SERVED, right=FEEDBACK, on="request_id", within=600,
            label="label", default=0, idle="1s")
    fk.train(LEARN, on=EXAMPLES, label="label", model=ctr_model(), publish_every=None)
    sample = fk.peek(STREAM, 200)
    yield {"url": f"http://127.0.0.1:{port}/{API}", "options": options, "sample": sample,
           "port": port}
    for name in (LEARN, EXAMPLES, API, SERVED, FEEDBACK, SURE, TWIN, OTHER, MAIN, STREAM):
        fk.stop(name)


def _rows(sample: pd.DataFrame) -> list[dict]:
    return sample.drop(columns=[c for c in sample.columns
                                if c.startswith("_") or c == "clicked"]).to_dict("records")


def _post_all(url: str, bodies: list[dict], threads: int = 4) -> list[httpx.Response | None]:
    """POST each body from a few threads at once (HTTP load); None for a transport error."""
    local = threading.local()

    def post(body):
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=30.0)
        try:
            return local.client.post(url, json=body)
        except httpx.HTTPError:
            return None

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, bodies))


def _replica(fk) -> dict:
    from fusionkit.serving.deploy import handle

    return handle(API).info.remote().result(timeout_s=10)


def _roles_by_writer(folder: str) -> dict[str, dict[str, int]]:
    """Per writer of a served log folder, how many of its rows each role answered."""
    import json
    from collections import Counter
    from pathlib import Path

    from fusionkit.sources.logfiles import SUFFIX

    out = {}
    for writer in Path(folder).glob("w-*"):
        lines = [json.loads(line) for seg in sorted(writer.glob(f"*{SUFFIX}"))
                 for line in seg.read_bytes().splitlines() if line.strip()]
        out[writer.name[2:]] = dict(Counter(r["_role"] for r in lines))
    return out


def test_shadow_answers_every_request_off_path_and_compare_equals_pandas(fk_session, stage):
    import fusionkit as fk

    rows = _rows(stage["sample"])
    n = len(rows)
    bodies = [{"rows": [dict(r, request_id=f"sh-{i}")]} for i, r in enumerate(rows)]
    answers = _post_all(stage["url"], bodies)
    assert all(a is not None and a.status_code == 200 for a in answers)  # none failed
    assert {a.json()["model"] for a in answers} == {MAIN}  # the client gets the primary's
    wait_for(lambda: _replica(fk)["totals"].get("shadow_answered", 0) >= n, timeout=60,
             what="the shadow answering every request")
    assert _replica(fk)["shadow_dropped"] == {}
    # the shadow answered in its worker process, not the replica's: its rows are in the
    # worker's files of the served log, the client's in the replica's
    roles = _roles_by_writer(fk.stage(API).spec.log_folder)
    replica = _replica(fk)["replica"]
    assert roles[replica] == {"primary": n}
    assert roles[f"{replica}-shadow"] == {"shadow": n}
    # on CPU time nothing else wants (Linux's SCHED_IDLE): the clients' answers go first
    import os

    import psutil

    workers = [p for p in psutil.process_iter(["cmdline"])
               if "ray::ShadowWorker" in " ".join(p.info["cmdline"] or ())]
    assert workers, "no shadow worker process"
    assert all(os.sched_getscheduler(w.pid) == os.SCHED_IDLE for w in workers), [
        (w.pid, os.sched_getscheduler(w.pid)) for w in workers]
    assert os.sched_getscheduler(_replica(fk)["pid"]) != os.SCHED_IDLE  # the replica is not
    labels = stage["sample"]["clicked"].astype(int).tolist()
    r = httpx.post(f"{stage['url']}/feedback",
                   json=[{"request_id": f"sh-{i}", "label": y} for i, y in enumerate(labels)])
    assert r.status_code == 200

    # pandas over the served rows and their labels: the primary's answers as the client got
    # them, the shadow's as its live version answers the same rows
    coin = fk.model(OTHER)
    frame = pd.DataFrame(rows)
    shadow = coin.predict(frame)
    served = pd.concat([
        pd.DataFrame({"rid": [f"sh-{i}" for i in range(n)], "model": MAIN, "label": labels,
                      "pred": [a.json()["predictions"][0] for a in answers],
                      "proba": [a.json()["proba"][0] for a in answers]}),
        pd.DataFrame({"rid": [f"sh-{i}" for i in range(n)], "model": OTHER, "label": labels,
                      "pred": shadow.y_pred, "proba": shadow.proba})])
    served["correct"] = (served["pred"] == served["label"]).astype(int)
    p = served["proba"].clip(1e-15, 1 - 1e-15)
    served["loss"] = -np.log(np.where(served["label"] == 1, p, 1 - p))
    g = served.groupby("model")
    wide = served.pivot(index="rid", columns="model", values="loss")
    d = wide[OTHER] - wide[MAIN]

    def scored():
        c = fk.compare(API)
        return (c,) if len(c) == 2 and (c["requests"] >= n).all() else None

    (got,) = wait_for(scored, timeout=90, interval=0.5,
                      what="both models' rows joined and scored")
    got = got.set_index("model")
    assert got.loc[MAIN, "role"] == "primary" and got.loc[OTHER, "role"] == "shadow"
    assert got["requests"].to_dict() == g.size().to_dict()
    np.testing.assert_allclose(got["accuracy"], g["correct"].mean()[got.index])
    np.testing.assert_allclose(got["log_loss"], g["loss"].mean()[got.index])
    row = got.loc[OTHER]
    assert row["interval"] == "paired" and row["n_compared"] == n and row["vs"] == MAIN
    se = d.std(ddof=1) / math.sqrt(n)
    np.testing.assert_allclose([row["log_loss_diff"], row["log_loss_low"], row["log_loss_high"]],
                               [d.mean(), d.mean() - Z * se, d.mean() + Z * se])
    assert f"{n} paired requests" in row["verdict"]
    # each request learned once by the train stage on the join: the shadow's rows are not
    def learned():
        return sum(i["events_seen"] for i in fk.infos(LEARN))

    wait_for(lambda: learned() >= n, timeout=30, what="the primary's rows learned")
    assert learned() == n
    # peek shows a join's examples too, and a train stage the rows it learned: no shadow's
    last = fk.peek(EXAMPLES, 3)
    assert len(last) == 3 and {"request_id", "label", "_role"} <= set(last.columns)
    learned_rows = fk.peek(LEARN, 50)  # n rows were learned (the sample's size varies)
    assert len(learned_rows) == min(50, n) and (learned_rows["_role"] != "shadow").all()
    assert "label" in learned_rows.columns
    with pytest.raises(fk.FusionError, match="is a serve stage: peek shows the events of"):
        fk.peek(API)

    # the dashboard shows fk.compare's numbers from the status rows it polls anyway
    from fusionkit.notebook.state import DashboardState
    from fusionkit.stages import rows as status_rows

    state = DashboardState()
    state.ingest_status(status_rows())
    shown = {s.model: s for s in state.stages[API].compare.models}
    now = fk.compare(API).set_index("model")
    assert {m: (s.role, s.requests) for m, s in shown.items()} == {
        m: (r["role"], r["requests"]) for m, r in now.iterrows()}
    assert shown[OTHER].accuracy == now.loc[OTHER, "accuracy"]
    assert shown[OTHER].log_loss == now.loc[OTHER, "log_loss"]
    assert shown[OTHER].verdict == now.loc[OTHER, "verdict"]


def test_a_shadow_added_live_answers_the_first_requests_after(fk_session, stage):
    import fusionkit as fk
    from fusionkit.serving.deploy import handle

    name, log = "sc-api-late", "sc-served-late"
    fk.serve(name, model=MAIN, port=stage["port"], log=log)
    fk.serve(name, model=MAIN, port=stage["port"], log=log, shadow=[TWIN])
    # the replica takes the new routing once its shadow worker (a new process) has loaded
    # TWIN: the first requests after it are answered by the shadow, none dropped
    url = f"http://127.0.0.1:{stage['port']}/{name}"
    answers = _post_all(url, [{"rows": [r]} for r in _rows(stage["sample"])[:5]])
    assert all(a is not None and a.status_code == 200 for a in answers)

    def report():
        return handle(name).info.remote().result(timeout_s=10)

    wait_for(lambda: report()["totals"].get("shadow_answered", 0)
             + report()["totals"].get("shadow_dropped", 0) >= 5,
             timeout=60, what="the shadow taking the five requests")
    assert report()["shadow_dropped"] == {}
    assert report()["totals"]["shadow_answered"] == 5
    fk.stop(name)
    fk.stop(log)


def test_canary_share_within_two_points_over_10k_rows_and_sticky(fk_session, stage):
    import fusionkit as fk

    pid = _replica(fk)["pid"]
    fk.serve(API, model=MAIN, canary={OTHER: 0.1}, sticky="user_id", **stage["options"])
    assert _replica(fk)["pid"] == pid  # the same replica: the routing changed live
    base = _rows(stage["sample"])
    rows = [dict(base[i % len(base)], user_id=f"u{i}") for i in range(10_000)]
    bodies = [{"rows": rows[i:i + 200]} for i in range(0, len(rows), 200)]
    answers = _post_all(stage["url"], bodies)
    assert all(a is not None and a.status_code == 200 for a in answers)
    models = [m for a in answers for m in a.json()["models"]]
    assert abs(models.count(OTHER) / len(models) - 0.1) <= 0.02
    again = _post_all(stage["url"], bodies[:10])  # the same users: the same models
    assert [m for a in again for m in a.json()["models"]] == models[:2000]
    assert fk.predict(API, rows[:200])["model"].tolist() == models[:200]  # from Python too

    fk.canary(API, 0.3)  # live: the users of the canary stay, more join them
    more = _post_all(stage["url"], bodies[:10])
    after = [m for a in more for m in a.json()["models"]]
    assert all(b == OTHER for a, b in zip(models[:2000], after, strict=True) if a == OTHER)
    assert after.count(OTHER) > models[:2000].count(OTHER)


def _labelled_canary_traffic(fk, stage, prefix: str, canary: str) -> int:
    """600 rows of 600 users, their labels posted; returns how many the canary answered,
    once the train stage on the join has scored them all."""
    base, labels = _rows(stage["sample"]), stage["sample"]["clicked"].astype(int).tolist()
    rows = [dict(base[i % len(base)], user_id=f"{prefix}{i}", request_id=f"{prefix}{i}")
            for i in range(600)]
    answers = _post_all(stage["url"], [{"rows": rows[i:i + 50]} for i in range(0, 600, 50)])
    assert all(a is not None and a.status_code == 200 for a in answers)
    models = [m for a in answers for m in a.json()["models"]]
    before = fk.compare(API).set_index("model")["requests"].to_dict()
    r = httpx.post(f"{stage['url']}/feedback", json=[
        {"request_id": f"{prefix}{i}", "label": labels[i % len(labels)]} for i in range(600)])
    assert r.status_code == 200
    want = {m: before.get(m, 0) + models.count(m) for m in set(models)}

    def scored():
        now = fk.compare(API).set_index("model")["requests"].to_dict()
        return all(now.get(m, 0) >= k for m, k in want.items())

    wait_for(scored, timeout=90, interval=0.5, what="the canary traffic joined and scored")
    return models.count(canary)


def test_rollback_policy_fires_on_a_worse_canary_not_on_an_equal_one(fk_session, stage):
    import fusionkit as fk

    fk.serve(API, model=OTHER, canary={TWIN: 0.5}, sticky="user_id", **stage["options"])
    assert _labelled_canary_traffic(fk, stage, "eq-", TWIN) > 100
    assert fk.check_canary(API) == []  # equal: left alone
    assert fk.api.stage_spec(API).canary == ((TWIN, 0.5),)

    # worse whatever the primary learned before its first version (published as soon as it
    # had learned anything): a model sure of a click on every row
    fk.serve(API, model=MAIN, canary={SURE: 0.5}, sticky="user_id", **stage["options"])
    assert _labelled_canary_traffic(fk, stage, "worse-", SURE) > 100
    (done,) = fk.check_canary(API)  # its log loss is worse: rolled back
    assert done["model"] == SURE and "is worse than" in done["verdict"]
    assert fk.api.stage_spec(API).canary == ()
    body = httpx.post(stage["url"], json={"rows": _rows(stage["sample"])}).json()
    assert body["model"] == MAIN and "models" not in body  # the primary answers every row
    events = fk.events()
    assert (events["kind"] == "canary-rollback").any()


@pytest.mark.parametrize("line, message", [
    ("%fusion serve x --model a --shadow b", "--shadow answers go to the served log only"),
    ("%fusion serve x --model a --canary b=2", "takes a share of the rows between 0 and 1"),
    ("%fusion serve x --model a --canary b", "takes MODEL=SHARE such as ctr-tree=0.1"),
    ("%fusion serve x --model a --canary a=0.1", "'a' is named twice"),
    ("%fusion serve x --model a --sticky user_id", "--sticky routes the rows of a --canary"),
    (f"%fusion compare {STREAM}", f"{STREAM!r} is a stream stage; compare takes the name of a "
                                  "serve stage"),
    (f"%fusion canary {API} lots", "SHARE takes a share of the rows"),
    (f"%fusion promote {API}", "promote"),
])
def test_magic_usage_errors(stage, line, message):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as err:
        _shell().run_cell(line).raise_error()
    assert message in str(err.value)


def test_magics_route_compare_and_promote(fk_session, stage):
    import fusionkit as fk

    shell = _shell()
    routing = _replica(fk)["routing"]
    o = stage["options"]
    shell.run_cell(f"%fusion serve {API} --model {MAIN} --port {o['port']} --log {o['log']} "
                   f"--feedback {o['feedback']} --canary {OTHER}=0.5 --sticky user_id"
                   ).raise_error()
    wait_for(lambda: _replica(fk)["routing"] > routing, timeout=60, what="the new routing")
    rows = [dict(r, user_id=f"m{i}") for i, r in enumerate(_rows(stage["sample"]))]
    body = httpx.post(stage["url"], json={"rows": rows}).json()
    assert set(body["models"]) == {MAIN, OTHER}
    shell.run_cell(f"%fusion canary {API} 0").raise_error()  # no canary left: one model
    body = httpx.post(stage["url"], json={"rows": rows}).json()
    assert body["model"] == MAIN and "models" not in body
    frame = shell.run_cell(f"%fusion compare {API}").result
    assert list(frame["model"][:1]) == [MAIN]  # the shadow test's rows, scored


def _shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext fusionkit").raise_error()
    return shell


def test_promote_under_http_load_fails_no_request(fk_session, stage):
    import fusionkit as fk

    fk.serve(API, model=MAIN, shadow=[OTHER], **stage["options"])
    rows = _rows(stage["sample"].head(1))
    stop, seen, failed = threading.Event(), [], []

    def load():
        with httpx.Client(timeout=30.0) as client:
            while not stop.is_set():
                try:
                    r = client.post(stage["url"], json={"rows": rows})
                    (seen if r.status_code == 200 else failed).append(
                        r.json().get("model") if r.status_code == 200 else r.status_code)
                except httpx.HTTPError as exc:
                    failed.append(repr(exc))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(seen) >= 50, timeout=60, what="requests answered before")
        assert fk.promote(API, OTHER)["primary"] == OTHER
        mark = len(seen)
        wait_for(lambda: len(seen) >= mark + 50, timeout=60, what="requests answered after")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert failed == []
    assert seen[0] == MAIN and set(seen[mark:]) == {OTHER}  # answered by the promoted model
    assert fk.api.stage_spec(API).model == OTHER  # the definition follows
    with pytest.raises(fk.FusionError, match="not a canary or shadow"):
        fk.promote(API, MAIN)


def test_a_routing_outlives_a_registry_restart(fk_session, stage):
    """A promotion is kept through a registry restart: a replica Serve starts after it
    answers with the promoted model, not with the stage's first definition."""
    import os
    import signal

    import ray

    import fusionkit as fk

    fk.serve(API, model=MAIN, shadow=[OTHER], **stage["options"])
    rows = _rows(stage["sample"].head(1))
    assert fk.promote(API, OTHER)["primary"] == OTHER
    wait_for(lambda: httpx.post(stage["url"], json={"rows": rows}).json().get("model") == OTHER,
             timeout=60, what="the promoted model answering")
    registry = fk.api.handles()["registry"]
    pid = ray.get(registry.pid.remote())
    os.kill(pid, signal.SIGKILL)

    wait_restarted(registry, pid, what="the registry restarted")
    # a new replica reads its routing from the restarted registry
    old = _replica(fk)
    os.kill(old["pid"], signal.SIGKILL)

    def answered_by_a_new_replica() -> str | None:
        try:
            info = _replica(fk)
        except Exception:  # Serve is starting the new replica
            return None
        if info["replica"] == old["replica"]:
            return None
        r = httpx.post(stage["url"], json={"rows": rows}, timeout=30.0)
        return r.json().get("model") if r.status_code == 200 else None

    assert wait_for(answered_by_a_new_replica, timeout=120, interval=0.5,
                    what="an answer from the new replica") == OTHER
