"""A batch that fails part-way through a chain leaves every operator's state as before it,
so the same events can be processed again (by a fixed chain) exactly once."""

from __future__ import annotations

import pandas as pd
import pytest

from fusionkit.streaming.chain import Chain
from fusionkit.streaming.keyed import KeyedState
from fusionkit.streaming.operators import Map
from fusionkit.streaming.windows import TumblingWindow


def events(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"k": [i % 3 for i in range(start, start + n)],
                         "v": range(start, start + n),
                         "_event_time": [float(i) for i in range(start, start + n)],
                         "_ingest_ts": 0.0, "_offset": range(start, start + n)})


class Boom(Exception):
    pass


def explode_on(offset: int):
    def fn(df: pd.DataFrame) -> pd.DataFrame:
        if (df["_offset"] == offset).any():
            raise Boom(f"offset {offset}")
        return df
    return fn


def running_sum(key, group, state):
    state["sum"] = state.get("sum", 0) + int(group["v"].sum())
    return group.assign(total=state["sum"])


def chain(fail_at: int | None) -> Chain:
    window = TumblingWindow("10s", agg={"n": ("v", "count"), "s": ("v", "sum"),
                                        "u": ("v", "nunique")}, key="k")
    keyed = KeyedState(running_sum, key="k")
    ops = [keyed, window]
    if fail_at is not None:
        ops.append(Map(explode_on(fail_at)))
    return Chain(ops)


def run(c: Chain, batches) -> list[pd.DataFrame]:
    out = []
    for b in batches:
        out.append(c.process(b))
        c.side_outputs()
    return out


def test_failed_batch_leaves_windows_and_keyed_state_untouched():
    batches = [events(0, 25), events(25, 25), events(50, 25)]
    clean = chain(None)
    expected = run(clean, batches)
    # the failing map comes after the window: the window fired (and dropped) windows and
    # the keyed state summed the batch before the map raised
    failing = chain(fail_at=37)  # a window the second batch fires ends at offset 37
    run(failing, batches[:1])
    before = failing.get_state()
    with pytest.raises(Boom):
        failing.process(batches[1])
    after = failing.get_state()
    assert after[0] == before[0]  # keyed sums
    w0, w1 = before[1], after[1]
    assert (w0["max_time"], w0["seq"], w0["closed"]) == (w1["max_time"], w1["seq"], w1["closed"])
    assert all((w0["partials"][n] == w1["partials"][n]).all() for n in w0["partials"])
    assert w0["values"].equals(w1["values"])
    # a fixed chain taking the state goes on exactly as if nothing had failed
    fixed = chain(None)
    fixed.set_state(after[:2])
    got = run(fixed, batches[1:])
    for a, b in zip(got, expected[1:], strict=True):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


def test_new_keys_of_a_failed_batch_are_forgotten():
    c = Chain([KeyedState(running_sum, key="k"), Map(explode_on(3))])
    c.process(events(0, 2))  # keys 0, 1
    with pytest.raises(Boom):
        c.process(events(2, 2))  # key 2 is new, key 0 changes
    assert c.get_state()[0] == {0: {"sum": 0}, 1: {"sum": 1}}
