"""One feature definition on both paths, on a real local Ray: a train stage learns each
event with its table's values as of just before it, a serve stage answers request rows
with the table's freshest values, and the same raw rows give the same features on both;
bad requests are refused with the field or the error, and the replica goes on."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pandas as pd
import pytest
from conftest import wait_for

from fusionkit.streaming.tables import TableState
from fusionkit.streaming.windows import SlidingWindow

N = 6_000
USERS = 150
AGG = {"views": ("user_id", "count"), "avg_price": ("price", "mean")}
DEFAULTS = {"views": 0, "avg_price": 0.0}


def few_users(df: pd.DataFrame) -> pd.DataFrame:
    """Impressions of ``USERS`` users, so each is seen many times."""
    return df.assign(user_id=df["user_id"] % USERS)


def featurize(df: pd.DataFrame) -> pd.DataFrame:
    """The feature function: the raw price, the table's columns and one made of both."""
    return df.assign(price_vs_usual=df["price"] - df["avg_price"],
                     seen_before=(df["views"] > 0).astype("float64"))


def events_seen(fk, name: str) -> int:
    return int(fk.infos(name)[0]["events_seen"])


def test_a_train_stage_learns_each_event_with_the_table_as_of_just_before_it(fk):
    """Every event learned carries the table's values from just before it (pandas-free
    oracle: the table's own code over the same events, one batch at a time), the model's
    schema holds the columns the features made, and the train stage's copy of the table
    ends equal to the table stage's."""
    src = fk.sources.synthetic("impressions", seed=5, max_events=N, start_time=0.0)
    fk.stream("fi-imps", source=src, fn=few_users, batch_size=500, paused=True)
    fk.table("fi-stats", on="fi-imps", key="user_id",
             window=fk.sliding("0.2s", "0.05s", agg=AGG), defaults=DEFAULTS)
    feats = fk.features(fn=featurize, tables={"fi-stats": "user_id"})
    fk.train("fi-ctr", on="fi-imps", label="clicked", features=feats, model=_model())
    fk.resume("fi-imps")
    wait_for(lambda: events_seen(fk, "fi-ctr") == N, timeout=120, what="every event learned")

    events = few_users(pd.concat(_read_all(fk, 5), ignore_index=True))
    oracle = TableState(SlidingWindow("0.2s", "0.05s", agg=AGG), key="user_id",
                        defaults=DEFAULTS)
    want = pd.concat([oracle.as_of_before(events.iloc[i:i + 700])
                      for i in range(0, N, 700)])  # other batch cuts: the same values
    learned = fk.peek("fi-ctr", 1000)
    assert len(learned) == 1000
    got = learned.set_index("_offset")
    expect = want.set_index(events["_offset"]).loc[got.index]
    assert (got["views"] > 0).mean() > 0.5  # users come back: the table has values to give
    np.testing.assert_array_equal(got["views"].to_numpy(), expect["views"].to_numpy())
    np.testing.assert_allclose(got["avg_price"].to_numpy(), expect["avg_price"].to_numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(got["price_vs_usual"].to_numpy(),
                               (got["price"] - expect["avg_price"]).to_numpy(), rtol=1e-12)
    # the event never counts in its own features: the first sight of a user reads 0 views
    first = ~events.duplicated("user_id")
    firsts = got.index.intersection(events.loc[first, "_offset"])
    assert (got.loc[firsts, "views"] == 0).all()

    table_now = fk.lookup("fi-stats", list(range(USERS)))
    mine = oracle.lookup(list(range(USERS)))
    np.testing.assert_array_equal(table_now["views"].to_numpy(), mine["views"].to_numpy())


def test_a_train_stage_defined_on_a_running_stream_starts_from_a_clean_cut(fk):
    """A train stage with features defined while its stream runs and the table takes
    events: its copy of the table starts from the table at a clean cut of the stream (the
    stream holds between two batches until the train stage is wired), so every event it
    learns carries the table's values as of just before it. A window spanning the whole run
    keeps any batch the copy missed in every later value. The stream does not end: each
    learned row is checked against the source's events up to it."""
    rate = 20_000.0
    window = fk.sliding("60s", "1s", agg=AGG)
    src = fk.sources.synthetic("impressions", seed=12, start_time=0.0, rate=rate)
    fk.stream("fr-imps", source=src, fn=few_users, batch_size=500)
    fk.table("fr-stats", on="fr-imps", key="user_id", window=window, defaults=DEFAULTS)
    wait_for(lambda: int(fk.status().loc["fr-stats", "events"]) >= 12_000, timeout=60,
             what="the table taking events")
    feats = fk.features(fn=featurize, tables={"fr-stats": "user_id"})
    fk.train("fr-ctr", on="fr-imps", label="clicked", features=feats, model=_model())
    wait_for(lambda: events_seen(fk, "fr-ctr") >= 12_000, timeout=120,
             what="the train stage learning events")
    got = fk.peek("fr-ctr", 1000).set_index("_offset")
    assert len(got) == 1000
    upto = int(got.index.max()) + 1
    events = few_users(pd.concat(_read_all(fk, 12, upto, rate), ignore_index=True))
    assert events["_offset"].iloc[-1] == upto - 1
    oracle = TableState(window, key="user_id", defaults=DEFAULTS)  # one reader: its order
    want = oracle.as_of_before(events).set_index(events["_offset"]).loc[got.index]
    assert (want["views"] > 100).all()  # every row's value counts events before the cut too
    np.testing.assert_array_equal(got["views"].to_numpy(), want["views"].to_numpy())
    np.testing.assert_allclose(got["avg_price"].to_numpy(), want["avg_price"].to_numpy(),
                               rtol=1e-12)


def test_a_killed_train_stage_learns_the_same_features_again(fk):
    """SIGKILL the train stage's actor while events flow: its copy of the table comes back
    from the checkpoint with the learner, the stream replays what came after, and every
    event is learned once, with the same features as the table's own code gives."""
    n, rate = 60_000, 10_000.0  # paced over 6 s: the kill lands while events flow
    src = fk.sources.synthetic("impressions", seed=8, max_events=n, start_time=0.0, rate=rate)
    fk.stream("fk-imps", source=src, fn=few_users, batch_size=500, paused=True)
    fk.table("fk-stats", on="fk-imps", key="user_id",
             window=fk.sliding("0.2s", "0.05s", agg=AGG), defaults=DEFAULTS)
    fk.train("fk-ctr", on="fk-imps", label="clicked", model=_model(),
             features=fk.features(fn=featurize, tables={"fk-stats": "user_id"}))
    fk.resume("fk-imps")
    wait_for(lambda: events_seen(fk, "fk-ctr") >= n // 10, timeout=60, what="first events")
    assert fk.checkpoint(timeout=60) is not None
    wait_for(lambda: events_seen(fk, "fk-ctr") >= n // 3, timeout=60, what="more events")
    before = len(fk.recoveries())
    pid = fk.infos("fk-ctr")[0]["pid"]
    assert events_seen(fk, "fk-ctr") < n  # the kill lands mid-stream
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(fk.recoveries()) > before, timeout=120, what="a recovery")
    wait_for(lambda: events_seen(fk, "fk-ctr") == n, timeout=180, what="every event learned")
    assert fk.infos("fk-ctr")[0]["pid"] != pid

    events = few_users(pd.concat(_read_all(fk, 8, n, rate), ignore_index=True))
    oracle = TableState(SlidingWindow("0.2s", "0.05s", agg=AGG), key="user_id",
                        defaults=DEFAULTS)
    want = oracle.as_of_before(events).set_index(events["_offset"])
    got = fk.peek("fk-ctr", 1000).set_index("_offset")
    assert len(got) == 1000 and (got["views"] > 0).mean() > 0.5
    np.testing.assert_array_equal(got["views"].to_numpy(), want.loc[got.index, "views"])
    np.testing.assert_allclose(got["avg_price"].to_numpy(),
                               want.loc[got.index, "avg_price"].to_numpy(), rtol=1e-12)


def _read_all(fk, seed: int, n: int = N, rate: float | None = 5000) -> list[pd.DataFrame]:
    """Every event of the deterministic source (of the synthetic source's default rate,
    which sets the event times), read here."""
    src = fk.sources.synthetic("impressions", seed=seed, max_events=n, start_time=0.0,
                               rate=rate)
    parts = []
    while (b := src.read(5_000)) is not None:
        parts.append(b)
    return parts


def test_features_are_checked_where_they_are_defined(fk):
    src = fk.sources.synthetic("impressions", seed=6, max_events=1_000, start_time=0.0)
    fk.stream("fd-imps", source=src, fn=few_users, paused=True)
    fk.stream("fd-other", source=fk.sources.synthetic("impressions", seed=7, max_events=10),
              paused=True)
    fk.table("fd-stats", on="fd-imps", key="user_id", window=fk.sliding("1s", "0.5s", agg=AGG))
    with pytest.raises(fk.FusionError, match=r"read table 'fd-nope', which is not a table "
                                             r"stage; the tables are \[.*'fd-stats'"):
        fk.train("fd-ctr", on="fd-imps", label="clicked",
                 features=fk.features(tables={"fd-nope": "user_id"}), model=_model())
    with pytest.raises(fk.FusionError, match="table 'fd-stats' is kept from 'fd-imps', not "
                                             "from 'fd-other'"):
        fk.train("fd-ctr", on="fd-other", label="clicked",
                 features=fk.features(tables={"fd-stats": "user_id"}), model=_model())
    with pytest.raises(TypeError, match="fn must be a function"):
        fk.features(fn="views * 2", tables={"fd-stats": "user_id"})
    with pytest.raises(ValueError, match="features need a function, tables to read, or both"):
        fk.features()
    with pytest.raises(TypeError, match="features must be a feature definition"):
        fk.serve("fd-api", model="fd-ctr", features=["views"])
    assert "fd-ctr" not in fk.status().index
    fk.stop()


def _model():
    from fusionkit.demo import ctr_model

    return ctr_model()


def _plain_model():
    """A River model of the numbers it selects (the table's NaN top price is not one)."""
    from river import compose, linear_model, preprocessing

    return (compose.Select("price", "views", "avg_price", "price_vs_usual", "seen_before")
            | preprocessing.StandardScaler() | linear_model.LogisticRegression())


@pytest.mark.redis
def test_the_same_rows_make_the_same_features_on_both_paths(fk, redis_server):
    """Skew: rows posted to the serve stage, then sent as events through the stream, at
    the same table state, get identical features (those served are read from the served
    log; the table is on two actors, the train stage's copy in two parts); a request without the key field, and one the function fails on, are refused with
    the reason while the replica goes on answering."""
    client = redis_server.client()
    rng = np.random.default_rng(3)

    def produce(rows: list[dict]) -> None:
        pipe = client.pipeline()
        for r in rows:
            pipe.xadd("fs-events", {"data": json.dumps(r)})
        pipe.execute()

    first = [{"user_id": int(rng.integers(0, 40)), "price": float(rng.gamma(2.0, 5.0)),
              "clicked": int(rng.random() < 0.3)} for _ in range(2_000)]
    produce(first)
    src = fk.sources.redis(redis_server.url, stream="fs-events")
    fk.stream("fs-imps", source=src, batch_size=250, paused=True)
    fk.table("fs-stats", on="fs-imps", key="user_id", parallelism=2,  # two parts of the keys
             window=fk.sliding("10m", "1m", agg=AGG), defaults=DEFAULTS)
    # a second table, without defaults: an unknown user's top price is NaN on both paths
    fk.table("fs-top", on="fs-imps", key="user_id",
             window=fk.sliding("10m", "1m", agg={"top_price": ("price", "max")}))
    feats = fk.features(fn=featurize, tables={"fs-stats": "user_id", "fs-top": "user_id"})
    fk.train("fs-ctr", on="fs-imps", label="clicked", features=feats, model=_plain_model(),
             publish_every="200ms")
    fk.resume("fs-imps")
    wait_for(lambda: events_seen(fk, "fs-ctr") == len(first), timeout=60,
             what="the first events learned")
    fk.serve("fs-api", model="fs-ctr", features=feats, log="fs-served")
    fk.resume("fs-served")  # read the served log with nothing downstream, to peek at it

    # 30 users the table holds and 2 it does not, one row each, raw fields only
    users = [*rng.choice(40, size=30, replace=False).tolist(), 1000, 1001]
    rows = [{"user_id": int(u), "price": float(rng.gamma(2.0, 5.0)), "request_id": f"r{u}"}
            for u in users]
    answer = fk.predict("fs-api", rows)
    assert len(answer) == len(rows)
    wait_for(lambda: _peek_len(fk, "fs-served") >= len(rows), timeout=30,
             what="the served rows in the log")
    served = fk.peek("fs-served", len(rows)).set_index("request_id")

    # the same rows as events, after the table state the requests read
    produce([{k: v for k, v in r.items() if k != "request_id"} | {"clicked": 0} for r in rows])
    wait_for(lambda: events_seen(fk, "fs-ctr") == len(first) + len(rows), timeout=60,
             what="the same rows learned")
    learned = fk.peek("fs-ctr", len(rows))
    learned.index = [f"r{u}" for u in learned["user_id"]]
    cols = ["views", "avg_price", "price_vs_usual", "seen_before", "price", "top_price"]
    stream_side = learned.loc[served.index, cols].astype("float64")
    serve_side = served[cols].astype("float64")
    np.testing.assert_array_equal(stream_side.to_numpy(), serve_side.to_numpy())
    assert (served.loc[["r1000", "r1001"], "views"] == 0).all()  # unknown: the defaults
    assert served.loc[["r1000", "r1001"], "top_price"].isna().all()  # none given: NaN
    assert (served["views"] > 0).sum() >= 25
    # read from the replica's copy of the table, with no call to its actors
    totals = fk.infos("fs-api")[0]["totals"]
    assert totals["features_copied"] >= len(rows) and totals["features_misses"] >= 2
    assert totals.get("features_read", 0) == 0

    # bad requests: the field named, the function's error given; the replica goes on
    with pytest.raises(fk.PredictionError, match="no field 'user_id'"):
        fk.predict("fs-api", [{"price": 3.0}])
    with pytest.raises(fk.PredictionError, match=r"422|feature function failed"):
        fk.predict("fs-api", [{"user_id": 1, "price": "cheap"}])
    assert len(fk.predict("fs-api", [{"user_id": 2, "price": 4.0}])) == 1


def _peek_len(fk, name: str) -> int:
    got = fk.peek(name, 1000)
    return 0 if got is None else len(got)


def test_table_and_features_magics(fk):
    """``%%fusion table`` defines a table from its cell's aggregations; ``%%fusion train
    --features feats`` takes a feature definition from the notebook; usage errors say what
    to write."""
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    run = shell.run_cell
    assert run("%load_ext fusionkit").success
    src = fk.sources.synthetic("impressions", seed=9, max_events=3_000, start_time=0.0)
    fk.stream("fm-imps", source=src, fn=few_users, batch_size=500, paused=True)
    shell.user_ns.update(fk=fk, featurize=featurize)
    run("%%fusion table fm-stats --on fm-imps --key user_id --window 0.2s --slide 0.05s "
        "--default views=0 --default avg_price=0\n"
        "views = count(user_id)   # how often the user was seen\n"
        "avg_price = mean(price)\n").raise_error()
    spec = fk.stage("fm-stats").spec
    assert spec.window.agg == AGG and spec.defaults == DEFAULTS
    assert (spec.window.size, spec.window.slide) == (0.2, 0.05)
    run("feats = fk.features(fn=featurize, tables={'fm-stats': 'user_id'})").raise_error()
    run("%%fusion train fm-ctr --on fm-imps --label clicked --features feats\n"
        "from fusionkit.demo import ctr_model\n"
        "model = ctr_model()\n").raise_error()
    fk.resume("fm-imps")
    wait_for(lambda: events_seen(fk, "fm-ctr") == 3_000, timeout=60, what="every event")
    learned = fk.peek("fm-ctr", 5)
    assert {"views", "avg_price", "price_vs_usual"} <= set(learned.columns)

    def refused(code: str, match: str) -> None:
        with pytest.raises(UsageError, match=match):
            run(code).raise_error()

    refused("%%fusion table fm-bad --on fm-imps --key user_id --window 1s\nviews = user_id",
            r"cannot read 'views = user_id'; write each aggregation as NAME = FUNCTION")
    refused("%fusion table fm-bad --on fm-imps --key user_id --window 1s",
            "needs its aggregations in the cell body")
    refused("%%fusion table fm-bad --on fm-imps --key user_id --window 1s --default n:0\n"
            "views = count(user_id)", r"--default 'n:0' should be NAME=VALUE with NAME one "
                                       r"of the aggregations \['views'\]")
    refused("%fusion serve fm-api --model fm-ctr --features nothing",
            "'nothing' is not a feature definition")
