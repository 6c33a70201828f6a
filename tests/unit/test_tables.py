"""The state of a table (online features) against a plain pandas computation of the same
windows over the same events, for any batch cuts and events out of order; misses and
defaults; expiry keeps the keys held bounded; snapshots restore exactly. No Ray."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionkit.streaming.tables import TableState, part_of
from fusionkit.streaming.windows import SlidingWindow

AGG = {"n": ("v", "count"), "total": ("v", "sum"), "avg": ("v", "mean"), "lo": ("v", "min"),
       "hi": ("v", "max"), "sd": ("v", "std"), "var": ("v", "var"), "first": ("v", "first"),
       "last": ("v", "last"), "rows": ("v", "size"), "clicks": ("c", "sum")}
OUT = list(AGG)
MISSED = {name: np.nan for name in OUT} | {"as_of": np.nan, "miss": True}


def _aggregate(rows: pd.DataFrame) -> dict:
    """``AGG`` over ``rows`` by pandas (first and last: the first and last value present)."""
    def one(col: str, fn: str):
        s = rows[col]
        if fn in ("first", "last"):
            s = s.dropna()
            return np.nan if s.empty else s.iloc[0 if fn == "first" else -1]
        return s.agg(fn)
    return {out: one(col, fn) for out, (col, fn) in AGG.items()}


def _reference(events: pd.DataFrame, size: float, slide: float, lateness: float,
               ttl: float | None) -> tuple[pd.DataFrame, dict]:
    """Replay ``events`` one by one, as the docs of ``fusionkit.streaming.tables`` say: the
    values of each event's key just before it (rows of the events in its key's window, by
    pandas), and the table's newest time and events per key at the end."""
    def window_start(newest: float) -> float:  # the oldest sliding window holding ``newest``
        return (math.floor((newest - size) / slide) + 1) * slide

    def values(k) -> dict:
        if k not in newest or (ttl is not None and newest[k] < clock - ttl):
            return MISSED
        rows = events.loc[kept[k]]
        rows = rows[np.floor(rows["_event_time"] / slide) * slide >= window_start(newest[k])]
        return _aggregate(rows) | {"as_of": newest[k], "miss": False}

    clock, newest, kept, before = -np.inf, {}, {}, []
    for i, row in events.iterrows():
        k, t = row["k"], row["_event_time"]
        before.append(values(k))
        if not np.isfinite(t):
            continue
        watermark = clock - lateness
        if math.floor(t / slide) * slide + size > watermark:  # some window still open
            if k not in newest or (ttl is not None and newest[k] < clock - ttl):
                kept[k], newest[k] = [], -np.inf  # new, or expired: starts afresh
            kept[k].append(i)
            newest[k] = max(newest[k], t)
        clock = max(clock, t)
    end = {k: values(k) for k in sorted(newest, key=str)}
    return pd.DataFrame(before, index=events.index), end


def _same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    for col in [*OUT, "as_of"]:
        np.testing.assert_allclose(got[col].to_numpy("float64"), want[col].to_numpy("float64"),
                                   rtol=1e-9, atol=1e-9, err_msg=col)
    assert got["miss"].tolist() == want["miss"].tolist()


@st.composite
def streams(draw):
    """Events of a few keys on a half-second grid (ties and slide edges), in any order,
    some without a value or an event time; cut into batches anywhere."""
    n = draw(st.integers(1, 30))
    times = draw(st.lists(st.integers(0, 80).map(lambda x: x / 2), min_size=n, max_size=n))
    if draw(st.booleans()):  # mostly in order, each event at most a few seconds back
        times = sorted(times)
        times = [x - draw(st.sampled_from([0, 0, 0.5, 2, 6])) for x in times]
    times = [draw(st.sampled_from([x] * 9 + [np.nan])) for x in times]
    values = draw(st.lists(st.sampled_from([1.0, 2.0, 5.0, -3.0, 0.5, np.nan]),
                           min_size=n, max_size=n))
    events = pd.DataFrame({"k": draw(st.lists(st.sampled_from(["a", "b", 7]), min_size=n,
                                              max_size=n)),
                           "v": values, "c": draw(st.lists(st.integers(0, 1), min_size=n,
                                                           max_size=n)),
                           "_event_time": times}, index=np.arange(100, 100 + n))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=5)))
    size, slide = draw(st.sampled_from([(4.0, 1.0), (5.0, 2.0), (3.0, 3.0), (4.5, 1.5),
                                        (5.0, 1.5)]))
    lateness = draw(st.sampled_from([0.0, 2.0, 100.0]))
    ttl = draw(st.sampled_from([None, 3.0, 10.0]))
    return events, cuts, size, slide, lateness, ttl


def _table(size, slide, lateness, ttl, merge_often: bool = False, **kw) -> TableState:
    """A table of ``AGG``; ``merge_often``: its recent rows merged into the kept ones at
    every batch (by default, a small table never merges them)."""
    table = TableState(SlidingWindow(size, slide, agg=AGG, allowed_lateness=lateness),
                       key="k", ttl=ttl, **kw)
    if merge_often:
        table.recent_min = 0
    return table


def _batches(events: pd.DataFrame, cuts: list[int]) -> list[pd.DataFrame]:
    edges = [0, *cuts, len(events)]
    return [events.iloc[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.booleans())
def test_values_equal_pandas_for_any_cuts_and_order(case, merge_often) -> None:
    """Each event's values as of just before it, and every key's values at the end, are the
    pandas aggregates of the events in the key's window: for any batch cuts, events out of
    order within the lateness or beyond it, expiry, events without a time or a value; with
    the recent rows merged into the kept ones at every batch, or never."""
    events, cuts, size, slide, lateness, ttl = case
    want_before, want_end = _reference(events, size, slide, lateness, ttl)
    table = _table(size, slide, lateness, ttl, merge_often)
    got = pd.concat([table.as_of_before(b) for b in _batches(events, cuts)])
    assert got.index.tolist() == events.index.tolist()
    _same(got, want_before)
    keys = [*want_end, "never"]
    end = table.lookup(keys)
    want = pd.DataFrame([*want_end.values(), MISSED])
    assert end["k"].tolist() == keys
    _same(end, want)
    assert table.held_keys == int((~want["miss"]).sum())
    finite = events["_event_time"].notna()
    assert table.invalid_count == int((~finite).sum())


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(), st.sampled_from([2, 3]), st.booleans())
def test_a_table_on_n_actors_holds_what_one_would(case, count, merge_often) -> None:
    """Each of N parts takes every batch and keeps its keys (a stable hash): its values,
    as of before each event of its keys and at the end, are exactly one table's, with the
    same stream time; the keys, lookups and counts of the parts add up to one table's."""
    events, cuts, size, slide, lateness, ttl = case
    one = _table(size, slide, lateness, ttl)
    parts = [_table(size, slide, lateness, ttl, merge_often, share=(i, count))
             for i in range(count)]
    whole = []
    for b in _batches(events, cuts):
        whole.append(one.as_of_before(b))
        got = pd.concat([p.as_of_before(b) for p in parts]).reindex(b.index)
        _same(got, whole[-1])
        assert {p.clock for p in parts} == {one.clock}
    owner = part_of(events["k"], count)
    keys = [*dict.fromkeys(events["k"].tolist()), "never"]
    for i, p in enumerate(parts):
        mine = [k for k in keys if part_of([k], count)[0] == i]
        _same(p.lookup(mine), one.lookup(mine))
    assert sum(p.held_keys for p in parts) == one.held_keys
    assert sum(p.late_count for p in parts) == one.late_count
    assert sum(p.invalid_count for p in parts) == one.invalid_count
    assert set(owner.tolist()) <= set(range(count))


@settings(max_examples=80, deadline=None)
@given(streams())
def test_update_then_lookup_is_as_of_before_of_the_next_event(case) -> None:
    """``update`` keeps the same state as ``as_of_before``; a lookup reads what an event of
    the key arriving next would see (the same raw row, the same features)."""
    events, cuts, size, slide, lateness, ttl = case
    a, b = _table(size, slide, lateness, ttl), _table(size, slide, lateness, ttl)
    for batch in _batches(events, cuts):
        a.update(batch)
        b.as_of_before(batch)
    assert a.get_state()["keys"] == b.get_state()["keys"]
    for k in ["a", "b", 7]:
        probe = pd.DataFrame({"k": [k], "v": [1.0], "c": [0], "_event_time": [np.nan]})
        _same(a.lookup([k]).reset_index(drop=True), b.as_of_before(probe).reset_index(drop=True))


@settings(max_examples=60, deadline=None)
@given(streams())
def test_the_value_is_the_sliding_windows_open_row(case) -> None:
    """Without expiry, a key's value is the row ``fk.sliding`` emits for the oldest window
    holding the key's newest event, with the same lateness, while that window is open: one
    definition. (Once it has closed, the sliding window leaves out of it the events that
    came after it closed; the table keeps the key's value, with them, until its ttl.)"""
    events, cuts, size, slide, lateness, _ = case
    table = _table(size, slide, lateness, None)
    window = SlidingWindow(size, slide, agg=AGG, key="k", allowed_lateness=lateness)
    rows = []
    for batch in _batches(events, cuts):
        table.update(batch)
        rows.append(window.process(batch.assign(_ingest_ts=0.0, _offset=0)))
    rows.append(window.flush())
    fired = [r for r in rows if r is not None and len(r)]
    assert table.late_count == window.late_count
    if not fired:  # no window fired (every event without a time, say): nothing to compare
        assert table.held_keys == 0
        return
    fired = pd.concat(fired)
    keys = sorted(set(fired["k"]), key=str)
    got = table.lookup(keys)
    start = (np.floor((got["as_of"] - size) / slide) + 1) * slide
    still_open = (start + size > table.clock - lateness).to_numpy()
    got, start, keys = got[still_open], start[still_open], list(np.array(keys, object)[still_open])
    want = pd.DataFrame({"k": keys, "window_start": start}).merge(
        fired, on=["k", "window_start"], how="left")
    _same(got.reset_index(drop=True), want.assign(as_of=got["as_of"].to_numpy(), miss=False))


def test_an_event_never_sees_itself() -> None:
    table = _table(10.0, 1.0, 0.0, None)
    batch = pd.DataFrame({"k": ["a", "a", "b", "a"], "v": [1.0, 2.0, 3.0, 4.0], "c": 1,
                          "_event_time": [5.0, 5.0, 5.0, 6.0]})
    got = table.as_of_before(batch)
    assert got["n"].fillna(0).tolist() == [0, 1, 0, 2]
    assert got["miss"].tolist() == [True, False, True, False]
    assert table.lookup(["a"])["n"].tolist() == [3]


def test_unknown_keys_give_defaults_and_count_misses() -> None:
    table = _table(60.0, 10.0, 0.0, None, defaults={"n": 0, "avg": -1.0})
    table.update(pd.DataFrame({"k": ["a"], "v": [2.0], "c": 1, "_event_time": [1.0]}))
    got = table.lookup(["zz", "a", None])
    assert got["k"].tolist()[:2] == ["zz", "a"] and pd.isna(got["k"].iloc[2])
    assert got["n"].tolist() == [0, 1, 0]
    assert got["avg"].tolist() == [-1.0, 2.0, -1.0]
    assert got["total"].isna().tolist() == [True, False, True]  # no default: NaN
    assert got["miss"].tolist() == [True, False, True]
    assert got["as_of"].isna().tolist() == [True, False, True]
    assert (table.lookups, table.misses) == (3, 2)
    assert table.lookup([]).empty and table.misses == 2


def test_a_whole_number_key_is_found_in_either_spelling() -> None:
    """A request may carry as text (``"17"``) a key the stream had as a number (``17``), or
    the other way round: the table reads the key in its other spelling, kept by the same
    part; a key that is no whole number is a miss even with a missing (None) key held."""
    nums = _table(60.0, 10.0, 0.0, None, defaults={"n": 0})
    nums.update(pd.DataFrame({"k": [17, 17, None], "v": 1.0, "c": 1, "_event_time": 1.0}))
    got = nums.lookup(["17", 17, 17.0, "-17", "abc", " 17"])
    assert got["n"].tolist() == [2, 2, 2, 0, 0, 0]
    assert got["miss"].tolist() == [False, False, False, True, True, True]
    assert got["k"].tolist()[:2] == ["17", 17]  # the key as asked
    text = _table(60.0, 10.0, 0.0, None, defaults={"n": 0})
    text.update(pd.DataFrame({"k": ["17", "-3"], "v": 1.0, "c": 1, "_event_time": 1.0}))
    assert text.lookup([17, np.int64(-3), "17", 4])["n"].tolist() == [1, 1, 1, 0]
    assert (part_of(["17"], 8) == part_of([17], 8)).all()  # one part for both spellings


def test_a_missing_key_is_one_key_and_types_may_change_between_batches() -> None:
    """None and NaN keys are one key (pandas gives either); a column of integers that gets
    a float later is summed as floats, not cut back to integers."""
    table = _table(60.0, 10.0, 0.0, None)
    table.update(pd.DataFrame({"k": [None, "a"], "v": 1.0, "c": [2, 3], "_event_time": 1.0}))
    table.update(pd.DataFrame({"k": [np.nan, "b"], "v": 1.0, "c": [0.5, 1.5],
                               "_event_time": 2.0}))
    table.update(pd.DataFrame({"k": ["b"], "v": 1.0, "c": [1], "_event_time": 3.0}))
    assert table.held_keys == 3
    got = table.lookup([None, np.nan, "a", "b"])
    assert got["clicks"].tolist() == [2.5, 2.5, 3.0, 2.5]
    assert got["n"].tolist() == [2, 2, 1, 2]


def test_expiry_keeps_the_keys_held_bounded() -> None:
    """200k distinct keys, one event each, a second of event time per 1000: with a ttl of
    10 s the table holds the last ~11k keys, never more, and its arrays stay that size;
    without a ttl it would hold them all."""
    table = _table(5.0, 1.0, 0.0, 10.0)
    held, slots = [], []
    for b in range(200):
        keys = np.arange(b * 1000, (b + 1) * 1000)
        table.update(pd.DataFrame({"k": keys, "v": 1.0, "c": 1, "_event_time": float(b)}))
        held.append(table.held_keys)
        slots.append(len(table._newest) + table.held_rows)
    assert max(held) == 11_000 and held[-1] == 11_000
    assert max(slots) <= 4 * 11_000
    assert table.evicted == 200_000 - 11_000
    assert table.lookup([0, 199_999])["miss"].tolist() == [True, False]


def test_an_expired_key_starts_afresh() -> None:
    table = _table(100.0, 10.0, 0.0, 5.0)
    table.update(pd.DataFrame({"k": ["a", "a"], "v": [1.0, 2.0], "c": 1,
                               "_event_time": [0.0, 1.0]}))
    got = table.as_of_before(pd.DataFrame({"k": ["b", "a", "a"], "v": [0.0, 7.0, 8.0], "c": 1,
                                           "_event_time": [20.0, 21.0, 22.0]}))
    assert got["miss"].tolist() == [True, True, False]  # a expired when b moved time to 20
    assert got["n"].tolist()[2] == 1
    assert table.lookup(["a"])[["n", "total"]].values.tolist() == [[2, 15.0]]


def test_snapshot_restores_exactly() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    events = pd.DataFrame({"k": rng.integers(0, 300, n), "v": rng.normal(size=n),
                           "c": rng.integers(0, 2, n),
                           "_event_time": np.arange(n) / 10 - rng.exponential(1.0, n)
                           - np.where(rng.random(n) < 0.02, 40.0, 0.0)})  # some late
    a = _table(30.0, 5.0, 2.0, 20.0)
    for batch in _batches(events.iloc[:2000], [1, 300, 301, 900, 1500]):
        a.update(batch)
    b = _table(30.0, 5.0, 2.0, 20.0)
    b.set_state(pickle.loads(pickle.dumps(a.get_state())))
    keys = list(range(-1, 301))
    pd.testing.assert_frame_equal(a.lookup(keys), b.lookup(keys))
    for batch in _batches(events.iloc[2000:], [400, 1000, 1001, 1700]):
        pd.testing.assert_frame_equal(a.as_of_before(batch), b.as_of_before(batch))
    pd.testing.assert_frame_equal(a.lookup(keys), b.lookup(keys))
    assert a.get_state()["counters"] == b.get_state()["counters"]
    assert a.late_count > 0 and a.evicted > 0 and a.misses > 0  # the run went through all


def test_a_hot_key_is_cut_into_parts_with_the_same_result() -> None:
    """1000 events of one key in a batch: the pairs within a key are bounded by cutting the
    batch, and the values equal those of one event per batch."""
    events = pd.DataFrame({"k": "hot", "v": np.arange(1000.0), "c": 1,
                           "_event_time": np.arange(1000) / 100})
    whole = _table(2.0, 0.5, 0.0, None).as_of_before(events)
    one = _table(2.0, 0.5, 0.0, None)
    single = pd.concat([one.as_of_before(events.iloc[[i]]) for i in range(len(events))])
    pd.testing.assert_frame_equal(whole, single)
    kept = one.get_state()["rows"]["_kc"]
    assert len(kept) == 4  # slides 8.0 to 9.5: what is left of the window is dropped
    assert whole["n"].iloc[-1] == 199  # the window [8.0, 10.0) up to 9.98, itself left out


@pytest.mark.parametrize(("agg", "message"), [
    ({"m": ("v", "median")}, "'median', which a table cannot keep"),
    ({"m": ("v", "avg")}, "'avg', which a table cannot keep"),
    ({"m": ("v", np.mean)}, "which a table cannot keep"),
    ({"m": "v"}, "must be a (column, function) pair"),
    ({}, "at least one aggregation"),
    ({"miss": ("v", "count")}, "clashes with an output column"),
])
def test_bad_aggregations_are_refused_in_a_sentence(agg, message) -> None:
    with pytest.raises(ValueError) as err:
        TableState(SlidingWindow("5m", "10s", agg=agg), key="k")
    assert message in str(err.value)


def test_bad_definitions_are_refused_in_a_sentence() -> None:
    w = SlidingWindow("5m", "10s", agg={"n": ("v", "count")})
    with pytest.raises(ValueError, match="defaults name \\['views'\\]"):
        TableState(w, key="k", defaults={"views": 0})
    with pytest.raises(ValueError, match="needs a key column"):
        TableState(w)
    with pytest.raises(ValueError, match="slide by at most its size"):
        TableState(SlidingWindow("10s", "1m", agg={"n": ("v", "count")}), key="k")
    with pytest.raises(ValueError, match="ttl must be positive"):
        TableState(w, key="k", ttl=0)
    with pytest.raises(TypeError, match="defined by a window"):
        TableState({"n": ("v", "count")}, key="k")
    with pytest.raises(KeyError, match="key column 'k'"):
        TableState(w, key="k").update(pd.DataFrame({"v": [1], "_event_time": [1.0]}))


def test_changes_since_a_version_bring_a_copy_up_to_date() -> None:
    """A copy of the values that applies what changed since its version (the keys taken,
    the keys dropped by the ttl) equals the table's values; too far back, or a state put
    back from a snapshot, asks for every value afresh."""
    rng = np.random.default_rng(5)
    table = _table(4.0, 1.0, 0.0, 3.0, defaults=None)
    copy, version = {}, table.version
    for i in range(40):
        t = np.sort(rng.uniform(i, i + 1, 25))
        table.update(pd.DataFrame({"k": rng.integers(0, 30, 25), "v": rng.normal(size=25),
                                   "c": 1, "_event_time": t}))
        if i % 3:
            continue
        held, gone = table.changes_since(version)
        for k, row in zip(held, table.values(held).to_dict("records"), strict=True):
            copy[k] = row
        for k in gone:
            copy.pop(k, None)
        version = table.version
        assert sorted(copy) == sorted(table._slot)
        _same(pd.DataFrame([copy[k] for k in copy]), table.values(list(copy)))
    assert table.evicted > 0  # the ttl dropped keys, and the copy followed
    assert table.changes_since(version) == ([], [])
    assert table.changes_since(version + 1) is None  # ahead of the table: not of this state
    again = _table(4.0, 1.0, 0.0, 3.0)
    again.set_state(table.get_state())
    assert again.token != table.token and again.changes_since(version) is None
