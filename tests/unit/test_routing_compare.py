"""Canary routing (stable hash, shares, stickiness) and the comparison's statistics, without
Ray: the sums of ``Comparison`` against pandas over the same rows, the paired and Welch
intervals against their textbook formulas, and the verdict's wording."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fusionkit.errors import FusionError
from fusionkit.serving.routing import Routing, bucket
from fusionkit.training.comparison import Comparison, compare_frame, paired, verdict, welch


def test_canary_share_is_within_two_points_over_10k_keys_and_sticky():
    routing = Routing("ctr", canary=(("tree", 0.1),), sticky="user_id")
    users = [f"user-{i}" for i in range(10_000)]
    picks = [routing.pick({"user_id": u}) for u in users]
    share = picks.count("tree") / len(picks)
    assert abs(share - 0.1) <= 0.02
    assert all(routing.pick({"user_id": u, "x": 3}) == p for u, p in zip(users, picks, strict=True))


def test_raising_the_share_moves_users_only_to_the_canary():
    low = Routing("ctr", canary=(("tree", 0.1),), sticky="user_id")
    high = low.with_share({"tree": 0.3})
    for i in range(2000):
        row = {"user_id": i}
        if low.pick(row) == "tree":
            assert high.pick(row) == "tree"
    assert sum(high.pick({"user_id": i}) == "tree" for i in range(10_000)) / 10_000 == \
        pytest.approx(0.3, abs=0.02)


def test_bucket_is_stable_across_processes():
    # a fixed value: Python's salted hash() would change from run to run
    assert bucket("user-1") == int.from_bytes(
        __import__("hashlib").blake2b(b"user-1", digest_size=8).digest(), "big") / 2**64


@pytest.mark.parametrize("kwargs, message", [
    ({"canary": (("tree", 1.5),)}, "share must be a fraction"),
    ({"canary": (("a", 0.6), ("b", 0.6))}, "add up to 1.2"),
    ({"shadow": ("ctr",)}, "cannot be a shadow and also answer"),
    ({"canary": (("ctr", 0.1),)}, "named twice"),
])
def test_routing_refuses_what_cannot_be_meant(kwargs, message):
    with pytest.raises(FusionError, match=message):
        Routing("ctr", **kwargs)


def test_promote_needs_a_canary_or_shadow():
    r = Routing("ctr", shadow=("tree",))
    assert r.promoted("tree") == Routing("tree")
    with pytest.raises(FusionError, match="not a canary or shadow"):
        r.promoted("other")


def _served(seed: int, n: int = 400) -> pd.DataFrame:
    """Served rows of a primary and a shadow answering the same requests, with labels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    frames = []
    for model, role, noise in (("ctr", "primary", 0.35), ("tree", "shadow", 0.25)):
        p = np.clip(y * 0.6 + 0.2 + rng.normal(0, noise, n), 0.01, 0.99)
        frames.append(pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], "label": y,
                                    "_model": model, "_role": role, "_proba": p,
                                    "_prediction": (p > 0.5).astype(int)}))
    return pd.concat(frames, ignore_index=True).sample(frac=1, random_state=seed)


def test_comparison_equals_pandas_over_the_same_rows():
    rows = _served(1)
    c = Comparison("label", positive=1)
    for start in range(0, len(rows), 117):  # in batches: shadow rows before or after primaries
        chunk = rows.iloc[start:start + 117]
        c.add(chunk)
    frame = compare_frame(c.models, c.pairs, "ctr", {"ctr": "primary", "tree": "shadow"})
    rows = rows.assign(correct=(rows["_prediction"] == rows["label"]).astype(int),
                       loss=-np.log(np.where(rows["label"] == 1, rows["_proba"],
                                             1 - rows["_proba"])))
    by = rows.groupby("_model")
    expect = frame.set_index("model")
    assert expect.loc["tree", "requests"] == by.size()["tree"]
    assert expect.loc["ctr", "accuracy"] == pytest.approx(by["correct"].mean()["ctr"])
    assert expect.loc["tree", "log_loss"] == pytest.approx(by["loss"].mean()["tree"])
    wide = rows.pivot(index="request_id", columns="_model", values="loss")
    d = wide["tree"] - wide["ctr"]
    se = d.std(ddof=1) / math.sqrt(len(d))
    assert expect.loc["tree", "interval"] == "paired"
    assert expect.loc["tree", "n_compared"] == len(d)
    assert expect.loc["tree", "log_loss_diff"] == pytest.approx(d.mean())
    assert expect.loc["tree", "log_loss_low"] == pytest.approx(d.mean() - 1.959963984540054 * se)
    assert "tree is better than ctr" in expect.loc["tree", "verdict"]
    assert f"{len(d)} paired requests" in expect.loc["tree", "verdict"]


def test_welch_interval_is_the_textbook_one():
    a, b = np.array([0.2, 0.5, 0.4, 0.9, 0.3]), np.array([0.1, 0.2, 0.3, 0.2])
    diff, low, high = welch((len(a), a.sum(), (a * a).sum()), (len(b), b.sum(), (b * b).sum()))
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    assert diff == pytest.approx(a.mean() - b.mean())
    assert (low, high) == pytest.approx((diff - 1.959963984540054 * se,
                                         diff + 1.959963984540054 * se))
    mean, low, high = paired(3, 0.0, 0.0)
    assert (mean, low, high) == (0.0, 0.0, 0.0)


def test_verdict_says_not_enough_data_until_the_interval_excludes_zero():
    assert verdict("t", "c", "log loss", -0.1, -0.2, 0.01, 500, "paired").startswith(
        "not enough data")
    assert verdict("t", "c", "log loss", -0.1, -0.2, -0.01, 10, "paired").startswith(
        "not enough data")  # below the minimum sample, whatever the interval
    worse = verdict("t", "c", "log loss", 0.1, 0.05, 0.2, 500, "welch")
    assert worse.startswith("t is worse than c") and "500 requests" in worse


def _canary_rows(seed: int, worse: float, n: int = 1500) -> pd.DataFrame:
    """A primary and a canary answering different requests of the same kind; the canary's
    probabilities pushed ``worse`` towards the wrong side."""
    rng = np.random.default_rng(seed)
    frames = []
    for model, role, shift in (("ctr", "primary", 0.0), ("tree", "canary", worse)):
        y = rng.integers(0, 2, n)
        p = np.clip(0.5 + (y - 0.5) * (0.5 - shift) + rng.normal(0, 0.15, n), 0.02, 0.98)
        frames.append(pd.DataFrame({"request_id": [f"{model}{i}" for i in range(n)],
                                    "label": y, "_model": model, "_role": role, "_proba": p,
                                    "_prediction": (p > 0.5).astype(int)}))
    return pd.concat(frames, ignore_index=True)


def _rolls_back(rows: pd.DataFrame) -> bool:
    from fusionkit.training.comparison import rollback_due

    c = Comparison("label", positive=1)
    c.add(rows)
    frame = compare_frame(c.models, c.pairs, "ctr", {"ctr": "primary", "tree": "canary"})
    row = frame.set_index("model").loc["tree"]
    assert row["interval"] == "welch"
    return rollback_due({**row.to_dict(), "model": "tree"})


def test_rollback_policy_fires_on_a_worse_canary_and_rarely_on_an_equal_one():
    false = sum(_rolls_back(_canary_rows(seed, worse=0.0)) for seed in range(20))
    assert false <= 1
    assert all(_rolls_back(_canary_rows(seed, worse=0.15)) for seed in range(20))


def test_a_canary_that_was_a_shadow_is_judged_on_its_rows_not_on_its_old_pairs():
    from fusionkit.training.comparison import rollback_due

    n = 100
    y = [i % 2 for i in range(n)]
    same = dict(label=y, _proba=[0.8 if v else 0.2 for v in y], _prediction=y)
    c = Comparison("label", positive=1)
    c.add(pd.concat([  # first a shadow: the same answers as the primary, paired
        pd.DataFrame({"request_id": [f"s{i}" for i in range(n)], "_model": "p",
                      "_role": "primary", **same}),
        pd.DataFrame({"request_id": [f"s{i}" for i in range(n)], "_model": "s",
                      "_role": "shadow", **same})], ignore_index=True))
    m = 500  # then a canary, sure of the wrong answer on its own rows
    c.add(pd.DataFrame({"request_id": [f"c{i}" for i in range(m)], "_model": "s",
                        "_role": "canary", "label": 0, "_proba": 0.99, "_prediction": 1}))
    c.add(pd.DataFrame({"request_id": [f"q{i}" for i in range(m)], "_model": "p",
                        "_role": "primary", "label": 0, "_proba": 0.2, "_prediction": 0}))
    row = compare_frame(c.models, c.pairs, "p", {"p": "primary", "s": "canary"})
    row = row.set_index("model").loc["s"]
    assert row["interval"] == "welch" and row["n_compared"] == n + m
    assert row["log_loss_low"] > 0 and rollback_due(row.to_dict())
    # the same model as a shadow is compared on the requests both answered
    shadow = compare_frame(c.models, c.pairs, "p", {"p": "primary", "s": "shadow"})
    assert shadow.set_index("model").loc["s", "interval"] == "paired"


class _Replica:
    """The replica's side a shadow pool needs."""

    def __init__(self):
        import threading

        from fusionkit.runtime.stage import Reporter

        self._stop = threading.Event()
        self.reporter = Reporter(None, "api", "serve", "0")


def _blocked_pool(size):
    """A shadow pool whose worker answers every request once ``go`` is set; ``calls``: the
    batches it was sent."""
    import threading

    from fusionkit.serving.shadow import ShadowPool

    class Blocked(ShadowPool):
        go = threading.Event()
        calls: list = []

        def call(self, batch):
            self.go.wait(30)
            self.calls.append(batch)
            return {"tree": [len(batch), 0, 0]}

    return Blocked(_Replica(), size=size)


def test_a_shadow_that_falls_behind_drops_and_counts_never_queues_without_bound():
    from conftest import wait_for

    pool = _blocked_pool(size=4)
    for i in range(100):
        pool.offer(("tree",), [{"x": i}], [f"r{i}"], 0.0)
    # one being sent (maybe), four waiting: the rest dropped, counted
    assert len(pool._queue) <= 4
    assert pool.dropped["tree"] >= 95
    assert pool.server.reporter.totals["shadow_dropped"] == pool.dropped["tree"]
    pool.go.set()
    wait_for(lambda: pool.answered.get("tree", 0) + pool.dropped["tree"] == 100, timeout=10,
             what="the queued requests answered")
    # what waited went in at most two calls: one in flight, the rest together after it
    assert len(pool.calls) <= 2
    assert pool.server.reporter.totals["shadow_answered"] == pool.answered["tree"]
    pool.server._stop.set()


def test_a_call_to_the_shadow_worker_carries_at_most_batch_rows_rows():
    from fusionkit.serving.shadow import BATCH_ROWS, ShadowPool

    pool = ShadowPool(_Replica())
    request = [{"x": 1}] * (BATCH_ROWS // 3 + 1)  # three of them are more than a call's rows
    for i in range(4):
        pool._queue.append((("tree",), request, [f"r{i}"], 0.0))
    assert [len(pool._take()) for _ in range(3)] == [2, 2, 0]
    big = {"x": [1] * (BATCH_ROWS + 1)}  # alone over the limit: still sent, by itself
    pool._queue.extend([(("tree",), big, ["a"], 0.0), (("tree",), request, ["b"], 0.0)])
    assert [len(pool._take()) for _ in range(3)] == [1, 1, 0]


def test_a_full_call_waiting_goes_at_once_not_after_the_linger(monkeypatch):
    """The sender waits ``LINGER`` between calls only while less than a full call waits: a
    backlog goes to the worker call after call (with a linger of an hour here, waiting
    after each call would leave all but the first two calls unsent)."""
    from conftest import wait_for

    import fusionkit.serving.shadow as shadow

    monkeypatch.setattr(shadow, "LINGER", 3600.0)
    pool = _blocked_pool(size=16)
    half = [{"x": 1}] * (shadow.BATCH_ROWS // 2)  # two of them fill a call
    pool.offer(("tree",), half, ["first"] * len(half), 0.0)
    wait_for(lambda: not pool._queue, timeout=10, what="the first request taken")
    for i in range(8):  # four full calls wait behind the one in flight
        pool.offer(("tree",), half, [f"r{i}"] * len(half), 0.0)
    pool.go.set()
    wait_for(lambda: pool.answered.get("tree", 0) == 9, timeout=30,
             what="every waiting request sent")
    assert [len(batch) for batch in pool.calls] == [1, 2, 2, 2, 2]
    assert pool._queued_rows == 0
    pool.server._stop.set()
