"""Feature definitions without Ray: the training path's values are the table's as of just
before each event, whatever the batches; its copies of the tables survive a checkpoint;
the serving path reads each key once per staleness, and refuses bad rows with the field
or the function's error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fusionkit.runtime.specs import TableSpec
from fusionkit.streaming.features import Enricher, FeatureError, Features, RowFeatures, TableCopy
from fusionkit.streaming.tables import TableState
from fusionkit.streaming.windows import SlidingWindow

AGG = {"views": ("user_id", "count"), "avg_price": ("price", "mean")}


def spec(name: str = "stats", agg: dict | None = None) -> TableSpec:
    window = SlidingWindow("10s", "2s", agg=agg or AGG)
    return TableSpec(name=name, on="imps", window=window, key="user_id",
                     defaults={"views": 0})


def events(n: int, users: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user_id": rng.integers(0, users, n),
                         "price": rng.gamma(2.0, 5.0, n).round(2),
                         "_event_time": np.sort(rng.uniform(0, 60, n))})


def double_views(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(views2=df["views"] * 2)


def test_the_training_path_gives_each_event_the_table_as_of_just_before_it():
    feats = Features.define(double_views, {"stats": "user_id"}).resolved([spec()])
    ev = events(3_000)
    enrich = Enricher(feats)
    got = pd.concat([enrich(ev.iloc[i:i + 256]) for i in range(0, len(ev), 256)])
    table = TableState(spec().window, key="user_id", defaults={"views": 0})
    want = pd.concat([table.as_of_before(ev.iloc[i:i + 1000]) for i in range(0, len(ev), 1000)])
    np.testing.assert_array_equal(got["views"].to_numpy(), want["views"].to_numpy())
    np.testing.assert_allclose(got["avg_price"].to_numpy(), want["avg_price"].to_numpy(),
                               rtol=1e-12)
    assert (got["views2"] == 2 * got["views"]).all()
    assert "as_of" not in got.columns and "miss" not in got.columns  # aggregations only
    assert got["views"].iloc[0] == 0  # the first event sees an empty table: the default
    # a table keyed by another name than the row's column: the row's column is read
    renamed = Features.define(None, {"stats": "uid"}).resolved([spec()])
    other = Enricher(renamed)(ev.rename(columns={"user_id": "uid"}).iloc[:500])
    np.testing.assert_array_equal(other["views"].to_numpy(), got["views"].iloc[:500].to_numpy())


def test_the_training_paths_tables_survive_a_checkpoint():
    feats = Features.define(None, {"stats": "user_id"}).resolved([spec()])
    ev = events(2_000, seed=1)
    whole = Enricher(feats)(ev)
    first = Enricher(feats)
    first(ev.iloc[:1200])
    again = Enricher(feats)
    again.set_state(first.get_state())
    rest = again(ev.iloc[1200:])
    np.testing.assert_array_equal(rest["views"].to_numpy(), whole["views"].iloc[1200:].to_numpy())
    again.set_state(None)  # back to empty tables
    assert again(ev.iloc[:1])["views"].iloc[0] == 0


class Table:
    """A real table answering the serving path's reads, counting them."""

    def __init__(self, ev: pd.DataFrame):
        self.state = TableState(spec().window, key="user_id", defaults={"views": 0})
        self.state.update(ev)
        self.calls: list[list] = []

    def read(self, name: str, keys: list) -> pd.DataFrame:
        assert name == "stats"
        self.calls.append(list(keys))
        return self.state.lookup(keys)


def test_the_serving_path_reads_each_key_once_within_its_staleness():
    ev = events(2_000, seed=2)
    table, clock = Table(ev), [100.0]
    feats = Features.define(double_views, {"stats": "user_id"}).resolved([spec()])
    rows = RowFeatures(feats, table.read, staleness=0.05, clock=lambda: clock[0])
    out = rows([{"user_id": 3, "price": 1.0}, {"user_id": 5, "price": 2.0},
                {"user_id": 3, "price": 4.0}, {"user_id": 999, "price": 1.0}])
    assert table.calls == [[3, 5, 999]]  # one read for the request, each key once
    want = table.state.lookup([3, 5, 3, 999])
    assert [r["views"] for r in out] == want["views"].tolist()
    assert [r["views2"] for r in out] == [2 * v for v in want["views"].tolist()]
    assert out[3]["views"] == 0 and out[3]["avg_price"] is None  # a miss: defaults, NaN
    clock[0] += 0.02
    rows([{"user_id": 5, "price": 1.0}, {"user_id": 7, "price": 1.0}])
    assert table.calls[1:] == [[7]]  # 5 is fresh enough: from the replica's cache
    clock[0] += 0.04  # 5 was read 60 ms ago: read again
    rows([{"user_id": 5, "price": 1.0}])
    assert table.calls[2:] == [[5]]
    assert (rows.reads, rows.cached) == (5, 2)


def test_the_serving_path_refuses_bad_rows_with_the_reason():
    table = Table(events(500, seed=3))
    feats = Features.define(double_views, {"stats": "user_id"}).resolved([spec()])
    rows = RowFeatures(feats, table.read, staleness=0.0)
    with pytest.raises(FeatureError, match="no field 'user_id', which the features read "
                                           "table 'stats' by") as err:
        rows([{"price": 1.0}])
    assert err.value.status == 400
    with pytest.raises(FeatureError, match="row 1: no field 'user_id'"):
        rows([{"user_id": 1, "price": 1.0}, {"price": 2.0}])

    def needs_age(df):
        return df.assign(old=df["age"] > 40)

    asks = RowFeatures(Features.define(needs_age, {"stats": "user_id"}).resolved([spec()]),
                       table.read, staleness=0.0)
    with pytest.raises(FeatureError, match="needs the field 'age'") as err:
        asks([{"user_id": 1}])
    assert err.value.status == 400

    def fails(df):
        raise ValueError("prices must be positive")

    broken = RowFeatures(Features.define(fails, {}), table.read)
    with pytest.raises(FeatureError, match="feature function failed on these rows: "
                                           "ValueError: prices must be positive") as err:
        broken([{"user_id": 1}])
    assert err.value.status == 422
    wrong = RowFeatures(Features.define(lambda df: df.to_dict(), {}), table.read)
    with pytest.raises(FeatureError, match="must return a DataFrame, got dict"):
        wrong([{"user_id": 1}])


def test_a_request_id_stays_with_its_row_when_the_function_drops_it():
    table = Table(events(500, seed=4))
    feats = Features.define(lambda df: df[["views"]], {"stats": "user_id"}).resolved([spec()])
    out = RowFeatures(feats, table.read)([{"user_id": 1, "request_id": "a"},
                                           {"user_id": 2, "request_id": "b"}])
    assert [r["request_id"] for r in out] == ["a", "b"]
    assert set(out[0]) == {"views", "request_id"}


def test_definitions_are_checked():
    with pytest.raises(TypeError, match="maps a table's name to the column of its key"):
        Features.define(None, {"stats": 3})
    with pytest.raises(ValueError, match="tables 'stats' and 'more' both add a column 'views'"):
        Features.define(None, {"stats": "user_id", "more": "ad_id"}).resolved(
            [spec(), spec("more", {"views": ("ad_id", "count")})])


def test_the_serving_path_reads_a_live_copy_of_the_table_and_falls_back_to_reads():
    """A replica's copy of a table, kept up to date with what changed in it, answers
    without a read; a copy whose actor has not answered for ``live`` seconds is not read:
    the table is."""
    ev = events(3_000, seed=6)
    table, clock = Table(ev.iloc[:2_000]), [50.0]
    copy = TableCopy(spec(), clock=lambda: clock[0])
    assert not copy.live(2.0)  # nothing yet
    held = table.state.keys()
    copy.apply(table.state.token, table.state.version, table.state.values(held), [], True)
    version = table.state.version
    table.state.update(ev.iloc[2_000:])  # more events: a batch the copy has not seen
    changed, dropped = table.state.changes_since(version)
    copy.apply(table.state.token, table.state.version, table.state.values(changed), dropped,
               False)
    feats = Features.define(double_views, {"stats": "user_id"}).resolved([spec()])
    rows = RowFeatures(feats, table.read, staleness=0.05, clock=lambda: clock[0],
                       copies={"stats": [copy]}, live=2.0)
    asked = [{"user_id": u, "price": 1.0} for u in [*range(20), 999]]
    out = rows(asked)
    assert table.calls == []  # every key from the copy
    want = table.state.values([r["user_id"] for r in asked])
    assert [r["views"] for r in out] == want["views"].tolist()
    assert out[-1]["views"] == 0 and out[-1]["avg_price"] is None  # not held: the defaults
    assert rows.counts() == {"copied": 21, "misses": 1, "read": 0, "cached": 0}
    # a key sent as text ("3", as JSON may carry it) is the stream's 3, from the copy too
    as_text = rows([{"user_id": str(r["user_id"]), "price": 1.0} for r in asked])
    assert [r["views"] for r in as_text] == [r["views"] for r in out]
    assert rows.counts()["misses"] == 2
    clock[0] += 2.5  # the actor has not answered since: read the table instead
    again = rows(asked[:3])
    assert table.calls == [[0, 1, 2]]
    assert [r["views"] for r in again] == [r["views"] for r in out[:3]]


def test_a_table_on_two_actors_gives_the_same_features_whatever_the_batch_index():
    """The training path's copy of a table on two actors (two parts) gives what one table
    gives, for a batch whose index repeats labels (a feature function may concat)."""
    two = TableSpec(name="stats", on="imps", window=SlidingWindow("10s", "2s", agg=AGG),
                    key="user_id", defaults={"views": 0}, parallelism=2)
    ev = events(1_500, seed=7)
    ev.index = np.arange(len(ev)) % 100  # labels repeat
    got = Enricher(Features.define(None, {"stats": "user_id"}).resolved([two]))(ev)
    want = Enricher(Features.define(None, {"stats": "user_id"}).resolved([spec()]))(ev)
    np.testing.assert_array_equal(got["views"].to_numpy(), want["views"].to_numpy())
    np.testing.assert_allclose(got["avg_price"].to_numpy(), want["avg_price"].to_numpy(),
                               rtol=1e-12)
    assert got.index.equals(ev.index)
