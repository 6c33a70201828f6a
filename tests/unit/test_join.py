"""The interval join against a plain oracle: examples, labels, late / orphan / duplicate
counts over random keys, delays, disorder, idle inputs, batch cuts and restore points."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionkit.streaming.join import IntervalJoin

PROPS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Oracle:
    """The join's rules, one event at a time over plain lists (nothing is ever forgotten)."""

    def __init__(self, within, lateness, idle, late, horizon, default=0, label="y",
                 channels=(1, 1)):
        self.within, self.lateness, self.idle, self.late = within, lateness, idle, late
        self.reach = within + (within if horizon is None else horizon)
        self.keep = within + (within if horizon is None else horizon) + lateness
        self.forgotten = set()  # left events no outcome can be late for any more
        self.default, self.label = default, label
        self.lefts, self.rights = [], []
        self.wm = -math.inf
        # per channel (input, i): largest event time, last call with events, ended
        self.chans = [(s, i) for s, n in zip(("left", "right"), channels, strict=True)
                      for i in range(n)]
        self.top = dict.fromkeys(self.chans, -math.inf)
        self.active = dict.fromkeys(self.chans)
        self.ended = dict.fromkeys(self.chans, False)
        self.n = dict.fromkeys(["joined", "timed_out", "late", "corrections", "orphans",
                                "duplicates", "late_left"], 0)
        self.side = {"late": [], "orphan": []}

    def call(self, op, now, rows=(), chan=0):
        out = []
        for c in self.active:
            if self.active[c] is None:
                self.active[c] = now
        if op in ("left", "right") and rows:
            self.active[op, chan] = now
        if op == "left":
            for row in rows:
                left = {"row": row, "t": row["_event_time"], "k": row["k"], "matched": False,
                        "seq": len(self.lefts)}
                left["closed"] = left["t"] + self.within < self.wm
                self.n["late_left"] += left["closed"]
                found = [r for r in self.rights if not r["expired"] and r["k"] == left["k"]
                         and left["t"] <= r["t"] <= left["t"] + self.within]
                for r in found:
                    r["matched"] = True
                if found:
                    left["matched"] = True
                    self.n["joined"] += 1
                    self.n["duplicates"] += len(found) - 1
                    out.append((left, found[0]["label"]))
                elif left["closed"]:
                    self.n["timed_out"] += 1
                    out.append((left, self.default))
                self.lefts.append(left)
                self.top["left", chan] = max(self.top["left", chan], left["t"])
        elif op == "right":
            for row in rows:
                r = {"row": row, "t": row["_event_time"], "k": row["k"], "matched": False,
                     "expired": False, "seq": len(self.rights),
                     "label": row.get(self.label, 1)}
                for left in self.lefts:
                    if not left["closed"] and left["k"] == r["k"] \
                            and left["t"] <= r["t"] <= left["t"] + self.within:
                        r["matched"] = True
                        if left["matched"]:
                            self.n["duplicates"] += 1
                        else:
                            left["matched"] = True
                            self.n["joined"] += 1
                            out.append((left, r["label"]))
                self.rights.append(r)
                self.top["right", chan] = max(self.top["right", chan], r["t"])
        elif op == "end":  # a whole input (chan None) or one channel of it
            for c in self.chans:
                if c[0] == rows and chan in (None, c[1]):
                    self.ended[c] = True
        elif op == "flush":
            self.ended = dict.fromkeys(self.chans, True)
        # the watermark: the slowest busy channel of each input; an input with no event yet
        # waits for one; all idle: the furthest
        hold, live = [], []
        for side in ("left", "right"):
            marks = {c: self.top[c] - self.lateness for c in self.chans
                     if c[0] == side and not self.ended[c]}
            if not marks:
                continue
            if max(marks.values()) == -math.inf:
                hold.append(-math.inf)
                continue
            busy = [w for c, w in marks.items()
                    if self.idle is None or not now - self.active[c] > self.idle]
            if busy:
                hold.append(min(busy))
            live.append(max(marks.values()))
        w = min(hold) if hold else max(live) if live else math.inf
        self.wm = max(self.wm, w)
        for left in sorted((x for x in self.lefts if not x["closed"]
                            and x["t"] + self.within < self.wm),
                           key=lambda x: (x["t"], x["seq"])):
            left["closed"] = True
            if not left["matched"]:
                self.n["timed_out"] += 1
                out.append((left, self.default))
        for r in sorted((x for x in self.rights if not x["expired"]
                         and x["t"] + self.lateness < self.wm),
                        key=lambda x: (x["t"], x["seq"])):
            r["expired"] = True
            if r["matched"]:
                continue
            seen = [x for x in self.lefts if x["seq"] not in self.forgotten
                    and x["k"] == r["k"] and x["t"] <= r["t"] <= x["t"] + self.reach]
            if not seen:
                self.n["orphans"] += 1
                self.side["orphan"].append(r["row"]["rid"])
                continue
            left = max(seen, key=lambda x: (x["t"], x["seq"]))
            if left["matched"]:
                self.n["duplicates"] += 1
            elif self.late == "emit":
                left["matched"] = True
                self.n["late"] += 1
                self.n["corrections"] += 1
                out.append((left, r["label"]))
            else:
                self.n["late"] += 1
                self.side["late"].append(r["row"]["rid"])
        self.forgotten |= {x["seq"] for x in self.lefts if x["t"] + self.keep < self.wm}
        return [(left["row"]["id"], label) for left, label in out]


def frame(rows, right=False, with_label=False):
    cols = ["k", "rid", "_event_time", "_offset"] if right else \
        ["k", "id", "x", "_event_time", "_offset"]
    if right and with_label:
        cols.insert(2, "y")
    return pd.DataFrame(rows, columns=cols)


@st.composite
def scenarios(draw):
    """Left events, outcomes for some of them (some twice, before their left event, after
    their window, or for nobody), arrival order with disorder, cuts, idle gaps, ends."""
    q = 0.25  # a quarter-second grid keeps the arithmetic exact
    within = draw(st.sampled_from([0.0, 1.0, 2.5]))
    lateness = draw(st.sampled_from([0.0, 0.5, 2.0]))
    int_keys = draw(st.booleans())
    n = draw(st.integers(0, 30))
    keyspace = draw(st.integers(1, 8))
    keys = draw(st.lists(st.integers(0, keyspace - 1), min_size=n, max_size=n))
    steps = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))
    t0 = draw(st.sampled_from([0.0, 1e6]))
    lt = t0 + np.cumsum(steps) * q if n else np.array([])
    key = (lambda k: k) if int_keys else (lambda k: "k" + str(k))
    lefts = [{"k": key(k), "id": i, "x": i * 10, "_event_time": float(t), "_offset": i}
             for i, (k, t) in enumerate(zip(keys, lt, strict=True))]
    with_label = draw(st.booleans())
    rights = []
    for i in range(n):
        for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
            delay = draw(st.integers(-4, int((within + 4) / q))) * q
            rights.append({"k": lefts[i]["k"], "_event_time": float(lt[i] + delay)})
    for _ in range(draw(st.integers(0, 4))):  # outcomes of no left event
        rights.append({"k": key(draw(st.integers(0, keyspace + 2))),
                       "_event_time": t0 + draw(st.integers(0, 4 * n + 8)) * q})
    for j, r in enumerate(rights):
        r.update(rid=j, _offset=j)
        if with_label:
            r["y"] = draw(st.sampled_from([0, 1, 2]))
    # arrival: by event time plus a jitter of up to `spread` (disorder, outcomes first)
    spread = draw(st.sampled_from([0, 2, 8, 24]))
    events = [("left", e) for e in lefts] + [("right", e) for e in rights]
    jitter = draw(st.lists(st.integers(0, spread), min_size=len(events),
                           max_size=len(events)))
    arrival = sorted(range(len(events)), key=lambda i: (events[i][1]["_event_time"] + jitter[i] * q, i))
    ops = []
    for i in arrival:
        side, e = events[i]
        new = not ops or ops[-1][0] != side or draw(st.integers(0, 3)) == 0
        if new:
            if ops and draw(st.integers(0, 4)) == 0:
                ops.append(("advance", None))
            ops.append((side, []))
        ops[-1][1].append(e)
    idle = draw(st.sampled_from([None, None, 1.0, 3.0]))
    # each input sent by 1 or 2 channels (upstream actors): a batch comes from one of them
    channels = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    chans = [draw(st.integers(0, channels[0 if op == "left" else 1] - 1))
             if op in ("left", "right") else None for op, _ in ops]
    if draw(st.booleans()):  # one side, or one channel of it, ends early (after its last event)
        side = draw(st.sampled_from(["left", "right"]))
        chan = draw(st.sampled_from([None, 0, 1][:1 + channels[side == "right"]]))
        last = max((i for i, (op, c) in enumerate(zip(ops, chans, strict=True))
                    if op[0] == side and chan in (None, c)), default=-1)
        ops.insert(last + 1, ("end", side))
        chans.insert(last + 1, chan)
    ops.append(("flush", None))
    chans.append(None)
    gaps = draw(st.lists(st.sampled_from([0.0, 0.5, 1.5, 4.0]), min_size=len(ops),
                         max_size=len(ops)))
    restore_at = draw(st.one_of(st.none(), st.integers(0, len(ops))))
    late = draw(st.sampled_from(["side", "emit"]))
    horizon = draw(st.sampled_from([None, 0.0, 3.0]))
    return dict(within=within, lateness=lateness, idle=idle, late=late, horizon=horizon,
                ops=ops, gaps=gaps, restore_at=restore_at, with_label=with_label,
                channels=channels, chans=chans)


def run_join(s, share=(0, 1)):
    kw = dict(on="k", within=s["within"], label="y", default=0,
              allowed_lateness=s["lateness"], idle=s["idle"], late=s["late"],
              late_horizon=s["horizon"], share=share, channels=s.get("channels", (1, 1)))
    j = IntervalJoin(**kw)
    now, outs, side = 100.0, [], {"late": [], "orphan": []}
    chans = s.get("chans") or [0] * len(s["ops"])
    for i, ((op, arg), gap, ch) in enumerate(zip(s["ops"], s["gaps"], chans, strict=True)):
        if i == s["restore_at"]:
            state = pickle.loads(pickle.dumps(j.get_state()))
            j = IntervalJoin(**kw)
            j.set_state(state)
        now += gap
        if op == "left":
            out = j.process_left(frame(arg), now=now, channel=ch)
        elif op == "right":
            out = j.process_right(frame(arg, right=True, with_label=s["with_label"]), now=now,
                                  channel=ch)
        elif op == "advance":
            out = j.advance(now=now)
        elif op == "end":
            out = j.end(arg, now=now, channel=ch)
        else:
            out = j.flush()
        if len(out):  # the example is the left row as it came, plus the label
            assert (out["x"] == out["id"] * 10).all()
            outs.append(list(zip(out["id"].tolist(), out["y"].tolist(), strict=True)))
        else:
            outs.append([])
        for name, rows in j.side_outputs().items():
            assert name in side and rows["_reason"].str.startswith(name).all()
            side[name] += rows["rid"].tolist()
    return j, outs, side


def run_oracle(s):
    o = Oracle(s["within"], s["lateness"], s["idle"], s["late"], s["horizon"],
               channels=s.get("channels", (1, 1)))
    now, outs = 100.0, []
    chans = s.get("chans") or [0] * len(s["ops"])
    for (op, arg), gap, ch in zip(s["ops"], s["gaps"], chans, strict=True):
        now += gap
        if op in ("left", "right"):
            outs.append(o.call(op, now, [dict(e) for e in arg], chan=ch))
        else:
            outs.append(o.call(op, now, arg, chan=ch))
    return o, outs


@PROPS
@given(scenarios())
def test_join_equals_the_oracle(s):
    j, outs, side = run_join(s)
    o, expected = run_oracle(s)
    assert outs == expected  # the same examples, labels and order, call by call
    stats = j.stats()
    for name, value in o.n.items():
        assert stats[name] == value, name
    assert side == o.side
    lefts = sum(len(a) for op, a in s["ops"] if op == "left")
    examples = sum(len(x) for x in outs)
    assert stats["joined"] + stats["timed_out"] == lefts  # every left event once
    assert examples == lefts + stats["corrections"]
    assert stats["pending"] == 0 and stats["held_left"] == 0 and stats["held_right"] == 0


@PROPS
@given(scenarios(), st.integers(2, 3))
def test_parts_of_the_keys_together_emit_what_one_join_does(s, count):
    """A join with parallelism N: N joins each given every event, each joining its part of
    the keys, emit call by call the examples of one join (in another order), and their
    counts and side outputs add up to its."""
    whole, outs, side = run_join(s)
    parts = [run_join(s, share=(i, count)) for i in range(count)]
    for call, expected in enumerate(outs):
        got = [x for _, part_outs, _ in parts for x in part_outs[call]]
        assert sorted(got) == sorted(expected), call
    stats = [p.stats() for p, _, _ in parts]
    for name in ("lefts", "rights", "joined", "timed_out", "late", "corrections", "orphans",
                 "duplicates", "overflow", "late_left", "dead"):
        assert sum(st_[name] for st_ in stats) == whole.stats()[name], name
    assert all(st_["watermark"] == whole.stats()["watermark"] for st_ in stats)
    for name in side:
        assert sorted(x for _, _, ps in parts for x in ps[name]) == sorted(side[name]), name
    keys = {e["k"] for op, a in s["ops"] if op == "left" for e in a}
    if len(keys) >= 8:  # the keys are spread: no part holds them all
        assert all(st_["lefts"] < whole.stats()["lefts"] for st_ in stats)


def test_rows_without_a_usable_key_are_set_aside_by_one_part():
    batch = left([1, None, 2, 3], [0.0, 1.0, 2.0, 3.0])
    parts = [IntervalJoin(on="k", within=1.0, share=(i, 2)) for i in range(2)]
    for p in parts:
        p.process_left(batch, now=0.0)
    dead = [p.side_outputs().get("dead") for p in parts]
    assert len(dead[0]) == 1 and dead[1] is None
    assert sum(p.stats()["lefts"] for p in parts) == 3
    with pytest.raises(ValueError, match="share"):
        IntervalJoin(on="k", within=1.0, share=(2, 2))


def test_oracle_sees_what_the_issue_says():
    """A hand-made case, so the oracle itself is checked: match, timeout, duplicate, late,
    orphan, an outcome before its impression."""
    s = dict(within=10.0, lateness=0.0, idle=None, late="side", horizon=None,
             with_label=False, restore_at=None,
             ops=[("right", [{"k": "b", "rid": 0, "_event_time": 3.0, "_offset": 0}]),
                  ("left", [{"k": "a", "id": 0, "x": 0, "_event_time": 0.0, "_offset": 0},
                            {"k": "b", "id": 1, "x": 10, "_event_time": 1.0, "_offset": 1},
                            {"k": "c", "id": 2, "x": 20, "_event_time": 2.0, "_offset": 2}]),
                  ("right", [{"k": "a", "rid": 1, "_event_time": 5.0, "_offset": 1},
                             {"k": "a", "rid": 2, "_event_time": 6.0, "_offset": 2}]),
                  ("left", [{"k": "d", "id": 3, "x": 30, "_event_time": 30.0, "_offset": 3}]),
                  ("right", [{"k": "c", "rid": 3, "_event_time": 15.0, "_offset": 3},
                             {"k": "z", "rid": 4, "_event_time": 31.0, "_offset": 4}]),
                  ("flush", None)],
             gaps=[0.0] * 6)
    j, outs, side = run_join(s)
    o, expected = run_oracle(s)
    assert outs == expected == [[], [(1, 1)], [(0, 1)], [], [(2, 0)], [(3, 0)]]
    assert side == o.side == {"late": [3], "orphan": [4]}
    assert j.stats()["duplicates"] == 1


# -- bad input, overflow, idle, checkpoints ----------------------------------------------
def left(keys, times, **cols):
    return pd.DataFrame({"k": keys, "_event_time": times, **cols})


def test_bad_input_goes_to_dead_with_a_reason_per_row():
    j = IntervalJoin(on="k", within=5, label="y")
    out = j.process_left(pd.DataFrame({"k": ["a", None, "c", "d"],
                                       "_event_time": [0.0, 1.0, np.nan, "noon"]}), now=0)
    assert len(out) == 0
    dead = j.side_outputs()["dead"]
    assert dead["_reason"].tolist() == [
        "left event has a null key", "left event time is not a finite time: nan",
        "left event time is not a finite time: 'noon'"]
    j.process_right(pd.DataFrame({"k": [1, 2], "_event_time": [1.0, 2.0]}), now=0)
    assert j.side_outputs()["dead"]["_reason"].tolist() == [
        "right event key 'k' is int, expected str"] * 2
    j.process_right(pd.DataFrame({"k": ["a", 3.5, True], "_event_time": [1.0, 1.0, 1.0]}),
                    now=0)
    assert j.side_outputs()["dead"]["_reason"].tolist() == [
        "right event key is float 3.5, not an int or a string",
        "right event key is bool True, not an int or a string"]
    j.process_right(pd.DataFrame({"x": [1], "_event_time": [1.0]}), now=0)
    j.process_left(pd.DataFrame({"k": ["e"]}), now=0)
    assert j.side_outputs()["dead"]["_reason"].tolist() == [
        "right event has no key column 'k'", "left event has no '_event_time' column"]
    assert j.stats()["dead"] == 9
    assert j.flush().empty


def test_key_type_is_fixed_by_the_first_key_or_the_argument():
    j = IntervalJoin(on="k", within=5, key_type=int)
    j.process_left(pd.DataFrame({"k": ["a"], "_event_time": [0.0]}), now=0)
    assert j.side_outputs()["dead"]["_reason"].tolist() == [
        "left event key 'k' is str, expected int"]
    # integral floats (an int column with a null) are ints
    j.process_left(pd.DataFrame({"k": [1.0, np.nan], "_event_time": [0.0, 0.0]}), now=0)
    assert j.side_outputs()["dead"]["_reason"].tolist() == ["left event has a null key"]
    out = j.process_right(pd.DataFrame({"k": [1], "_event_time": [2.0]}), now=0)
    assert out["k"].tolist() == [1.0] and out["label"].tolist() == [1]
    # a key on a row dead for its time does not decide the type of keys
    j = IntervalJoin(on="k", within=5)
    j.process_left(pd.DataFrame({"k": [1, "a"], "_event_time": [np.nan, 1.0]}, dtype=object),
                   now=0)
    assert j.side_outputs()["dead"]["_reason"].tolist() == [
        "left event time is not a finite time: nan"]
    assert j.flush()["k"].tolist() == ["a"]


def test_max_pending_emits_the_earliest_as_negatives_and_counts_them():
    j = IntervalJoin(on="k", within=100, max_pending=3, late="emit", label="y")
    out = j.process_left(left(list("abcde"), [5.0, 1.0, 2.0, 3.0, 4.0]), now=0)
    assert out["k"].tolist() == ["b", "c"] and out["y"].tolist() == [0, 0]
    assert j.pending == 3 and j.stats()["overflow"] == 2
    # an outcome for an overflowed left event is late: here a correction
    assert len(j.process_right(pd.DataFrame({"k": ["b"], "_event_time": [6.0]}), now=0)) == 0
    out = j.flush()
    assert out["k"].tolist() == ["d", "e", "a", "b"] and out["y"].tolist() == [0, 0, 0, 1]
    st_ = j.stats()
    assert (st_["joined"], st_["timed_out"], st_["overflow"], st_["late"],
            st_["corrections"]) == (0, 3, 2, 1, 1)


def test_an_idle_input_stops_holding_the_watermark_back():
    j = IntervalJoin(on="k", within=1, idle=10, late_horizon=100)
    j.process_right(pd.DataFrame({"k": ["z"], "_event_time": [-5.0]}), now=0)
    j.process_left(left(["a", "b"], [0.0, 50.0]), now=0)
    assert j.advance(now=5).empty  # outcomes silent for 5 s: still waited for
    out = j.advance(now=11)  # silent for more than 10 s: the left input alone decides
    assert out["k"].tolist() == ["a"] and out["label"].tolist() == [0]
    # the outcome of "a" comes now, from far behind: the watermark does not move back, and
    # the outcome is late
    assert j.process_right(pd.DataFrame({"k": ["a"], "_event_time": [0.5]}), now=11.5).empty
    assert j.watermark == 50.0
    assert j.side_outputs()["late"]["_reason"].tolist() == [
        "late: came after its left event's window closed"]


def test_an_input_with_no_event_yet_is_waited_for_however_long():
    """The first outcome comes a label delay after the first impression: until it does,
    nothing is known of the outcomes' event time, so no window closes (else impressions
    clicked later would be learned as negatives); its end releases them."""
    j = IntervalJoin(on="k", within=1, idle=1)
    j.process_left(left(["a", "b", "c"], [0.0, 2.0, 50.0]), now=0)
    assert j.advance(now=100).empty and j.watermark == -math.inf and j.pending == 3
    out = j.process_right(pd.DataFrame({"k": ["a"], "_event_time": [0.5]}), now=101)
    assert out["k"].tolist() == ["a"] and out["label"].tolist() == [1]
    assert j.watermark == 0.5
    assert j.end("right", now=102)["k"].tolist() == ["b"] and j.ended("right")


def test_the_slowest_channel_of_an_input_holds_it_back():
    """Two actors of one stream each send in order, but one runs ahead of the other: the
    input's progress is the slower one's, so nothing it still sends is late."""
    j = IntervalJoin(on="k", within=1, channels=(2, 1))
    j.process_right(pd.DataFrame({"k": ["z"], "_event_time": [100.0]}), now=0)
    j.process_left(left(["a"], [50.0]), now=0, channel=0)  # actor 0 is ahead
    j.process_left(left(["b"], [10.0]), now=0, channel=1)
    assert j.watermark == 10.0
    # an outcome of "b" in its window, then actor 1 sends "c" at 20: neither is late
    assert j.process_right(pd.DataFrame({"k": ["b"], "_event_time": [10.5]}), now=0
                           )["label"].tolist() == [1]
    assert j.process_left(left(["c"], [20.0]), now=0, channel=1).empty
    assert j.stats()["late_left"] == 0 and j.watermark == 20.0
    # actor 1 ends: actor 0 alone decides, and "c" times out
    assert j.end("left", now=0, channel=1)["k"].tolist() == ["c"]
    assert not j.ended("left") and j.watermark == 50.0
    with pytest.raises(ValueError, match="channel 2"):
        j.process_left(left(["d"], [60.0]), now=0, channel=2)


def test_a_snapshot_of_one_channel_per_input_restores_into_more_channels():
    """An upstream stage defined again with more actors: its input starts its channels
    afresh (they replay from the checkpoint); the watermark never moves back."""
    j = IntervalJoin(on="k", within=1)
    j.process_right(pd.DataFrame({"k": ["z"], "_event_time": [5.0]}), now=0)
    j.process_left(left(["a"], [3.0]), now=0)
    k = IntervalJoin(on="k", within=1, channels=(2, 1))
    k.set_state(pickle.loads(pickle.dumps(j.get_state())))
    assert k.watermark == 3.0 and k.channels == (2, 1)
    k.process_left(left(["b"], [8.0]), now=1, channel=0)
    assert k.watermark == 3.0  # channel 1 has sent nothing since: within its idle (none)
    k.process_left(left(["c"], [7.0]), now=1, channel=1)
    assert k.watermark == 5.0  # now the outcomes (at 5) are the slowest


def test_snapshot_restores_exactly_and_pickles():
    j = IntervalJoin(on="k", within=3, allowed_lateness=1)
    j.process_left(left(["a", "b", "c"], [0.0, 1.0, 2.0], v=["x", "y", None]), now=0)
    j.process_right(pd.DataFrame({"k": ["b", "zz"], "_event_time": [2.0, 2.5]}), now=0)
    k = IntervalJoin(on="k", within=3, allowed_lateness=1)
    k.set_state(pickle.loads(pickle.dumps(j.get_state())))
    for x in (j, k):
        x.process_right(pd.DataFrame({"k": ["c"], "_event_time": [3.0]}), now=1)
    a, b = j.flush(), k.flush()
    pd.testing.assert_frame_equal(a, b)
    assert a["v"].tolist() == ["x"] and a["v"].dtype == j._L.dtypes["v"]
    assert j.stats() == k.stats()


def test_a_restored_join_keeps_its_idle_clocks():
    """Processing time of the last events is part of the snapshot: an input idle before
    the restore is still idle after it."""
    j = IntervalJoin(on="k", within=1, idle=10)
    j.process_right(pd.DataFrame({"k": ["z"], "_event_time": [0.0]}), now=0)
    j.process_left(left(["a", "b"], [0.0, 50.0]), now=8)
    k = IntervalJoin(on="k", within=1, idle=10)
    k.set_state(pickle.loads(pickle.dumps(j.get_state())))
    for x in (j, k):  # outcomes silent since 0: at 11 they no longer hold the watermark
        assert x.advance(now=11)["k"].tolist() == ["a"]


def test_label_delays_give_percentiles():
    j = IntervalJoin(on="k", within=100)
    n = 5000
    j.process_left(left(np.arange(n), np.zeros(n)), now=0)
    j.process_right(pd.DataFrame({"k": np.arange(n), "_event_time": np.arange(n) / 100}), now=0)
    s = j.stats()
    assert s["joined"] == n and len(j.label_delays()) == 4096
    assert j.label_delays()[-1] == (n - 1) / 100
    assert s["label_delay_p50"] == pytest.approx(np.percentile(np.arange(n - 4096, n) / 100, 50))


def test_a_long_run_forgets_what_no_longer_matters():
    """State stays bounded by the windows: rows and keys are let go as time passes."""
    j = IntervalJoin(on="k", within=1.0, max_pending=None)
    for b in range(50):
        keys = np.arange(b * 100, (b + 1) * 100)
        t = b + np.linspace(0, 0.99, 100)
        j.process_left(left(keys, t), now=b)
        j.process_right(pd.DataFrame({"k": keys[::3], "_event_time": t[::3] + 0.5}), now=b)
    s = j.stats()
    assert s["held_left"] <= 400 and s["held_right"] <= 100
    assert len(j._lheads) == s["held_left"] and len(j._rheads) <= s["held_right"]
