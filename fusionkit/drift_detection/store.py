"""The monitor's drift series and alarm log: bounded, per train stage.

Train stages report drift in batches (``Monitor.drift_report``): rows of window tests per
feature and of the error rate over time, and alarms. Rows are kept per stage up to a bound;
alarms of the whole pipeline in one log, each once (a stage that replays events after a
recovery raises the same alarm again: same stage, kind, column and offset).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import pandas as pd

ROW_COLUMNS = ["time", "offset", "event_time", "kind", "feature", "window", "test", "psi",
               "psi_threshold", "statistic", "p_value", "error_rate", "z", "events", "alarm"]
ALARM_COLUMNS = ["time", "stage", "kind", "feature", "statistic", "value", "threshold", "offset",
                 "event_time", "p_value", "before", "after"]


def describe(alarm: dict[str, Any]) -> str:
    """One line for an event log: what drifted, by how much, against which threshold.

    >>> describe({"kind": "feature", "feature": "price", "statistic": "psi", "value": 0.31,
    ...           "threshold": 0.2, "offset": 15000, "p_value": 1e-9})
    'feature drift: price psi 0.31 >= 0.2 (p 1e-09) at offset 15000'
    """
    kind, what = alarm["kind"], alarm["feature"]
    value, thr = alarm["value"], alarm["threshold"]
    if kind == "concept":
        before, after = alarm.get("before"), alarm.get("after")
        change = (f"error {before:.3g} -> {after:.3g}" if after == after and after is not None
                  else f"{alarm['statistic']} {value:.3g}")  # fmt: skip
        text = f"concept drift: {what} rose ({change}, {alarm['statistic']})"
    else:
        text = f"{kind} drift: {what} {alarm['statistic']} {value:.3g} >= {thr:.3g}"
        p = alarm.get("p_value")
        if p is not None and p == p:
            text += f" (p {p:.2g})"
    return f"{text} at offset {alarm['offset']}"


class DriftStore:
    """Drift rows per stage (the last ``maxrows`` of each) and the alarms of all stages.

    Thread-safe: the monitor actor answers queries while reports come in.

    Examples
    --------
    >>> store = DriftStore()
    >>> a = {"time": 1.0, "stage": "ctr", "kind": "feature", "feature": "x", "statistic": "psi",
    ...      "value": 0.5, "threshold": 0.2, "offset": 99}
    >>> len(store.add("ctr", [{"time": 1.0, "kind": "feature", "feature": "x"}], [a, a]))
    1
    >>> len(store.rows("ctr")), len(store.alarms())
    (1, 1)
    """

    def __init__(self, maxrows: int = 20_000, maxalarms: int = 5_000):
        self.maxrows = maxrows
        self._rows: dict[str, deque[dict[str, Any]]] = {}
        self._alarms: deque[dict[str, Any]] = deque(maxlen=maxalarms)
        self._keys: set[tuple] = set()
        self._lock = threading.Lock()

    def add(self, stage: str, rows: list[dict[str, Any]], alarms: list[dict[str, Any]]
            ) -> list[dict[str, Any]]:  # fmt: skip
        """Store a report; return the alarms not seen before."""
        with self._lock:
            return self._add(stage, rows, alarms)

    def _add(self, stage: str, rows: list[dict[str, Any]], alarms: list[dict[str, Any]]
             ) -> list[dict[str, Any]]:  # fmt: skip
        if rows:
            self._rows.setdefault(stage, deque(maxlen=self.maxrows)).extend(rows)
        new = []
        for a in alarms:
            a = {**a, "stage": stage}
            key = (stage, a["kind"], a["feature"], a["statistic"], a["offset"])
            if key in self._keys:
                continue
            if len(self._alarms) == self._alarms.maxlen:
                old = self._alarms[0]
                self._keys.discard((old["stage"], old["kind"], old["feature"], old["statistic"],
                                    old["offset"]))  # fmt: skip
            self._keys.add(key)
            self._alarms.append(a)
            new.append(a)
        return new

    def rows(self, stage: str, since: float | None = None) -> list[dict[str, Any]]:
        with self._lock:
            rows = list(self._rows.get(stage, ()))
        return [r for r in rows if since is None or r["time"] > since]

    def alarms(self, stage: str | None = None, since: float | None = None
               ) -> list[dict[str, Any]]:  # fmt: skip
        with self._lock:
            alarms = list(self._alarms)
        return [a for a in alarms if (stage is None or a["stage"] == stage)
                and (since is None or a["time"] > since)]  # fmt: skip

    def frame(self, stage: str, since: float | None = None) -> pd.DataFrame:
        """A stage's rows as a DataFrame in time order (columns ``ROW_COLUMNS``); a window
        tested again after a recovery replayed its events appears once, as last tested."""
        df = pd.DataFrame(self.rows(stage, since), columns=ROW_COLUMNS)
        if len(df) == 0:
            return df
        again = df.duplicated(["kind", "feature", "offset"], keep="last") & (df["kind"] != "concept")
        return df[~again].sort_values("time", kind="stable", ignore_index=True)

    def alarm_frame(self, stage: str | None = None, since: float | None = None) -> pd.DataFrame:
        """Alarms as a DataFrame in time order (columns ``ALARM_COLUMNS``)."""
        df = pd.DataFrame(self.alarms(stage, since), columns=ALARM_COLUMNS)
        return df.sort_values("time", kind="stable", ignore_index=True) if len(df) else df

    def drop(self, stage: str) -> None:
        """Forget a stage's rows and alarms (it was stopped)."""
        with self._lock:
            self._rows.pop(stage, None)
            kept = [a for a in self._alarms if a["stage"] != stage]
            self._alarms.clear()
            self._alarms.extend(kept)
            self._keys = {k for k in self._keys if k[0] != stage}
