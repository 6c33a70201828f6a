"""Event-time windows: watermark, firing, late data, aggregates, batch cuts, checkpoints."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionkit._duration import parse_duration
from fusionkit.streaming.operators import KeyBy, partition
from fusionkit.streaming.windows import SlidingWindow, TumblingWindow

AGG = {"total": ("v", "sum"), "n": ("x", "count"), "avg": ("x", "mean"), "top": ("v", "max"),
       "low": ("x", "min"), "sd": ("x", "std"), "var": ("x", "var"), "first": ("x", "first"),
       "last": ("x", "last"), "rows": ("v", "size")}
HOLISTIC = {"distinct": ("v", "nunique"), "ids": ("id", lambda s: tuple(s))}
SHAPES = [(1.0, 1.0), (2.0, 2.0), (5.0, 5.0), (2.0, 1.0), (4.0, 2.0), (3.0, 1.0), (5.0, 2.5),
          (3.0, 2.0)]
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def frame(times, keys=None, **cols) -> pd.DataFrame:
    n = len(times)
    data = {} if keys is None else {"k": keys}
    data.update(cols)
    data.update({"_event_time": np.asarray(times, dtype="float64"),
                 "_ingest_ts": 1000.0 + np.arange(n), "_offset": np.arange(n, dtype="int64")})
    return pd.DataFrame(data)


@st.composite
def streams(draw):
    """Events with bounded disorder on a quarter-second grid, random keys and batch cuts."""
    n = draw(st.integers(1, 120))
    steps = np.array(draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)))
    back = np.array(draw(st.lists(st.integers(0, 16), min_size=n, max_size=n)))
    times = (np.cumsum(steps) - back) / 4 + draw(st.sampled_from([-7.5, 0.0, 1e6]))
    keys = draw(st.lists(st.sampled_from("abcd"), min_size=n, max_size=n))
    v = draw(st.lists(st.integers(-5, 20), min_size=n, max_size=n))
    x = draw(st.lists(st.one_of(st.none(), st.integers(-40, 40)), min_size=n, max_size=n))
    events = frame(times, keys, v=v, x=[np.nan if a is None else a / 2 for a in x])
    events.insert(0, "id", np.arange(n))
    cuts = sorted(draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=12)))
    lateness = draw(st.sampled_from([0.0, 0.5, 1.0, 2.75]))
    size, slide = draw(st.sampled_from(SHAPES))
    return events, cuts, lateness, size, slide


def batches(events: pd.DataFrame, cuts) -> list[pd.DataFrame]:
    bounds = [0, *[c for c in cuts if 0 < c < len(events)], len(events)]
    return [events.iloc[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def oracle(events: pd.DataFrame, size: float, slide: float, lateness: float):
    """Event by event: the windows each event is aggregated in, and the late events."""
    watermark, pairs, late = -math.inf, [], []
    for i, t in enumerate(events["_event_time"]):
        first, last = math.floor((t - size) / slide) + 1, math.floor(t / slide)
        windows = [w for w in range(first, last + 1) if w * slide <= t < w * slide + size]
        open_ = [w for w in windows if w * slide + size > watermark]
        if windows and not open_:
            late.append(i)
        pairs += [(i, w) for w in open_]
        watermark = max(watermark, t - lateness)
    return pairs, late


def expected(events, pairs, slide, size, agg) -> pd.DataFrame:
    rows = pd.DataFrame(pairs, columns=["row", "win"])
    joined = events.iloc[rows["row"].to_numpy()].reset_index(drop=True).assign(win=rows["win"])
    named = {**agg, "_ingest_ts": ("_ingest_ts", "max"), "_offset": ("_offset", "max")}
    out = joined.groupby(["win", "k"], sort=True).agg(**named).reset_index()
    out.insert(1, "window_start", out.pop("win") * slide)
    out.insert(2, "window_end", out["window_start"] + size)
    return out


def run(op, parts) -> tuple[pd.DataFrame, list[int]]:
    outs, late = [], []
    for part in parts:
        out = op.process(part)
        if len(out):
            assert (out["window_end"] <= op.watermark).all()  # fired only once due
            outs.append(out)
        late += op.side_outputs().get("late", pd.DataFrame({"id": []}))["id"].tolist()
    tail = op.flush()
    if tail is not None:
        assert (tail["window_end"] > op.watermark).all()
        outs.append(tail)
    out = pd.concat(outs, ignore_index=True) if outs else op.process(parts[0].iloc[0:0])
    return out, late


def assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got["k"]) == list(want["k"])
    for col in want.columns:
        if col == "k":
            continue
        if col == "ids":
            assert [tuple(a) for a in got[col]] == [tuple(a) for a in want[col]]
        elif col in ("n", "rows", "distinct", "_offset"):
            assert got[col].tolist() == want[col].tolist(), col
        else:
            np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float),
                                       rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=col)


@PROPS
@given(streams())
def test_windows_match_an_event_by_event_oracle(stream):
    events, cuts, lateness, size, slide = stream
    agg = {**AGG, **HOLISTIC}
    op = SlidingWindow(size, slide, agg, key="k", allowed_lateness=lateness)
    got, late = run(op, batches(events, cuts))
    pairs, want_late = oracle(events, size, slide, lateness)
    assert late == want_late and op.late_count == len(want_late)
    assert len({row for row, _ in pairs}) + len(want_late) == len(events)
    assert got["window_end"].is_monotonic_increasing
    if pairs:
        assert_same(got, expected(events, pairs, slide, size, agg))
    else:
        assert len(got) == 0
    # every on-time event is in exactly the windows it belongs to; size / slide of them
    # when none had fired on arrival
    seen = pd.Series([i for ids in got["ids"] for i in ids]).value_counts()
    counts = pd.Series([row for row, _ in pairs]).value_counts()
    assert seen.sort_index().equals(counts.sort_index())
    k = size / slide
    for i, t in enumerate(events["_event_time"]):
        before = events["_event_time"].iloc[:i].max() - lateness if i else -math.inf
        if (math.floor(t / slide) - k + 1) * slide + size > before and k == int(k):
            assert seen.get(i, 0) == k


@PROPS
@given(streams(), st.data())
def test_batch_cuts_do_not_change_the_result(stream, data):
    events, cuts, lateness, size, slide = stream
    other = sorted(data.draw(st.sets(st.integers(1, max(len(events) - 1, 1)), max_size=30)))
    results = []
    for cut in (cuts, other, []):
        op = SlidingWindow(size, slide, AGG, key="k", allowed_lateness=lateness)
        results.append(run(op, batches(events, cut)))
    for got, late in results[1:]:
        assert late == results[0][1]
        assert_same(got, results[0][0])


@settings(PROPS, max_examples=25)
@given(streams(), st.integers(0, 12), st.booleans())
def test_state_round_trip_mid_stream_gives_identical_output(stream, at, tumbling):
    events, cuts, lateness, size, slide = stream
    agg = {**AGG, **HOLISTIC}

    def make():
        if tumbling:
            return TumblingWindow(size, agg, key="k", allowed_lateness=lateness)
        return SlidingWindow(size, slide, agg, key="k", allowed_lateness=lateness)

    parts = batches(events, cuts)
    at = min(at, len(parts))
    whole = make()
    straight, late = run(whole, parts)
    first = make()
    head = [first.process(part) for part in parts[:at]]
    head_late = first.side_outputs().get("late", pd.DataFrame({"id": []}))["id"].tolist()
    restored = make()
    restored.set_state(pickle.loads(pickle.dumps(first.get_state())))
    tail, tail_late = run(restored, parts[at:] or [events.iloc[0:0]])
    rest, _ = run(first, parts[at:] or [events.iloc[0:0]])  # the original goes on unharmed
    pd.testing.assert_frame_equal(rest, tail)
    head = [h for h in head if len(h)]
    joined = pd.concat([*head, tail], ignore_index=True) if head else tail
    pd.testing.assert_frame_equal(joined, straight, check_dtype=False)
    assert head_late + tail_late == late and restored.late_count == whole.late_count


@settings(max_examples=40, deadline=None)
@given(streams())
def test_tumbling_counts_each_on_time_event_once(stream):
    events, cuts, lateness, size, _ = stream
    op = TumblingWindow(size, {"n": ("v", "count")}, key="k", allowed_lateness=lateness)
    got, late = run(op, batches(events, cuts))
    assert got["n"].sum() + len(late) == len(events)
    pairs, want_late = oracle(events, size, size, lateness)
    assert late == want_late and got["n"].sum() == len(pairs)


@settings(PROPS, max_examples=30)
@given(streams(), st.integers(2, 4))
def test_windows_partitioned_by_key_equal_one_window_when_events_are_in_order(stream, n):
    """What a stream stage with ``parallelism=n`` computes: each actor windows its own keys,
    with its own watermark. With events in time order nothing is late anywhere, so the
    per-key windows are the same as one operator's."""
    events, cuts, lateness, size, slide = stream
    events = events.sort_values("_event_time", kind="stable", ignore_index=True)
    one, late = run(SlidingWindow(size, slide, AGG, key="k", allowed_lateness=lateness),
                    batches(events, cuts))
    assert late == []
    ops = [SlidingWindow(size, slide, AGG, key="k", allowed_lateness=lateness)
           for _ in range(n)]
    outs = []
    for part in batches(events, cuts):
        for op, piece in zip(ops, partition(KeyBy("k").process(part), n), strict=True):
            if len(piece):
                outs.append(op.process(piece))
    outs += [tail for op in ops if (tail := op.flush()) is not None]
    assert sum(op.late_count for op in ops) == 0
    many = pd.concat(outs, ignore_index=True)
    order = ["window_start", "k"]
    assert_same(many.sort_values(order, ignore_index=True), one.sort_values(order,
                                                                             ignore_index=True))


# -- unit behaviour -----------------------------------------------------------------------

def test_parse_duration():
    assert parse_duration("10s") == 10.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("1min") == 60.0
    assert parse_duration("2 h") == 7200.0
    assert parse_duration(1.5) == 1.5
    assert parse_duration(pd.Timedelta("250ms")) == 0.25
    for bad in ("ten seconds", "5 parsecs", "", True):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_output_columns_order_and_reserved_columns():
    op = TumblingWindow("10s", {"clicks": ("c", "sum"), "n": ("c", "count")}, key="user")
    df = frame([1.0, 2.0, 3.0, 15.0], ["b", "a", "b", "a"], c=[1, 0, 1, 1])
    df = df.rename(columns={"k": "user"})
    out = op.process(df)
    assert list(out.columns) == ["user", "window_start", "window_end", "clicks", "n",
                                 "_event_time", "_ingest_ts", "_offset"]
    assert out[["user", "clicks", "n"]].values.tolist() == [["a", 0, 1], ["b", 2, 2]]
    assert out["_event_time"].tolist() == [10.0, 10.0]
    assert out["_ingest_ts"].tolist() == [1001.0, 1002.0]
    assert out["_offset"].tolist() == [1, 2]
    assert out["n"].dtype == np.int64 and out["clicks"].dtype == np.int64


def test_window_fires_exactly_when_the_watermark_reaches_its_end():
    op = TumblingWindow(10, {"n": ("v", "count")}, allowed_lateness=2)
    assert len(op.process(frame([1.0, 11.9], v=[1, 1]))) == 0  # watermark 9.9
    assert op.watermark == pytest.approx(9.9)
    out = op.process(frame([12.0], v=[1]))  # watermark 10: [0, 10) fires
    assert out[["window_start", "window_end", "n"]].values.tolist() == [[0.0, 10.0, 1]]
    assert "k" not in out.columns


def test_allowed_lateness_keeps_a_window_open_for_stragglers():
    op = TumblingWindow(10, {"n": ("v", "count")}, allowed_lateness=5)
    op.process(frame([1.0, 12.0, 9.0], v=[1, 1, 1]))  # 9.0 arrives after 12.0: still on time
    assert op.late_count == 0
    out = op.process(frame([16.0, 8.0], v=[1, 1]))  # watermark 11 fires [0, 10) before 8.0
    assert out["n"].tolist() == [2]
    assert op.late_count == 1
    late = op.side_outputs()["late"]
    assert late["_event_time"].tolist() == [8.0] and list(late.columns) == ["v", "_event_time",
                                                                          "_ingest_ts", "_offset"]
    assert op.side_outputs() == {}  # drained


def test_sliding_event_partly_late_counts_in_its_open_windows_only():
    op = SlidingWindow(4, 2, {"ids": ("id", lambda s: sorted(s))})
    out = pd.concat([op.process(frame([0.0, 5.0, 3.0], id=[0, 1, 2])), op.flush()])
    assert dict(zip(out["window_start"], out["ids"], strict=True)) == {
        -2.0: [0], 0.0: [0], 2.0: [1, 2], 4.0: [1]}  # [0, 4) fired at 5 before 3.0 arrived
    assert op.late_count == 0


def test_flush_emits_open_windows_and_closes_them():
    op = TumblingWindow(10, {"s": ("v", "sum")}, key="k")
    assert op.flush() is None
    op.process(frame([1.0, 25.0], ["a", "b"], v=[1, 2]))
    out = op.flush()
    assert out[["k", "window_start", "s"]].values.tolist() == [["b", 20.0, 2]]
    assert op.flush() is None
    op.process(frame([26.0, 31.0], ["b", "b"], v=[5, 7]))  # [20, 30) has been emitted
    assert op.late_count == 1
    assert op.flush()["window_start"].tolist() == [30.0]


def test_events_without_event_time_go_to_invalid():
    op = TumblingWindow(10, {"n": ("v", "count")})
    op.process(frame([1.0, np.nan, np.inf], v=[1, 2, 3]))
    assert op.side_outputs()["invalid"]["v"].tolist() == [2, 3]
    assert op.late_count == 0 and op.flush()["n"].tolist() == [1]


def test_gaps_between_hopping_windows_are_dropped_not_late():
    op = SlidingWindow(1, 5, {"n": ("v", "count")})
    out = pd.concat([op.process(frame([0.5, 2.0, 5.2], v=[1, 1, 1])), op.flush()])
    assert op.late_count == 0
    assert out[["window_start", "window_end"]].values.tolist() == [[0.0, 1.0], [5.0, 6.0]]
    assert out["n"].tolist() == [1, 1]


def test_aggregates_equal_pandas_with_missing_values_strings_and_big_offsets():
    rng = np.random.default_rng(3)
    n = 400
    x = 1e9 + rng.normal(size=n)
    x[rng.random(n) < 0.2] = np.nan
    df = frame(np.sort(rng.uniform(0, 30, n)), rng.choice(["a", "b", None], n), x=x,
               s=rng.choice(["p", "q", "r"], n), b=rng.random(n) < 0.5)
    agg = {"mean": ("x", "mean"), "std": ("x", "std"), "var": ("x", "var"), "min": ("x", "min"),
           "first": ("x", "first"), "last": ("x", "last"), "str_min": ("s", "min"),
           "str_max": ("s", "max"), "str_first": ("s", "first"), "bsum": ("b", "sum"),
           "bmean": ("b", "mean"), "median": ("x", "median"), "nu": ("s", "nunique")}
    op = TumblingWindow(10, agg, key="k")
    got = pd.concat([op.process(df.iloc[i:i + 60]) for i in range(0, n, 60)] + [op.flush()],
                    ignore_index=True)
    want = (df.assign(w=np.floor(df["_event_time"] / 10) * 10)
            .groupby(["w", "k"], dropna=False).agg(**agg).reset_index())
    assert got["k"].isna().sum() == 3  # missing keys are a group of their own
    assert len(got) == len(want)
    for col in agg:
        g, w = got[col].to_numpy(), want[col].to_numpy()
        if col.startswith("str") or col == "nu":
            assert list(g) == list(w), col
        else:  # values near 1e9 carry ~1e-7 of rounding: the spread agrees to ~1e-7
            np.testing.assert_allclose(g.astype(float), w.astype(float), rtol=1e-6,
                                       equal_nan=True, err_msg=col)
    exact = df.assign(w=np.floor(df["_event_time"] / 10) * 10).dropna(subset=["x"])
    exact = exact.groupby(["w", "k"], dropna=False)["x"].apply(
        lambda v: np.std(np.asarray(v, dtype=np.longdouble), ddof=1))
    err = np.abs(got["std"].to_numpy(float) / exact.to_numpy(float) - 1)
    assert err.max() < 1e-7  # no worse than pandas' own error here (~3e-8)


def test_nunique_only_keeps_distinct_values():
    op = TumblingWindow(10, {"users": ("u", "nunique")})
    for _ in range(5):
        op.process(frame([1.0] * 50, u=["a", "b"] * 25))
    assert sum(len(v) for v in op._values) <= 2 * 5
    assert op.flush()["users"].tolist() == [2]


def test_integer_keys_keep_their_type_and_state_is_independent_of_the_operator():
    op = TumblingWindow(1, {"n": ("v", "count")}, key="k")
    op.process(frame([0.1, 0.2], [7, 3], v=[1, 1]))
    snap = op.get_state()
    out = op.flush()
    assert out["k"].tolist() == [3, 7] and out["k"].dtype == np.int64
    again = TumblingWindow(1, {"n": ("v", "count")}, key="k")
    again.set_state(snap)
    assert again.flush()["k"].tolist() == [3, 7]


def test_configuration_errors_are_clear():
    with pytest.raises(ValueError, match="positive"):
        TumblingWindow(0, {"n": ("v", "count")})
    with pytest.raises(ValueError, match="at least one"):
        TumblingWindow(1, {})
    with pytest.raises(ValueError, match="pair"):
        TumblingWindow(1, {"n": "count"})
    with pytest.raises(ValueError, match="clashes"):
        TumblingWindow(1, {"window_end": ("v", "max")})
    with pytest.raises(ValueError, match=">= 0"):
        TumblingWindow(1, {"n": ("v", "count")}, allowed_lateness=-1)
    op = TumblingWindow(1, {"n": ("v", "count")}, key="user")
    with pytest.raises(KeyError, match="user"):
        op.process(frame([0.0], v=[1]))
    with pytest.raises(TypeError, match="cannot sum"):
        TumblingWindow(1, {"s": ("v", "sum")}).process(frame([0.0], v=["a"]))


def test_empty_batches_give_empty_frames_with_the_output_columns():
    op = SlidingWindow("2s", "1s", {"n": ("v", "count")}, key="k")
    out = op.process(frame([], [], v=[]))
    assert len(out) == 0 and list(out.columns)[:3] == ["k", "window_start", "window_end"]
