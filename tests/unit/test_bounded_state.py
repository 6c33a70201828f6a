"""Bounded memory: window key tables, keyed state with a ttl, dead letters, the registry's
unserved versions and the monitor's latencies stay bounded however long a stage runs."""

from __future__ import annotations

import math
import pickle
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionkit.monitor.monitor import Monitor
from fusionkit.monitor.series import LatencyHistogram
from fusionkit.registry.actor import RegistryActor
from fusionkit.registry.store import RETAIN
from fusionkit.runtime.dead_letters import OVERHEAD, DeadLetters
from fusionkit.streaming import windows
from fusionkit.streaming.chain import Chain
from fusionkit.streaming.keyed import KeyedState
from fusionkit.streaming.operators import Map
from fusionkit.streaming.windows import SlidingWindow, TumblingWindow

AGG = {"n": ("v", "count"), "total": ("v", "sum"), "kinds": ("v", "nunique")}


# -- windows: the table of keys ------------------------------------------------------------
def cut_into(df: pd.DataFrame, cuts: list[int]):
    """``df`` as the batches of sizes ``cuts`` (then the rest), up to the first empty one."""
    at = 0
    for cut in [*cuts, len(df)]:
        part = df.iloc[at:at + cut]
        at += cut
        if len(part) == 0:
            return
        yield part


def distinct_keys(batches: int, per_batch: int, step: float = 1.0):
    """Batches of ``per_batch`` keys never seen before, each batch ``step`` seconds later."""
    for b in range(batches):
        keys = np.arange(b * per_batch, (b + 1) * per_batch)
        yield pd.DataFrame({"user": keys.astype(str), "v": keys % 7,
                            "_event_time": b * step + np.linspace(0, step * 0.9, per_batch),
                            "_ingest_ts": 0.0, "_offset": keys})


def test_window_key_table_stays_flat_as_200k_distinct_keys_pass():
    w = TumblingWindow("1s", agg=AGG, key="user")
    held, out = [], 0
    for batch in distinct_keys(200, 1000):
        out += len(w.process(batch))
        held.append(w.held_keys)
    assert out == 199_000, "every key's window fired once the watermark passed it"
    # at most 2 x the keys of open windows (1,000 here) plus a batch's new keys
    assert max(held) <= 2 * 1000 + 1000 + windows.COMPACT_MIN, max(held)
    assert len(w.get_state()["keys"]) <= 3000 + windows.COMPACT_MIN


stream_events = st.lists(
    st.tuples(st.integers(0, 30), st.floats(0, 40, allow_nan=False), st.integers(-3, 3)),
    min_size=1, max_size=120)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream_events, st.lists(st.integers(1, 30), min_size=1, max_size=10),
       st.sampled_from([(4.0, 4.0), (6.0, 2.0), (2.0, 3.0)]))
def test_pruning_the_key_table_changes_no_window_result(events, cuts, shape):
    """A window that prunes its key table as often as it can gives exactly the output of
    one that never does, batch by batch, whatever the keys, times and batch cuts."""
    size, slide = shape
    df = pd.DataFrame({"user": [f"k{k}" for k, _, _ in events], "_event_time": [t for _, t, _ in events],
                       "v": [v for _, _, v in events], "_ingest_ts": 0.0,
                       "_offset": np.arange(len(events))})
    with mock.patch.object(windows, "COMPACT_MIN", 1):
        pruned = SlidingWindow(size, slide, agg=AGG, key="user", allowed_lateness=1.0)
        pruned._compact_at = 1
        kept = SlidingWindow(size, slide, agg=AGG, key="user", allowed_lateness=1.0)
        kept._compact_at = math.inf
        for part in cut_into(df, cuts):
            limit = pruned._compact_at  # twice the keys left by the last pruning
            pd.testing.assert_frame_equal(pruned.process(part), kept.process(part))
            open_keys = len(np.unique(pruned._state[windows.KC])) if pruned._state else 0
            assert pruned.held_keys <= limit + part["user"].nunique()
            if pruned._compact_at != limit:  # pruned after this batch: open windows' keys only
                assert pruned.held_keys == open_keys
        a, b = pruned.flush(), kept.flush()
        assert (a is None) == (b is None)
        if a is not None:
            pd.testing.assert_frame_equal(a, b)


# -- keyed state with a ttl ----------------------------------------------------------------
def running_count(key, events, state):
    count = state.get("n", 0) + np.arange(1, len(events) + 1)
    state["n"] = int(count[-1])
    return events.assign(n=count)


class Oracle:
    """KeyedState(ttl) event by event: an event's key expired if the stream time before it
    is more than ttl past the key's last event; at each batch's end expired keys go."""

    def __init__(self, ttl: float):
        self.ttl, self.clock, self.seen, self.count = ttl, -math.inf, {}, {}

    def batch(self, keys, times) -> list[int]:
        out = []
        for k, t in zip(keys, times, strict=True):
            before = self.clock
            eff = t if math.isfinite(t) else before
            if k in self.seen and before - self.ttl > self.seen[k]:
                del self.seen[k], self.count[k]
            self.count[k] = self.count.get(k, 0) + 1
            out.append(self.count[k])
            self.seen[k] = max(self.seen.get(k, -math.inf), eff)
            if math.isfinite(t):
                self.clock = max(self.clock, t)
        for k in [k for k, s in self.seen.items() if s < self.clock - self.ttl]:
            del self.seen[k], self.count[k]
        return out


keyed_events = st.lists(
    st.tuples(st.integers(0, 8), st.one_of(st.floats(0, 60, allow_nan=False),
                                           st.just(math.nan))),
    min_size=1, max_size=80)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keyed_events, st.lists(st.integers(1, 40), min_size=1, max_size=8),
       st.sampled_from([0.5, 3.0, 10.0]), st.booleans())
def test_ttl_drops_exactly_the_keys_quiet_for_longer_than_it(events, cuts, ttl, checkpoint):
    """Per event, the count equals an event-by-event oracle's (a key starts afresh right
    where it expired, wherever the batches are cut); after each batch the keys held are
    exactly the oracle's; a checkpoint taken and restored between batches changes nothing."""
    df = pd.DataFrame({"user": [k for k, _ in events], "_event_time": [t for _, t in events],
                       "_offset": np.arange(len(events))})
    op, oracle = KeyedState(running_count, key="user", ttl=ttl), Oracle(ttl)
    for part in cut_into(df, cuts):
        got = op.process(part).sort_values("_offset")["n"].tolist()
        assert got == oracle.batch(part["user"].tolist(), part["_event_time"].tolist())
        assert set(op.states) == set(oracle.seen)
        assert op.held_keys == len(oracle.seen)
        if checkpoint:
            state = pickle.loads(pickle.dumps(op.get_state()))
            op = KeyedState(running_count, key="user", ttl=ttl)
            op.set_state(state)


def count_only(key, events, state):
    state["n"] = state.get("n", 0) + len(events)


def test_keyed_state_with_a_ttl_stays_flat_as_40k_distinct_keys_pass():
    op = KeyedState(count_only, key="user", ttl="5s")
    held = []
    for batch in distinct_keys(40, 1000):  # a user function call per key: ~0.15 ms each
        op.process(batch)
        held.append(op.held_keys)
    # keys seen in the last 5 s of event time: 6 batches of 1,000 at most
    assert max(held) <= 6000, max(held)
    assert op.evicted == 40_000 - held[-1]


def test_keys_within_the_ttl_keep_their_state():
    op = KeyedState(running_count, key="user", ttl=100.0)
    plain = KeyedState(running_count, key="user")
    for batch in distinct_keys(50, 100, step=1.0):  # 50 s in all: nothing expires
        batch = pd.concat([batch, batch.assign(user="steady")])
        pd.testing.assert_frame_equal(op.process(batch), plain.process(batch))
    assert op.evicted == 0 and op.states == plain.states


def test_a_failed_batch_leaves_the_ttl_state_as_before():
    """The chain takes a failing batch back: states, last seen times and the stream time."""
    def boom(df):
        if (df["_event_time"] > 100).any():
            raise ValueError("boom")
        return df

    chain = Chain([KeyedState(running_count, key="user", ttl=5.0), Map(boom)])
    chain.process(pd.DataFrame({"user": ["a", "b"], "_event_time": [0.0, 1.0]}))
    before = pickle.dumps(chain.get_state())
    with pytest.raises(ValueError, match="boom"):  # would expire a and b, and add c
        chain.process(pd.DataFrame({"user": ["c", "a"], "_event_time": [200.0, 201.0]}))
    assert pickle.dumps(chain.get_state()) == before
    assert chain.operators[0].evicted == 0
    out = chain.process(pd.DataFrame({"user": ["a"], "_event_time": [3.0]}))
    assert out["n"].tolist() == [2]


def test_ttl_needs_event_time_and_a_positive_duration():
    with pytest.raises(KeyError, match="_event_time"):
        KeyedState(running_count, key="user", ttl=1.0).process(pd.DataFrame({"user": ["a"]}))
    with pytest.raises(ValueError, match="positive"):
        KeyedState(running_count, key="user", ttl=0)


def test_a_checkpoint_taken_without_a_ttl_restores_into_one():
    old = KeyedState(running_count, key="user")
    old.process(pd.DataFrame({"user": ["a"], "_event_time": [0.0]}))
    op = KeyedState(running_count, key="user", ttl=10.0)
    op.set_state(old.get_state())
    op.process(pd.DataFrame({"user": ["a", "b"], "_event_time": [50.0, 55.0]}))
    assert op.states["a"] == {"n": 2}, "restored keys count their time from the restore on"
    op.process(pd.DataFrame({"user": ["b"], "_event_time": [70.0]}))
    assert set(op.states) == {"b"}


# -- dead letters --------------------------------------------------------------------------
def test_dead_letters_are_capped_in_bytes_newest_kept_and_dropped_counted():
    d = DeadLetters("s", max_bytes=100_000, preview_bytes=1000)
    for i in range(10_000):
        d.add_raw(f'{{"i": {i}, "broken', "invalid JSON", offset=i)
    assert d.count == 10_000 and d.bytes <= 100_000
    assert d.dropped == 10_000 - len(d) > 0
    offsets = [x["offset"] for x in d.items()]
    assert offsets == list(range(10_000 - len(d), 10_000)), "the newest are kept, in order"


def test_a_huge_payload_is_kept_as_a_preview_with_its_size():
    d = DeadLetters("s", max_bytes=50_000, preview_bytes=1000)
    d.add_raw(b"[" * 5_000_000, "RecursionError while decoding", offset=3)
    d.add(pd.DataFrame({"text": ["x" * 200_000], "_offset": [4]}), "too long")
    raw, row = d.items()
    assert raw["truncated"] and raw["size"] == 5_000_000 and len(raw["payload"]) <= 1000
    assert raw["payload"].startswith("b'[[[")
    assert row["truncated"] and row["size"] >= 200_000 and len(row["payload"]) <= 1000
    assert d.bytes <= 2 * (OVERHEAD + 1000 + 100)
    small = DeadLetters("s")
    small.add(pd.DataFrame({"x": [1], "y": ["a"], "_offset": [9]}), "wrong type")
    assert small.items()[0]["payload"] == {"x": 1, "y": "a"}
    assert not small.items()[0]["truncated"]


def test_dead_letters_round_trip_through_a_checkpoint():
    d = DeadLetters("s", max_bytes=100_000)
    for i in range(100):
        d.add_raw(f"bad {i}", "invalid JSON", offset=i)
    state = pickle.loads(pickle.dumps(d.get_state()))
    d.add_raw("after", "invalid JSON", offset=100)  # not in the snapshot
    back = DeadLetters("s", max_bytes=100_000)
    back.set_state(state)
    assert back.items() == d.items()[:-1] and back.count == 100
    assert back.dropped == d.dropped and back.bytes == sum(c for _, c in back._items)
    back.set_state(None)
    assert back.items() == [] and back.count == 0


# -- the registry's unserved versions ------------------------------------------------------
def test_unserved_versions_are_bounded_when_nothing_serves():
    actor = RegistryActor(None, None)
    actor.register("m", keep=2)
    meta = dict(events_seen=10, new_events=10, newest_ingest_ts=1.0, oldest_new_ingest_ts=0.0,
                metrics={})
    n = RETAIN + 1500
    for _ in range(n):
        actor.publish("m", b"x", dict(meta), ingest_sample=np.zeros(3))
    assert len(actor._unserved["m"]) <= RETAIN
    actor.served("m", n, 5.0)
    assert len(actor._unserved["m"]) == 0


# -- the monitor's latencies ---------------------------------------------------------------
def test_monitor_keeps_latencies_bounded_in_bytes_and_quantiles_close():
    rng = np.random.default_rng(0)
    m = Monitor(maxlen=300)
    lat = rng.lognormal(np.log(0.003), 0.5, size=(600, 4096))
    for i in range(600):
        m.report([{"time": 1000.0 + i, "stage": "s", "kind": "serve", "actor": 0,
                   "interval": 0.5, "requests": 4096, "latency": lat[i]}])
    rows = m._series.rows("s")
    held = sum(r["latency"].nbytes for r in rows)
    assert len(rows) == 300
    assert held <= 300 * 6 * LatencyHistogram.NBINS, held
    assert held <= 300 * 1000, "a few dozen bins in use per report, not 4,096 floats"
    df = m.metrics("s")
    exact = np.quantile(lat[300:], [0.5, 0.99], axis=1).T * 1000
    assert np.allclose(df[["p50_ms", "p99_ms"]].to_numpy(), exact, rtol=0.03)


def test_event_details_are_cut():
    m = Monitor()
    m.event({"kind": "failed", "stage": "s", "detail": "x" * 1_000_000})
    assert len(m.events()[0]["detail"]) <= 2001
