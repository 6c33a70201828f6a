"""The table stage on a real local Ray: a stream's keyed window aggregates kept by an actor,
read with fk.lookup, equal to pandas over the same events, through a SIGKILL and a restore
too; misses and bad definitions."""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest
from conftest import wait_for

N = 60_000
SIZE, SLIDE = 1.0, 0.25  # a window of 1 s of event time, sliding by 0.25 s
AGG = {"views": ("user_id", "count"), "avg_price": ("price", "mean"),
       "spent": ("price", "sum"), "top_dwell": ("dwell", "max"), "rows": ("price", "size")}
DEFAULTS = {"views": 0}


def source(fk, seed: int, rate: float | None = None, n: int = N):
    """Synthetic impressions from event time 0 (1e-4 s apart without a rate), then the end."""
    return fk.sources.synthetic("impressions", rate=rate, seed=seed, max_events=n,
                                start_time=0.0)


def replay(fk, seed: int, rate: float | None = None, n: int = N) -> pd.DataFrame:
    """Every event the deterministic source gives, read here in full."""
    src = source(fk, seed, rate, n)
    parts = []
    while (b := src.read(20_000)) is not None:
        parts.append(b)
    events = pd.concat(parts, ignore_index=True)
    assert len(events) == n
    return events


def oracle(events: pd.DataFrame) -> pd.DataFrame:
    """Per user, by pandas: the aggregates over the user's events in the sliding window
    still open at the user's newest event (the first window, of those every ``SLIDE``
    seconds, whose end is after it), and ``as_of`` (that newest event time)."""
    t = events["_event_time"].to_numpy()
    bucket = np.floor(t / SLIDE)
    newest = events.groupby("user_id")["_event_time"].transform("max").to_numpy()
    first = np.floor(newest / SLIDE) - round(SIZE / SLIDE) + 1
    inside = events[bucket >= first]
    out = inside.groupby("user_id").agg(**AGG)
    out["as_of"] = events.groupby("user_id")["_event_time"].max()
    return out


def define(fk, seed: int, rate: float | None = None, n: int = N) -> None:
    fk.stream("impressions", source=source(fk, seed, rate, n), batch_size=1000)
    fk.table("user-stats", on="impressions", key="user_id",
             window=fk.sliding(f"{SIZE}s", f"{SLIDE}s", agg=AGG), defaults=DEFAULTS)


def taken(fk) -> int:
    return int(fk.status().loc["user-stats", "events"])


def check_equal(fk, want: pd.DataFrame, keys: list) -> pd.DataFrame:
    """fk.lookup of ``keys`` (held ones) against the oracle's rows of them."""
    got = fk.lookup("user-stats", keys)
    assert got["user_id"].tolist() == keys  # one row per key asked, in that order
    assert not got["miss"].any()
    want = want.loc[keys]
    for col in [*AGG, "as_of"]:
        np.testing.assert_allclose(got[col].to_numpy("float64"), want[col].to_numpy("float64"),
                                   rtol=1e-9, atol=1e-9, err_msg=col)
    return got


def test_a_table_equals_pandas_over_the_same_events(fk):
    define(fk, seed=1)
    wait_for(lambda: taken(fk) == N, timeout=120, what="every event in the table")
    want = oracle(replay(fk, seed=1))
    assert want["views"].max() > 1 and want["views"].min() >= 1  # users seen more than once
    keys = want.index.tolist()
    check_equal(fk, want, keys)
    row = fk.status().loc["user-stats"]
    assert row["kind"] == "table" and row["on"] == "impressions"
    assert row["status"] == "running"  # the stream has ended; the table still answers
    assert row["keys_held"] == len(want)
    assert (row["lookups"], row["misses"]) == (len(keys), 0)
    # the stream waited for its consumer, then read every event for it
    assert fk.status().loc["impressions", "status"] == "finished"


def small_table(fk, seed: int, n: int = 5_000) -> tuple[pd.DataFrame, int]:
    """A table over ``n`` events, all in: the oracle's rows and a key it holds."""
    define(fk, seed=seed, n=n)
    wait_for(lambda: taken(fk) == n, timeout=60, what="every event in the table")
    want = oracle(replay(fk, seed=seed, n=n))
    return want, int(want.index[0])


def test_unknown_keys_get_the_defaults_and_count_as_misses(fk):
    want, held = small_table(fk, seed=2)
    got = fk.lookup("user-stats", [-1, held, 10**9])
    assert got["user_id"].tolist() == [-1, held, 10**9]
    assert got["miss"].tolist() == [True, False, True]
    assert got["views"].tolist() == [0, want.loc[held, "views"], 0]  # the default given
    assert got.loc[[0, 2], ["avg_price", "spent", "top_dwell", "as_of"]].isna().all().all()
    one = fk.lookup("user-stats", held)  # one key: a frame of one row
    assert len(one) == 1 and one["views"].iloc[0] == want.loc[held, "views"]
    row = fk.status().loc["user-stats"]
    assert (row["lookups"], row["misses"]) == (4, 2)
    assert row["lookup_p99_ms"] > 0  # the lookups' time in the table's actor
    # how old events were when the table took them: since read, so more than nothing, and
    # less than the whole run (the first events were read tens of seconds before the last)
    assert 0 < row["staleness_p99_ms"] < 60_000
    # the dashboard's card of the table shows the same, from the status rows it polls
    from fusionkit.notebook.cards import table_rows
    from fusionkit.notebook.state import DashboardState
    from fusionkit.stages import rows as status_rows

    state = DashboardState()
    state.ingest_status(status_rows())
    card = dict(table_rows(state.stages["user-stats"].extra["table"]))
    assert card["keys held"] == f"{row['keys_held']:,}"
    assert (card["lookups"], card["misses"]) == ("4", "2 (50%)")
    assert card["staleness p99"] == f"{row['staleness_p99_ms']:,.1f} ms"
    assert card["lookup p99"].endswith(" ms")
    with pytest.raises(fk.StageNotFoundError,
                       match=r"no table stage named 'user-stat'.*user-stats"):
        fk.lookup("user-stat", [held])
    with pytest.raises(fk.StageNotFoundError, match="no table stage named 'impressions'"):
        fk.lookup("impressions", [held])  # a stream is not a table


def run_cell(shell, code: str):
    result = shell.run_cell(code)
    result.raise_error()
    return result.result


def test_lookup_magic(fk):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    want, held = small_table(fk, seed=6)
    shell = InteractiveShell.instance()
    run_cell(shell, "%load_ext fusionkit")
    got = run_cell(shell, f"%fusion lookup user-stats {held} -1 --output rows")
    assert got["user_id"].tolist() == [held, -1]  # numbers are read as numbers
    assert got["miss"].tolist() == [False, True]
    assert got["views"].tolist() == [want.loc[held, "views"], 0]
    assert shell.user_ns["rows"] is got
    with pytest.raises(UsageError, match="'impressions' is a stream stage; lookup takes"):
        run_cell(shell, "%fusion lookup impressions 1")
    with pytest.raises(UsageError, match="KEY"):
        run_cell(shell, "%fusion lookup user-stats")


def test_table_actor_killed_mid_stream_keeps_every_event_once(fk):
    """SIGKILL the table's actor while events flow: its pipeline goes back to the last
    checkpoint and the stream replays from there, so the table holds every event once
    and its lookups still equal pandas."""
    n, rate = 200_000, 20_000.0  # paced over 10 s: the kill lands while events flow
    define(fk, seed=3, rate=rate, n=n)
    wait_for(lambda: taken(fk) >= n // 10, timeout=120, what="first events in the table")
    assert fk.checkpoint(timeout=60) is not None
    wait_for(lambda: taken(fk) >= n // 4, timeout=120, what="more events in the table")
    before = len(fk.recoveries())
    pid = fk.infos("user-stats")[0]["pid"]
    assert taken(fk) < n  # the kill lands mid-stream
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(fk.recoveries()) > before, timeout=120, what="a recovery")
    wait_for(lambda: taken(fk) == n, timeout=180, what="every event in the table again")
    assert fk.infos("user-stats")[0]["pid"] != pid
    assert fk.status().loc["user-stats", "restarts"] >= 1
    want = oracle(replay(fk, seed=3, rate=rate, n=n))
    check_equal(fk, want, want.index.tolist())
    assert fk.status().loc["user-stats", "keys_held"] == len(want)


def test_a_table_over_a_stream_on_two_actors(fk):
    """A stream keyed by user over two actors: each sends its batches to the table, which
    aligns checkpoint barriers over both; a user's events come in order from one actor, so
    the table still equals pandas (the window's lateness covers one actor running ahead)."""
    n, rate = 100_000, 20_000.0
    fk.stream("impressions", source=source(fk, 7, rate, n), batch_size=1000, parallelism=2,
              key_by="user_id")
    fk.table("user-stats", on="impressions", key="user_id", defaults=DEFAULTS,
             window=fk.sliding(f"{SIZE}s", f"{SLIDE}s", agg=AGG, allowed_lateness="10s"))
    wait_for(lambda: taken(fk) >= n // 5, timeout=120, what="first events in the table")
    assert fk.checkpoint(timeout=60) is not None  # the barriers of both actors aligned
    wait_for(lambda: taken(fk) == n, timeout=180, what="every event in the table")
    assert fk.infos("user-stats")[0]["late"] == 0
    want = oracle(replay(fk, seed=7, rate=rate, n=n))
    check_equal(fk, want, want.index.tolist())


def test_a_table_on_three_actors_one_killed(fk):
    """parallelism=3: each actor keeps a third of the users, with the whole stream's time,
    so together they equal pandas; fk.lookup asks each actor for its keys. SIGKILL one of
    them mid-stream: the pipeline rolls back and every event is in the table once."""
    n, rate = 100_000, 20_000.0
    fk.stream("impressions", source=source(fk, 11, rate, n), batch_size=1000)
    fk.table("user-stats", on="impressions", key="user_id", defaults=DEFAULTS, parallelism=3,
             window=fk.sliding(f"{SIZE}s", f"{SLIDE}s", agg=AGG))
    wait_for(lambda: taken(fk) >= n // 5, timeout=120, what="first events in the table")
    assert fk.checkpoint(timeout=60) is not None  # each actor's part in the checkpoint
    wait_for(lambda: taken(fk) >= n // 3, timeout=120, what="more events in the table")
    before = len(fk.recoveries())
    pid = fk.infos("user-stats")[1]["pid"]
    assert taken(fk) < n
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(fk.recoveries()) > before, timeout=120, what="a recovery")
    wait_for(lambda: taken(fk) == n, timeout=180, what="every event in the table once")
    want = oracle(replay(fk, seed=11, rate=rate, n=n))
    check_equal(fk, want, want.index.tolist())
    row = fk.status().loc["user-stats"]
    assert row["parallelism"] == 3 and row["keys_held"] == len(want)
    held = [i["keys_held"] for i in fk.infos("user-stats")]
    assert len(held) == 3 and min(held) > len(want) / 4  # each holds about a third


def test_a_million_keys_with_a_short_ttl_keep_memory_flat(fk):
    """A million users seen once each, a ttl of 1 s of event time (10,000 events): the table
    evicts as it goes, so the keys it holds stay at what one ttl brings, and its actor's
    memory at the end is what it was a quarter of the way in."""
    import psutil

    n = 1_000_000

    def one_user_each(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(user_id=df["_offset"])

    fk.stream("impressions", source=source(fk, 12, n=n), fn=one_user_each, batch_size=5000)
    fk.table("user-stats", on="impressions", key="user_id", ttl="1s",
             window=fk.sliding(f"{SIZE}s", f"{SLIDE}s", agg=AGG))
    wait_for(lambda: taken(fk) >= n // 4, timeout=120, what="a quarter of the events")
    proc = psutil.Process(fk.infos("user-stats")[0]["pid"])
    early = proc.memory_info().rss
    wait_for(lambda: taken(fk) == n, timeout=300, what="every event in the table")
    late = proc.memory_info().rss
    row = fk.status().loc["user-stats"]
    spacing = 1e-4  # the source's events are 1e-4 s of event time apart
    assert row["keys_held"] <= 1.0 / spacing + 5000 + 1  # one ttl of events, one batch more
    assert fk.infos("user-stats")[0]["evicted"] >= n - row["keys_held"] - 1
    print(f"table actor rss {early / 2**20:.0f} MiB at {n // 4:,} events, "
          f"{late / 2**20:.0f} MiB at {n:,}; keys held {row['keys_held']:,}")
    assert late - early < 64 * 2**20  # flat (measured: +17 MiB; without a ttl, +930 MiB)
    held = fk.lookup("user-stats", [n - 1, 0])
    assert held["miss"].tolist() == [False, True]  # the newest user held, the first gone


def test_restore_a_checkpoint_of_a_table(fk):
    """fk.restore() starts the stream and its table from a checkpoint on fresh hosts: the
    table's state comes back and the events after it are taken once."""
    n, rate = 100_000, 20_000.0
    define(fk, seed=4, rate=rate, n=n)
    wait_for(lambda: taken(fk) >= n // 5, timeout=120, what="first events in the table")
    assert fk.checkpoint(timeout=60) is not None
    pid = fk.infos("user-stats")[0]["pid"]
    out = fk.restore()
    assert {"impressions", "user-stats"} <= set(out["stages"])
    assert fk.infos("user-stats")[0]["pid"] != pid  # a fresh table actor
    wait_for(lambda: taken(fk) == n, timeout=180, what="every event in the table")
    want = oracle(replay(fk, seed=4, rate=rate, n=n))
    check_equal(fk, want, want.index.tolist())


def test_table_definition_errors(fk):
    window = fk.sliding("1s", "0.25s", agg=AGG)
    fk.stream("impressions", source=source(fk, 5, n=5_000), batch_size=1000)
    with pytest.raises(fk.StageNotFoundError, match="no stage named 'impresions'.*impressions"):
        fk.table("user-stats", on="impresions", key="user_id", window=window)
    with pytest.raises(fk.FusionError, match="parallelism must be a whole number of actors"):
        fk.table("user-stats", on="impressions", key="user_id", window=window, parallelism=0)
    with pytest.raises(ValueError, match="'nunique', which a table cannot keep"):
        fk.table("user-stats", on="impressions", key="user_id",
                 window=fk.sliding("1s", "0.25s", agg={"users": ("device", "nunique")}))
    with pytest.raises(fk.SchemaError, match="key column 'account'"):
        fk.table("user-stats", on="impressions", key="account", window=window)
    with pytest.raises(fk.SchemaError, match=r"columns \['clicks'\] are not in the batch"):
        fk.table("user-stats", on="impressions", key="user_id",
                 window=fk.sliding("1s", "0.25s", agg={"n": ("clicks", "sum")}))
    with pytest.raises(ValueError, match="defaults name"):
        fk.table("user-stats", on="impressions", key="user_id", window=window,
                 defaults={"clicks": 0})
    with pytest.raises(fk.InvalidNameError):
        fk.table("../stats", on="impressions", key="user_id", window=window)
    assert "user-stats" not in fk.status().index
    assert fk.status().loc["impressions", "status"] == "waiting"  # nothing takes it yet
    fk.table("user-stats", on="impressions", key="user_id", window=window)
    with pytest.raises(fk.FusionError, match=r"is a table stage: its parallelism is set when "
                                             r"it is defined \(fk.table\(..., parallelism=N\)"):
        fk.scale("user-stats", 2)
    wait_for(lambda: taken(fk) == 5_000, timeout=60, what="the stream read for the table")
    fk.stop("user-stats")
    assert "user-stats" not in fk.status().index
