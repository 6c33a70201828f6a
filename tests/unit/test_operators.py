"""Map, Filter, KeyBy, partition, KeyedState and Chain."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fusionkit.streaming
from fusionkit.streaming.base import Operator
from fusionkit.streaming.chain import Chain
from fusionkit.streaming.keyed import KeyedState
from fusionkit.streaming.operators import KEY, Filter, KeyBy, Map, key_hash, partition
from fusionkit.streaming.windows import TumblingWindow

RESERVED = ["_event_time", "_ingest_ts", "_offset"]
PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(fusionkit.streaming.__file__)))


def events(n: int = 6, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "user": [["ann", "bob", "cy"][i % 3] for i in range(start, start + n)],
        "price": np.arange(start, start + n, dtype="float64"),
        "_event_time": np.arange(start, start + n, dtype="float64"),
        "_ingest_ts": 100.0 + np.arange(start, start + n),
        "_offset": np.arange(start, start + n, dtype="int64"),
    })


# -- Map ----------------------------------------------------------------------------------

def test_map_puts_back_reserved_columns_the_function_dropped():
    df = events().iloc[2:]  # an index that does not start at 0
    out = Map(lambda d: pd.DataFrame({"double": d["price"] * 2})).process(df)
    assert out["double"].tolist() == [4.0, 6.0, 8.0, 10.0]
    pd.testing.assert_frame_equal(out[RESERVED], df[RESERVED])


def test_map_puts_back_reserved_columns_by_label_after_reordering_or_filtering():
    df = events()
    out = Map(lambda d: d[["price"]].iloc[::-1].iloc[:4]).process(df)
    assert out["_offset"].tolist() == [5, 4, 3, 2]
    assert (out["price"].to_numpy() == out["_offset"].to_numpy()).all()


def test_map_with_fresh_index_and_same_length_is_aligned_by_position():
    df = events().iloc[3:]
    out = Map(lambda d: pd.DataFrame({"p": d["price"].to_numpy()})).process(df)
    assert out["_offset"].tolist() == [3, 4, 5]


def test_map_keeps_what_the_function_returns_with_reserved_columns():
    out = Map(lambda d: d.assign(x=1)).process(events())
    assert list(out.columns) == ["user", "price", *RESERVED, "x"]


def test_map_returning_none_names_the_function():
    def features(df):
        df["x"] = 1

    with pytest.raises(TypeError, match=r"features\(\) returned None"):
        Map(features).process(events())
    with pytest.raises(TypeError, match="returned a list"):
        Map(lambda d: [1]).process(events())


def test_map_that_loses_rows_and_reserved_columns_is_an_error():
    with pytest.raises(ValueError, match="cannot be put back"):
        Map(lambda d: d[["price"]].head(2).set_axis([10, 11])).process(events())


def test_map_series_result_becomes_a_frame():
    out = Map(lambda d: d["price"].rename("p")).process(events(3))
    assert list(out.columns) == ["p", *RESERVED]


# -- Filter -------------------------------------------------------------------------------

def test_filter_with_function_string_and_missing_values():
    df = events()
    assert Filter(lambda d: d["price"] > 3).process(df)["_offset"].tolist() == [4, 5]
    assert Filter("user == 'bob'").process(df)["price"].tolist() == [1.0, 4.0]
    nullable = pd.array([True, None, False, True, None, True], dtype="boolean")
    assert Filter(lambda d: nullable).process(df)["_offset"].tolist() == [0, 3, 5]
    assert Filter(lambda d: (d["price"] % 2 == 0).to_numpy()).process(df)["price"].tolist() \
        == [0.0, 2.0, 4.0]
    boxed = pd.Series([True, None, False, True, False, False], dtype=object)
    assert Filter(lambda d: boxed).process(df)["_offset"].tolist() == [0, 3]


def test_filter_rejects_non_boolean_or_misshaped_masks():
    with pytest.raises(TypeError, match="one boolean per event"):
        Filter(lambda d: d["price"]).process(events())
    with pytest.raises(TypeError, match="one boolean per event"):
        Filter(lambda d: np.array([True])).process(events())


# -- KeyBy and partition ------------------------------------------------------------------

def test_key_by_column_or_function():
    df = events()
    assert KeyBy("user").process(df)[KEY].tolist() == df["user"].tolist()
    keyed = KeyBy(lambda d: d["user"].str.upper()).process(df.iloc[3:])
    assert keyed[KEY].tolist() == ["ANN", "BOB", "CY"]
    assert "_key" not in df.columns  # the input batch is left alone


def test_key_by_missing_column_suggests_a_name():
    with pytest.raises(KeyError, match="did you mean 'user'"):
        KeyBy("usr").process(events())
    with pytest.raises(ValueError, match="one key per event"):
        KeyBy(lambda d: [1, 2]).process(events())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b", "c", "d"])),
                min_size=0, max_size=60), st.integers(1, 5))
def test_partition_groups_keys_and_keeps_order(keys, n):
    df = pd.DataFrame({KEY: pd.Series(keys, dtype=object), "seq": np.arange(len(keys))})
    parts = partition(df, n)
    assert len(parts) == n
    assert sum(len(p) for p in parts) == len(df)
    for p in parts:
        assert p["seq"].is_monotonic_increasing
    owner = {}
    for i, p in enumerate(parts):
        for k in p[KEY]:
            assert owner.setdefault((type(k), k), i) == i  # one part per key


def test_partition_is_the_same_in_every_process():
    keys = ["user-1", "user-2", "bob", "ann", "zoë", "", "x" * 40]
    df = pd.DataFrame({KEY: keys})
    mine = [p[KEY].tolist() for p in partition(df, 3)]
    # a bare package object skips fusionkit/__init__ (and its Ray import): only pandas loads
    code = ("import json, sys, types; import pandas as pd\n"
            f"pkg = types.ModuleType('fusionkit'); pkg.__path__ = [{PACKAGE!r}]\n"
            "sys.modules['fusionkit'] = pkg\n"
            "from fusionkit.streaming.operators import partition\n"
            f"df = pd.DataFrame({{'_key': {keys!r}}})\n"
            "print(json.dumps([[p['_key'].tolist() for p in partition(df, 3)],"
            " hash('user-1')]))")
    hashes = set()
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        parts, python_hash = json.loads(out.stdout)
        assert parts == mine
        hashes.add(python_hash)
    assert len(hashes) == 2  # Python's own hash did differ between the two processes


def test_key_hash_is_pinned_and_independent_of_the_container():
    # pandas' hash is fixed: a changed value would move keys between actors
    assert key_hash(["a"]).tolist() == [13950350942979735504]
    assert key_hash(pd.Series(["a", "b"], dtype="category")).tolist() == \
        key_hash(np.array(["a", "b"], dtype=object)).tolist()
    assert key_hash([1, 2]).tolist() == key_hash(pd.Series([1, 2])).tolist()


def test_partition_edge_cases():
    df = pd.DataFrame({"v": [1, 2]})
    assert partition(df, 1)[0] is df
    with pytest.raises(KeyError, match="key_by"):
        partition(df, 2)
    with pytest.raises(ValueError):
        partition(df, 0)


# -- KeyedState ---------------------------------------------------------------------------

def running_totals(user, group, state):
    total = state.get("sum", 0.0) + group["price"].cumsum()
    state["sum"] = float(total.iloc[-1])
    state["n"] = state.get("n", 0) + len(group)
    return group.assign(total=total)


def test_keyed_state_carries_state_across_batches_in_first_appearance_order():
    op = KeyedState(running_totals, key="user")
    out = op.process(events(6))
    assert out["user"].tolist() == ["ann", "ann", "bob", "bob", "cy", "cy"]
    assert out["total"].tolist() == [0.0, 3.0, 1.0, 5.0, 2.0, 7.0]
    out = op.process(events(3, start=7))  # bob, cy, ann
    assert out["user"].tolist() == ["bob", "cy", "ann"]
    assert out["total"].tolist() == [12.0, 15.0, 12.0]
    assert op.get_state()["ann"] == {"sum": 12.0, "n": 3}


def test_keyed_state_round_trip_and_snapshot_isolation():
    op = KeyedState(running_totals, key="user")
    op.process(events(6))
    snap = pickle.loads(pickle.dumps(op.get_state()))
    op.process(events(6, start=6))
    restored = KeyedState(running_totals, key="user")
    restored.set_state(snap)
    fresh = KeyedState(running_totals, key="user")
    fresh.process(events(6))
    pd.testing.assert_frame_equal(restored.process(events(3, start=6)),
                                  fresh.process(events(3, start=6)))
    assert snap["ann"] == {"sum": 3.0, "n": 2}  # later batches did not touch the snapshot


def test_keyed_state_uses_key_column_and_custom_initial_state():
    seen = []

    def count(key, group, state):
        state.append(len(group))
        seen.append(key)

    op = KeyedState(count, initial=list)
    out = op.process(KeyBy("user").process(events(4)))
    assert len(out) == 0 and seen == ["ann", "bob", "cy"]
    assert op.get_state() == {"ann": [2], "bob": [1], "cy": [1]}
    with pytest.raises(KeyError, match="_key"):
        KeyedState(count).process(events())
    with pytest.raises(TypeError, match="must return a DataFrame or None"):
        KeyedState(lambda k, g, s: 1, key="user").process(events())


# -- Chain --------------------------------------------------------------------------------

class Hold(Operator):
    """Holds everything until flush; routes negative prices aside."""

    def __init__(self):
        self.held = []
        self.aside = []

    def process(self, batch):
        self.aside.append(batch[batch["price"] < 0])
        self.held.append(batch[batch["price"] >= 0])
        return batch.iloc[0:0]

    def flush(self):
        return pd.concat(self.held) if self.held else None

    def side_outputs(self):
        out, self.aside = pd.concat(self.aside), []
        return {"late": out}

    def get_state(self):
        return len(self.held)

    def set_state(self, state):
        self.held = [events(0)] * state


def test_chain_runs_in_order_flushes_through_the_rest_and_merges_side_outputs():
    df = events().assign(price=[-1.0, 1, 2, 3, 4, 5])
    window = TumblingWindow(100, {"n": ("price", "count")}, key="user")
    chain = Chain([Map(lambda d: d.assign(price=d["price"] * 10)), Hold(),
                   Filter("price > 15"), window])
    assert len(chain.process(df)) == 0
    sides = chain.side_outputs()
    assert sides["late"]["price"].tolist() == [-10.0]
    tail = chain.flush()  # Hold's events go through Filter and the window, then it flushes
    assert tail[["user", "n"]].values.tolist() == [["ann", 1], ["bob", 1], ["cy", 2]]
    state = chain.get_state()
    assert len(state) == 4 and state[0] is None and state[1] == 1
    other = Chain([Map(lambda d: d), Hold(), Filter("price > 15"),
                   TumblingWindow(100, {"n": ("price", "count")}, key="user")])
    other.set_state(state)
    assert other.operators[1].get_state() == 1
    with pytest.raises(ValueError, match="another chain"):
        Chain([Hold()]).set_state(state)


def test_chain_flush_with_nothing_held_is_none():
    assert Chain([Map(lambda d: d)]).flush() is None
    assert Chain([]).process(events(2)).equals(events(2))
