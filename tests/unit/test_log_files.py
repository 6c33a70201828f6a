"""The served log's files: writers append JSON lines in rotated segments, a source reads
every writer's files from a per-writer position, replays exactly after a seek, leaves an
unfinished line for later and deletes what a commit covers."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit.sources.logfiles import SPAN, LogFiles, LogWriter, segment_name, segments


def rows(start: int, n: int, t: float = 100.0) -> list[dict]:
    return [{"request_id": f"r{i}", "x": float(i), "_event_time": t + i} for i in range(start, start + n)]


def ids(batch) -> list[str]:
    return batch["request_id"].tolist() if len(batch) else []


def drain(src: LogFiles, n: int = 1000) -> list[str]:
    out = []
    while True:
        batch = src.read(n)
        if not len(batch):
            return out
        out += batch["request_id"].tolist()


def opened(folder) -> LogFiles:
    src = LogFiles(folder)
    src.open()
    return src


def test_segments_rotate_at_their_size_and_are_read_in_order(tmp_path):
    w = LogWriter(tmp_path, name="a", segment_bytes=200)
    for i in range(0, 40, 2):
        w.append(rows(i, 2))
    files = segments(tmp_path / "w-a")
    assert len(files) >= 5 and files == list(range(len(files)))
    assert all((tmp_path / "w-a" / segment_name(s)).stat().st_size <= 200 for s in files)
    for s in files:  # JSON lines, not pickle: any tool reads them
        for line in (tmp_path / "w-a" / segment_name(s)).read_text().splitlines():
            assert set(json.loads(line)) == {"request_id", "x", "_event_time"}
    src = opened(tmp_path)
    assert drain(src, n=7) == [f"r{i}" for i in range(40)]
    seg, byte = divmod(src.position()["a"], SPAN)
    assert seg == files[-1] and byte == (tmp_path / "w-a" / segment_name(seg)).stat().st_size


def test_one_request_stays_in_one_segment(tmp_path):
    w = LogWriter(tmp_path, name="a", segment_bytes=50)
    w.append(rows(0, 10))  # larger than a segment: written whole, the next one rotates
    w.append(rows(10, 1))
    assert segments(tmp_path / "w-a") == [0, 1]
    assert drain(opened(tmp_path)) == [f"r{i}" for i in range(11)]


def test_replay_after_seek_reads_exactly_what_follows_the_position(tmp_path):
    a, b = LogWriter(tmp_path, name="a", segment_bytes=300), LogWriter(tmp_path, name="b")
    a.append(rows(0, 10))
    b.append(rows(100, 5))
    src = opened(tmp_path)
    first = src.read(8)["request_id"].tolist()
    checkpoint = src.position()
    rest = drain(src, n=3)
    a.append(rows(10, 5))
    rest += drain(src)
    assert sorted(first + rest) == sorted([f"r{i}" for i in range(15)] + [f"r{i}" for i in range(100, 105)])
    again = opened(tmp_path)
    again.seek(checkpoint)
    assert sorted(drain(again, n=4)) == sorted(rest)
    fresh = opened(tmp_path)
    fresh.seek(0)  # no checkpoint yet: everything from the start
    assert len(drain(fresh)) == 20


def test_an_unfinished_last_line_waits_for_its_end(tmp_path):
    w = LogWriter(tmp_path, name="a")
    w.append(rows(0, 2))
    seg = tmp_path / "w-a" / segment_name(0)
    with open(seg, "ab") as f:  # a line whose write has not ended yet
        f.write(b'{"request_id":"r2","x":2.0,"_eve')
    src = opened(tmp_path)
    assert src.read(10)["request_id"].tolist() == ["r0", "r1"]
    at = src.position()["a"]
    assert len(src.read(10)) == 0 and src.position()["a"] == at
    with open(seg, "ab") as f:
        f.write(b'nt_time":102.0}\n')
    batch = src.read(10)
    assert batch["request_id"].tolist() == ["r2"] and batch["_event_time"].tolist() == [102.0]
    assert src.take_dead_letters() == []


def test_a_dead_writers_unfinished_line_in_a_finished_segment_is_a_dead_letter(tmp_path):
    folder = tmp_path / "w-gone"
    folder.mkdir()
    (folder / segment_name(0)).write_bytes(b'{"request_id":"r0","_event_time":1.0}\n{"request_')
    (folder / segment_name(1)).write_bytes(b'{"request_id":"r1","_event_time":2.0}\n')
    src = opened(tmp_path)
    assert drain(src) == ["r0", "r1"]
    dead = src.take_dead_letters()
    assert len(dead) == 1 and "unfinished line" in dead[0][1]


def test_bad_lines_are_dead_letters_and_the_position_moves_past_them(tmp_path):
    folder = tmp_path / "w-x"
    folder.mkdir()
    (folder / segment_name(0)).write_bytes(
        b'not json\n[1, 2]\n{"request_id":"r0"}\n{"request_id":"r1","_event_time":"soon"}\n'
        b'{"request_id":"r2","_event_time":5.0}\n')
    src = opened(tmp_path)
    assert drain(src) == ["r2"]
    reasons = [why for _, why, _ in src.take_dead_letters()]
    assert len(reasons) == 4
    assert "not a JSON line" in reasons[0] and "not a JSON object" in reasons[1]
    assert all("_event_time" in r for r in reasons[2:])
    assert src.position()["x"] == (folder / segment_name(0)).stat().st_size


def test_commit_deletes_covered_segments_and_dead_writers_folders(tmp_path):
    live = LogWriter(tmp_path, name="live", segment_bytes=120)
    gone = LogWriter(tmp_path, name="gone", segment_bytes=120)
    for i in range(10):
        live.append(rows(i, 1))
        gone.append(rows(100 + i, 1))
    gone.close()  # its process ended: its lock is free
    src = opened(tmp_path)
    assert len(drain(src)) == 20
    position = src.position()
    before = segments(tmp_path / "w-live")
    src.commit(position)
    assert segments(tmp_path / "w-live") == [before[-1]]  # the one it appends to stays
    assert not (tmp_path / "w-gone").exists()  # read to its end, committed, writer dead
    live.append(rows(10, 1))
    assert drain(src) == ["r10"]
    again = opened(tmp_path)  # a restart from the committed position loses nothing
    again.seek(position)
    assert drain(again) == ["r10"]


def test_commit_keeps_what_it_does_not_cover(tmp_path):
    w = LogWriter(tmp_path, name="a", segment_bytes=120)
    for i in range(6):
        w.append(rows(i, 1))
    src = opened(tmp_path)
    src.read(2)
    src.commit(src.position())
    w.close()
    src.commit(src.position())  # dead, but not read to its end: kept
    assert (tmp_path / "w-a").exists()
    assert drain(src) == [f"r{i}" for i in range(2, 6)]


def test_writers_take_turns_so_none_starves(tmp_path):
    a, b = LogWriter(tmp_path, name="a"), LogWriter(tmp_path, name="b")
    a.append(rows(0, 500))
    b.append(rows(1000, 5))
    src = opened(tmp_path)
    seen = src.read(100)["request_id"].tolist() + src.read(100)["request_id"].tolist()
    assert {f"r{i}" for i in range(1000, 1005)} <= set(seen)


def test_a_batch_is_ordered_by_event_time(tmp_path):
    a, b = LogWriter(tmp_path, name="a"), LogWriter(tmp_path, name="b")
    a.append(rows(0, 3, t=10.0))
    b.append(rows(10, 3, t=0.0))
    batch = opened(tmp_path).read(10)
    assert batch["_event_time"].is_monotonic_increasing
    assert batch["_offset"].dtype == "int64"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append_a", "append_b", "read", "checkpoint",
                                           "crash"]),
                          st.integers(1, 6)), max_size=60))
def test_exactly_once_through_checkpoints_and_crashes(tmp_path_factory, steps):
    """Any interleaving of appends, reads of any size, checkpoints (commit) and crashes
    (a new source seeks to the last checkpoint and what was read since is forgotten):
    every row written is delivered exactly once, in its writer's order."""
    folder = tmp_path_factory.mktemp("log")
    writers = {"a": LogWriter(folder, name="a", segment_bytes=150),
               "b": LogWriter(folder, name="b", segment_bytes=150)}
    written = {"a": [], "b": []}
    src, delivered, ckpt = opened(folder), [], ({}, 0)
    for what, k in steps:
        if what.startswith("append"):
            w = what[-1]
            start = len(written[w])
            recs = [{"request_id": f"{w}{start + i}", "_event_time": 1.0} for i in range(k)]
            writers[w].append(recs)
            written[w] += [r["request_id"] for r in recs]
        elif what == "read":
            delivered += ids(src.read(k))
        elif what == "checkpoint":
            ckpt = (src.position(), len(delivered))
            src.commit(ckpt[0])
        else:
            src, delivered = opened(folder), delivered[:ckpt[1]]
            src.seek(ckpt[0])
    delivered += drain(src, n=4)
    for w in ("a", "b"):
        assert [d for d in delivered if d[0] == w] == written[w]
    for w in writers.values():
        w.close()
    assert len(os.listdir(folder)) == 2 and all(Path(folder, n).name.startswith("w-")
                                               for n in os.listdir(folder))
