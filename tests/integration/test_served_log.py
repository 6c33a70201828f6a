"""The served log and the feedback route on a real Ray and Ray Serve, over HTTP through
Serve's proxy: rows answered become events of a stream with the ids given or made, feedback
posted over HTTP becomes a stream, the two are joined, a train stage learns the examples and
publishes versions; malformed feedback is refused with its reason; a replica SIGKILLed
mid-run loses no answered row from the log."""

from __future__ import annotations

import os
import pickle
import signal
import threading
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd
import pytest
import ray
from _pipelines import free_port
from conftest import wait_for

from fusionkit.demo import ctr_model
from fusionkit.serving.deploy import handle
from fusionkit.training.protocol import Learner, Prediction

STREAM, MODEL, API = "sl-clicks", "sl-ctr", "sl-api"
SERVED, FEEDBACK, EXAMPLES = "sl-served", "sl-feedback", "sl-examples"
SEEN, LOOP = "sl-seen", "sl-loop"
TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
WITHIN = 2.0
MAX_BODY = 64 * 1024


class Seen(Learner):
    """Remembers every example it learned: its request id, label, and the served columns."""

    task = "classification"

    def __init__(self):
        self.labels: dict[str, list[int]] = {}
        self.versions: dict[str, int] = {}
        self.columns: set[str] = set()
        self.answers: dict[str, tuple] = {}  # request id: (model, version, prediction, proba)

    def predict(self, X: pd.DataFrame) -> Prediction:
        return Prediction(np.zeros(len(X), dtype="int64"))

    def learn(self, X: pd.DataFrame, y: pd.Series) -> None:
        self.columns |= set(map(str, X.columns))
        for rid, label, version in zip(X["request_id"], y, X["_version"], strict=True):
            self.labels.setdefault(rid, []).append(int(label))
            self.versions[rid] = int(version)
        for rid, *answer in zip(X["request_id"], X["_model"], X["_version"], X["_prediction"],
                                X["_proba"], strict=True):
            self.answers[rid] = tuple(answer)

    def get_state(self) -> bytes:
        return pickle.dumps((self.labels, self.versions, self.columns, self.answers))

    def set_state(self, state: bytes) -> None:
        self.labels, self.versions, self.columns, self.answers = pickle.loads(state)



@dataclass
class Loop:
    url: str
    rows: list[dict]
    client: httpx.Client

    def ask(self, rows: list[dict], **kw) -> httpx.Response:
        return self.client.post(self.url, json={"rows": rows}, headers=AUTH, **kw)

    def feedback(self, body) -> httpx.Response:
        return self.client.post(f"{self.url}/feedback", json=body, headers=AUTH)


@dataclass
class Load:
    """A thread that sends requests of ``size`` rows, ids ``<prefix><i>-<row>``, and keeps
    the ids of every answered row."""

    loop: Loop
    prefix: str
    size: int = 1
    answered: list[str] = field(default_factory=list)
    failed: int = 0

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.client = httpx.Client(timeout=30.0)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            ids = [f"{self.prefix}{i}-{j}" for j in range(self.size)]
            rows = [dict(self.loop.rows[j % len(self.loop.rows)], request_id=rid)
                    for j, rid in enumerate(ids)]
            try:
                r = self.client.post(self.loop.url, json={"rows": rows}, headers=AUTH)
                if r.status_code == 200:
                    assert r.json()["request_ids"] == ids
                    self.answered += ids
                else:
                    self.failed += 1
            except httpx.HTTPError:
                self.failed += 1
            i += 1
            self._stop.wait(0.02)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()


def seen(fk, name: str = SEEN) -> Seen:
    """What the recording train stage has learned so far (published now to read it)."""
    registry = fk.api.handles()["registry"]
    model = Seen()
    version = fk.publish(name)
    if version:  # 0: nothing learned yet
        model.set_state(ray.get(registry.state.remote(name, version)))
    return model


def answers(client: httpx.Client, url: str, rows: list[dict]) -> bool:
    """Whether a serve stage answers ``rows`` (a stage still deploying may not, yet)."""
    try:
        return client.post(url, json={"rows": rows}, headers=AUTH).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def loop(fk_session, request):
    import ray.cloudpickle

    import fusionkit as fk

    ray.cloudpickle.register_pickle_by_value(request.module)
    fk.stream(STREAM, source=fk.sources.synthetic(STREAM, rate=2_000, seed=5), batch_size=200)
    fk.train(MODEL, on=STREAM, label="clicked", model=ctr_model(), publish_every=None)
    wait_for(lambda: fk.publish(MODEL), timeout=60, what="a first version")
    port = free_port()
    fk.serve(API, model=MODEL, port=port, token=TOKEN, max_body_bytes=MAX_BODY,
             log=SERVED, feedback=FEEDBACK)
    fk.join(EXAMPLES, left=SERVED, right=FEEDBACK, on="request_id", within=WITHIN,
            label="label", default=0, idle="1s")
    fk.train(SEEN, on=EXAMPLES, label="label", model=Seen(), publish_every=None)
    fk.train(LOOP, on=EXAMPLES, label="label", model=ctr_model(), publish_every="1s")
    sample = fk.peek(STREAM, 3)
    rows = sample.drop(columns=[c for c in sample.columns
                                if c.startswith("_") or c == "clicked"]).to_dict("records")
    with httpx.Client(timeout=30.0) as client:
        lp = Loop(f"http://127.0.0.1:{port}/{API}", rows, client)
        wait_for(lambda: answers(client, lp.url, rows), timeout=120,
                 what="the serve stage answering over HTTP")
        # traffic all along: the served stream's event time moves on, so every served
        # row's window closes (an input idle for 1 s stops holding the watermark back)
        with Load(lp, "tick-") as ticks:
            yield lp
        assert ticks.answered
    for name in (LOOP, SEEN, EXAMPLES, API, SERVED, FEEDBACK, MODEL, STREAM):
        fk.stop(name)


def test_served_rows_and_http_feedback_are_joined_and_learned(fk_session, loop):
    import fusionkit as fk

    given = [dict(r, request_id=f"given-{i}") for i, r in enumerate(loop.rows)]
    r = loop.ask(given)
    assert r.status_code == 200
    assert r.json()["request_ids"] == [f"given-{i}" for i in range(len(given))]
    first_version = r.json()["version"]
    r = loop.ask(loop.rows)  # no ids: the replica makes them and returns them
    made = r.json()["request_ids"]
    assert len(made) == len(loop.rows) and len(set(made)) == len(made)
    assert all(isinstance(i, str) and len(i) == 32 for i in made)
    newer = fk.publish(MODEL)  # a version published mid-run: later rows carry it
    wait_for(lambda: loop.ask(loop.rows[:1]).json()["version"] == newer, timeout=30,
             what=f"v{newer} answering")
    later = loop.ask([dict(loop.rows[0], request_id="after-publish")])
    assert later.json()["version"] == newer > first_version

    # feedback over HTTP: one object, a list, {"rows": [...]}, labels 1 and 0
    assert loop.feedback({"request_id": "given-0", "label": 1}).json() == {"accepted": 1}
    assert loop.feedback([{"request_id": made[0], "label": True},
                          {"request_id": "given-1", "label": 0}]).json() == {"accepted": 2}
    assert loop.feedback({"rows": [{"request_id": "after-publish", "label": 1}]}).status_code == 200

    ours = {f"given-{i}" for i in range(len(given))} | set(made) | {"after-publish"}
    learned = wait_for(lambda: (s := seen(fk)) and ours <= set(s.labels) and s, timeout=90,
                       what="every served row joined and learned", interval=1.0)
    for rid in ours:
        assert len(learned.labels[rid]) == 1, rid  # each served row: exactly one example
    expected = {"given-0": 1, made[0]: 1, "given-1": 0, "after-publish": 1}
    for rid in ours:
        assert learned.labels[rid] == [expected.get(rid, 0)], rid  # no feedback: default 0
    assert learned.versions["given-0"] == first_version
    assert learned.versions["after-publish"] == newer
    features = {"device", "country", "hour", "position", "price", "dwell", "age"}
    assert features | {"request_id", "_prediction", "_proba", "_model", "_version",
                       "_replica", "_event_time", "label"} <= learned.columns

    # a real model trained on the served examples publishes versions that advance
    v1 = wait_for(lambda: fk.live_version(LOOP), timeout=60, what="a version of the loop")
    wait_for(lambda: (fk.live_version(LOOP) or 0) > v1, timeout=60, what="a newer version")


def served_scores(model: Seen) -> pd.DataFrame:
    """Accuracy and log loss per (model, version) of what was served, by pandas, from the
    served rows and labels a train stage learned."""
    d = pd.DataFrame([(rid, *model.answers[rid], labels[0])
                      for rid, labels in model.labels.items()],
                     columns=["rid", "model", "version", "prediction", "proba", "label"])
    d["correct"] = d["prediction"] == d["label"]
    p = d["proba"].astype(float).clip(1e-15, 1 - 1e-15)
    d["loss"] = -np.log(np.where(d["label"] == 1, p, 1 - p))
    g = d.groupby(["model", "version"])
    return pd.DataFrame({"n": g.size(), "accuracy": g["correct"].mean(),
                         "log_loss": g["loss"].mean()}).reset_index()


def test_online_metrics_score_what_was_served_per_version(fk_session, loop):
    """fk.online_metrics: per version, the served predictions against their joined labels,
    equal to pandas over the served rows and labels the train stage learned."""
    import fusionkit as fk

    rows = [dict(r, request_id=f"om-{i}") for i, r in enumerate(loop.rows * 20)]
    assert loop.ask(rows).status_code == 200
    assert loop.feedback([{"request_id": f"om-{i}", "label": i % 2}
                          for i in range(0, len(rows), 3)]).status_code == 200
    ours = {f"om-{i}" for i in range(len(rows))}
    # a newer version answers from now on: the versions before it get no more rows, so
    # their scores stop changing once their rows' windows have closed (the ticks go on)
    newer = fk.publish(MODEL)
    wait_for(lambda: loop.ask(loop.rows[:1]).json()["version"] == newer, timeout=30,
             what=f"v{newer} answering")

    def settled(scores: pd.DataFrame) -> pd.DataFrame:
        return scores[scores["version"] < newer].reset_index(drop=True)

    def agree():
        learned = seen(fk)
        if not ours <= set(learned.labels):
            return None  # our rows' windows close 2 s after they were served
        got, want = settled(fk.online_metrics(SEEN)), settled(served_scores(learned))
        if len(got) != len(want) or got["n"].tolist() != want["n"].tolist():
            return None  # the older versions' last rows are still being joined
        return got, want

    got, want = wait_for(agree, timeout=90, what="online metrics covering the learned rows",
                         interval=1.0)
    assert got[["model", "version"]].values.tolist() == want[["model", "version"]].values.tolist()
    np.testing.assert_allclose(got["accuracy"], want["accuracy"])
    np.testing.assert_allclose(got["log_loss"], want["log_loss"])
    assert (got["scored_by"] == SEEN).all() and set(got["model"]) == {MODEL}
    by_api = fk.online_metrics(API)  # the serve stage: its model's rows, from a train stage
    assert set(by_api["model"]) == {MODEL} and by_api["n"].sum() >= len(rows)
    with pytest.raises(fk.StageNotFoundError, match="no stage or model named"):
        fk.online_metrics("nope")


def test_feedback_for_a_request_never_served_is_an_orphan_with_its_reason(fk_session, loop):
    """A replica cannot know every id ever served, so it accepts the feedback; the join
    finds no served row for it and files it as a dead letter with its reason."""
    import fusionkit as fk

    rid = "never-served-7"
    assert loop.feedback({"request_id": rid, "label": 1}).json() == {"accepted": 1}

    def filed():
        letters = fk.dead_letters(EXAMPLES)
        return letters[letters["payload"].astype(str).str.contains(rid)]["reason"].tolist()

    reasons = wait_for(filed, timeout=60, what="the feedback of an unknown id dead-lettered")
    assert len(reasons) == 1 and reasons[0].startswith("orphan: no left event with this key")
    assert rid not in seen(fk).labels  # and nothing was learned from it


BAD_FEEDBACK = [
    ("no request_id", {"json": {"label": 1}}, 400, "no request_id"),
    ("request_id not a string", {"json": {"request_id": 12, "label": 1}}, 400, "request_id must"),
    ("label not a number", {"json": {"request_id": "a", "label": "yes"}}, 400, "label must"),
    ("no label", {"json": [{"request_id": "a", "label": 1}, {"request_id": "b"}]}, 400,
     "feedback row 1: no label"),
    ("not JSON", {"content": b"{nope"}, 400, "not valid JSON"),
    ("no token", {"json": {"request_id": "a", "label": 1}, "headers": {}}, 401, "token"),
    ("too large", {"content": b"[" + b" " * MAX_BODY + b"]"}, 413, "too large"),
]


@pytest.mark.parametrize("case, kwargs, status, message", BAD_FEEDBACK,
                         ids=[b[0] for b in BAD_FEEDBACK])
def test_malformed_feedback_gets_4xx_with_the_reason(loop, case, kwargs, status, message):
    headers = kwargs.pop("headers", AUTH)
    if "content" in kwargs:
        headers = {**headers, "content-type": "application/json"}
    r = loop.client.post(f"{loop.url}/feedback", headers=headers, **kwargs)
    assert r.status_code == status, (case, r.text)
    assert message in r.json()["error"]
    assert loop.client.get(f"{loop.url}/feedback", headers=AUTH).status_code == 405


def test_a_killed_replica_loses_no_answered_row(fk_session, loop):
    import fusionkit as fk

    def replica_pid() -> int:
        return handle(API).info.remote().result(timeout_s=30)["pid"]

    pid = replica_pid()
    with Load(loop, "kill-", size=3) as load:
        wait_for(lambda: len(load.answered) >= 150, timeout=60, what="answers before the kill")
        os.kill(pid, signal.SIGKILL)
        at_kill = len(load.answered)
        wait_for(lambda: len(load.answered) >= at_kill + 150, timeout=120,
                 what="answers from the replica Serve started again")
    assert replica_pid() != pid
    answered = set(load.answered)
    got = wait_for(lambda: (s := seen(fk)) and answered <= set(s.labels) and s, timeout=120,
                   what="every answered row in the log, joined and learned", interval=1.0)
    logged = {rid for rid in got.labels if rid.startswith("kill-")}
    print(f"answered {len(answered)} rows, logged {len(logged)} "
          f"(requests failed during the kill: {load.failed})")
    assert answered <= logged
    assert all(len(got.labels[rid]) == 1 for rid in answered)


@pytest.mark.parametrize("line, message", [
    ("%fusion serve api2 --model sl-ctr --log logs --feedback logs",
     "%fusion serve: --log and --feedback are both 'logs'"),
    ("%fusion serve api2 --model sl-ctr --log sl-ctr", "--log 'sl-ctr' is the name of the"),
    ("%fusion serve api2 --model sl-ctr --feedback ../up", "--feedback takes a stream name"),
    ("%fusion serve api2 --model sl-ctr --logs served", "unknown option --logs; did you mean --log?"),
])
def test_serve_magic_usage_errors(loop, line, message):
    from IPython.core.error import UsageError

    shell = magic_shell()
    with pytest.raises(UsageError) as err:
        shell.run_cell(line).raise_error()
    assert message in str(err.value)


def test_serve_magic_logs_and_takes_feedback(fk_session, loop):
    import fusionkit as fk

    shell = magic_shell()
    port = httpx.URL(loop.url).port
    shell.run_cell(f"%fusion serve sl-api2 --model {MODEL} --port {port} --log sl-served2 "
                   f"--feedback sl-fb2").raise_error()
    try:
        url = f"http://127.0.0.1:{port}/sl-api2"
        wait_for(lambda: answers(loop.client, url, loop.rows), timeout=180,
                 what="the magic's serve stage answering")
        body = loop.client.post(url, json={"rows": [dict(loop.rows[0], request_id="m1")]}).json()
        assert body["request_ids"] == ["m1"]
        r = loop.client.post(f"{url}/feedback", json={"request_id": "m1", "label": 1})
        assert r.json() == {"accepted": 1}
        assert fk.stage("sl-served2").kind == fk.stage("sl-fb2").kind == "stream"
    finally:
        for name in ("sl-api2", "sl-served2", "sl-fb2"):
            fk.stop(name)


def magic_shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_cell("%load_ext fusionkit").raise_error()
    return shell
