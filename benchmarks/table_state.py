"""Table state (online features) in one process: events/s of ``update`` and of
``as_of_before`` (values as of just before each event, then the update), and lookup time.

Batches of 1000 events over 10k keys (uniform), a 5-minute window sliding by 10 s, three
aggregations (count, mean, max), a 1-hour ttl, 20 events/s of event time per key on
average; no Ray: this is the cost of the state alone, the floor under a table actor
(issue 21 asks >= 200k events/s on one actor at batch 1000). Also: a 1000-event batch all
of one key (the batch is cut in parts, see ``fusionkit.streaming.tables``).

Run ``python benchmarks/table_state.py`` (about 20 s) or ``--quick``. Prints the figures and
writes benchmarks/results/table_state.json.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from _common import machine, write_result

from fusionkit.streaming.tables import TableState
from fusionkit.streaming.windows import SlidingWindow

AGG = {"views": ("user_id", "count"), "avg_price": ("price", "mean"), "top": ("price", "max")}


def batches(n: int, size: int, keys: int, seed: int = 0) -> list[pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    for _ in range(n):
        times = t + np.sort(rng.random(size)) * size / 200.0  # 200 events/s of event time
        out.append(pd.DataFrame({"user_id": rng.integers(0, keys, size),
                                 "price": rng.gamma(2.0, 3.0, size),
                                 "_event_time": times - rng.exponential(0.5, size)}))
        t = float(times[-1])
    return out


def rate(fn, data: list[pd.DataFrame]) -> float:
    t0 = time.perf_counter()
    for b in data:
        fn(b)
    return sum(len(b) for b in data) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 60 if args.quick else 400
    data = batches(n, 1000, 10_000)
    make = lambda: TableState(SlidingWindow("5m", "10s", agg=AGG, allowed_lateness="5s"),  # noqa: E731
                              key="user_id", ttl="1h", defaults={"views": 0})
    table = make()
    rate(table.update, data[: n // 4])  # warm up: the keys and windows fill
    result = {"batch": 1000, "keys": 10_000, "batches": n, **machine()}
    result["update_events_per_s"] = rate(table.update, data[n // 4:])
    table = make()
    rate(table.update, data[: n // 4])
    result["as_of_before_events_per_s"] = rate(table.as_of_before, data[n // 4:])
    ask = [list(np.random.default_rng(1).integers(0, 10_000, 1)) for _ in range(2000)]
    t0 = time.perf_counter()
    for keys in ask:
        table.lookup(keys)
    result["lookup_1_key_ms"] = (time.perf_counter() - t0) / len(ask) * 1e3
    result["held_keys"], result["held_rows"] = table.held_keys, table.held_rows
    hot = [b.assign(user_id=0) for b in data[:20]]
    result["as_of_before_one_key_events_per_s"] = rate(make().as_of_before, hot)
    for name, value in result.items():
        print(f"{name:>36}: {value:,.2f}" if isinstance(value, float) else
              f"{name:>36}: {value}")
    print("written to", write_result("table_state", result))


if __name__ == "__main__":
    main()
