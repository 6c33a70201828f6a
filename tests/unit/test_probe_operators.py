"""Which operators the definition-time probe runs on its sample (the sample is read again)."""

from __future__ import annotations

import pandas as pd

from fusionkit.streaming.base import Operator
from fusionkit.streaming.keyed import KeyedState
from fusionkit.streaming.operators import Filter, KeyBy, Map
from fusionkit.streaming.windows import SlidingWindow, TumblingWindow
from fusionkit.streaming.worker import probe_operators


class Write(Operator):
    """A user-defined operator that writes what it sees somewhere."""

    def __init__(self):
        self.seen = []

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.seen.append(len(batch))
        return batch


class Store(Write):
    sink = True


def test_the_probe_runs_fusionkit_transforms_and_leaves_sinks_out():
    window = TumblingWindow("1s", agg={"n": ("x", "count")})
    ops = [Map(lambda d: d), Filter("x > 0"), KeyBy("x"), Store(), window,
           KeyedState(lambda k, g, s: g, key="x"), SlidingWindow("2s", "1s", {"n": ("x", "count")})]
    run, whole = probe_operators(ops)
    assert whole
    assert run == [op for op in ops if not isinstance(op, Store)]


def test_the_probe_stops_at_an_operator_it_does_not_know():
    first, write, last = Map(lambda d: d), Write(), Filter("x > 0")
    run, whole = probe_operators([first, write, last])
    assert run == [first] and not whole
    assert probe_operators([write]) == ([], False)
    assert probe_operators([]) == ([], True)
