"""Replay recorded data as a stream: a DataFrame, a CSV or Parquet file, or River pairs.

Replay turns data at rest into the events a pipeline expects, so a model can be trained
and served on a known dataset before real traffic exists, and a run can be repeated
exactly. The offset of an event is its row position (with ``loop``, laps keep counting
up), which is all a checkpoint needs to resume. Files are read in ``open()``, inside the
source actor, so the object sent there stays small.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._clock import now
from fusionkit.batch import EVENT_TIME, OFFSET, RESERVED
from fusionkit.sources.base import Source
from fusionkit.sources.synthetic import NOMINAL_RATE

__all__ = ["Replay"]

_READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
_COMPRESSED = (".gz", ".bz2", ".zip", ".xz", ".zst")


class Replay(Source):
    """Events from recorded rows, in row order, at an optional pace.

    Parameters
    ----------
    data
        A DataFrame; a path to a ``.csv`` (optionally compressed) or ``.parquet`` file; or
        an iterable of ``(x: dict, y)`` pairs such as a River dataset. A one-shot iterator
        (a generator) is read into a DataFrame at once, since it cannot be sent anywhere.
    rate
        Events per second the source actor paces to; ``None`` = as fast as taken.
    time_column
        Column holding each event's time: datetimes become seconds since the epoch,
        numbers are taken as such, strings are parsed as datetimes. ``None``: event time
        is ``start_time + offset / rate`` (``rate`` 10 000 if ``None``).
    label
        The label column. For ``(x, y)`` pairs it names the column that receives ``y``
        (default ``"y"``).
    loop
        Start again at the first row after the last, forever; event times keep increasing.
    start_time
        Event time of offset 0 when there is no ``time_column``; default: the clock at
        construction.

    The data's index is not carried into the events (they get a fresh ``RangeIndex``).
    Reserved columns found in the data (``_event_time``, ``_offset``, ``_ingest_ts``) are
    replaced; pass ``time_column="_event_time"`` to keep recorded event times.

    Examples
    --------
    >>> frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    >>> src = Replay(frame, label="y", start_time=0.0)
    >>> src.open()
    >>> src.read(2)[["x", "_event_time", "_offset"]].values.tolist()
    [[1.0, 0.0, 0.0], [2.0, 0.0001, 1.0]]
    >>> len(src.read(2)), src.read(2)
    (1, None)
    """

    def __init__(
        self,
        data: pd.DataFrame | str | os.PathLike | Iterable[tuple[dict, Any]],
        rate: float | None = None,
        time_column: str | None = None,
        label: str | None = None,
        loop: bool = False,
        start_time: float | None = None,
    ):
        if rate is not None and (isinstance(rate, bool) or not np.isfinite(rate) or rate <= 0):
            raise ValueError(
                f"rate must be a positive number of events per second or None, not {rate!r}"
            )
        pairs = False
        if isinstance(data, str | os.PathLike):
            path = Path(data)
            if not path.is_file():
                raise FileNotFoundError(f"Replay: no such file {str(path)!r}")
            if _reader(path) is None:
                raise ValueError(
                    f"Replay reads .csv and .parquet files (by suffix), not {path.name!r}; "
                    "load it into a DataFrame and pass that"
                )
        elif isinstance(data, pd.DataFrame):
            for role, column in (("time_column", time_column), ("label", label)):
                if column is not None and column not in data.columns:
                    raise ValueError(
                        f"{role} {column!r} is not a column of the data: {list(data.columns)}"
                    )
        elif isinstance(data, Iterable):
            pairs = True
            if iter(data) is data:  # a one-shot iterator: read it now
                data = _from_pairs(data, label or "y")
        else:
            raise TypeError(
                f"Replay takes a DataFrame, a file path or (x, y) pairs, not {type(data).__name__}"
            )
        self.data = data
        self.rate = rate
        self.time_column = time_column
        self.label = "y" if label is None and pairs else label
        self.loop = bool(loop)
        self.start_time = float(now() if start_time is None else start_time)
        self._event_rate = float(rate) if rate is not None else NOMINAL_RATE
        self._offset = 0
        self._frame: pd.DataFrame | None = None
        self._times: np.ndarray | None = None
        self._lap = 0.0

    # -- the source protocol -------------------------------------------------------------

    def open(self) -> None:
        """Load the rows (read the file or the pairs) and the event times."""
        if isinstance(self.data, pd.DataFrame):
            frame = self.data
        elif isinstance(self.data, str | os.PathLike):
            frame = _reader(Path(self.data))(self.data)
        else:
            frame = _from_pairs(self.data, self.label)
        for role, column in (("time_column", self.time_column), ("label", self.label)):
            if column is not None and column not in frame.columns:
                raise ValueError(
                    f"{role} {column!r} is not a column of the data: {list(frame.columns)}"
                )
        if self.time_column is not None:
            self._times = _seconds(frame[self.time_column], self.time_column)
            if len(self._times):
                span = float(self._times.max() - self._times.min())
                gap = span / (len(self._times) - 1) if len(self._times) > 1 else 0.0
                self._lap = span + (gap or 1.0 / self._event_rate)
        drop = [c for c in RESERVED if c in frame.columns and c != self.time_column]
        if drop:
            frame = frame.drop(columns=drop)
        self._frame = frame.reset_index(drop=True)

    def read(self, n: int) -> pd.DataFrame | None:
        """The next at most ``n`` rows as events; ``None`` after the last (unless ``loop``)."""
        if n < 0:
            raise ValueError(f"read needs n >= 0, not {n}")
        if self._frame is None:
            self.open()
        rows, start = len(self._frame), self._offset
        if start >= rows and not (self.loop and rows):
            return None
        end = start + int(n) if self.loop else min(start + int(n), rows)
        pieces, times, position = [], [], start
        while position < end or not pieces:
            lap, row = divmod(position, rows)
            stop = row + min(end - position, rows - row)
            pieces.append(self._frame.iloc[row:stop])
            if self._times is not None:
                times.append(self._times[row:stop] + lap * self._lap)
            position += stop - row
        batch = pieces[0] if len(pieces) == 1 else pd.concat(pieces)
        batch = batch.reset_index(drop=True)
        offsets = np.arange(start, end, dtype=np.int64)
        if self._times is not None:
            event_time = times[0] if len(times) == 1 else np.concatenate(times)
        else:
            event_time = self.start_time + offsets / self._event_rate
        batch[EVENT_TIME] = event_time
        batch[OFFSET] = offsets
        self._offset = end
        return batch

    def seek(self, offset: int) -> None:
        """Make the next ``read`` start at row ``offset`` (with ``loop``, laps count on)."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, not {offset}")
        self._offset = int(offset)

    def close(self) -> None:
        self._frame = self._times = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "Replay",
            "data": _describe(self.data),
            "rows": None if self._frame is None else len(self._frame),
            "rate": self.rate,
            "offset": self._offset,
            "loop": self.loop,
            "time_column": self.time_column,
            "label": self.label,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_frame"] = state["_times"] = None  # re-made by open() where it runs
        return state


def _reader(path: Path) -> Any:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes = suffixes[:-1]
    return _READERS.get(suffixes[-1]) if suffixes else None


def _from_pairs(pairs: Iterable[tuple[dict, Any]], label: str) -> pd.DataFrame:
    """A DataFrame of the ``x`` dicts with ``y`` in column ``label``."""
    xs, ys = [], []
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], dict)):
            raise ValueError(
                f"Replay expects (x: dict, y) pairs, got {type(item).__name__} {item!r:.80}"
            )
        xs.append(item[0])
        ys.append(item[1])
    frame = pd.DataFrame.from_records(xs) if xs else pd.DataFrame()
    if label in frame.columns:
        raise ValueError(f"the features already have a column {label!r}; name the label otherwise")
    frame[label] = ys
    return frame


def _seconds(column: pd.Series, name: str) -> np.ndarray:
    """Event times in seconds since the epoch from datetimes, numbers or date strings."""
    if pd.api.types.is_bool_dtype(column) or not (
        pd.api.types.is_numeric_dtype(column) or pd.api.types.is_datetime64_any_dtype(column)
    ):
        try:
            with warnings.catch_warnings():  # a format pandas cannot infer is still read
                warnings.simplefilter("ignore", UserWarning)
                column = pd.to_datetime(column, utc=True)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"time_column {name!r} holds neither datetimes nor numbers: {error}"
            ) from None
    if pd.api.types.is_datetime64_any_dtype(column):
        if column.dt.tz is not None:
            column = column.dt.tz_convert("UTC").dt.tz_localize(None)
    missing = int(column.isna().sum())
    if missing:
        raise ValueError(f"time_column {name!r} has {missing} missing values")
    if pd.api.types.is_datetime64_any_dtype(column):
        return column.dt.as_unit("ns").to_numpy(dtype="int64") / 1e9
    return column.to_numpy(dtype="float64")


def _describe(data: Any) -> str:
    if isinstance(data, pd.DataFrame):
        return f"DataFrame {data.shape[0]}x{data.shape[1]}"
    if isinstance(data, str | os.PathLike):
        return str(data)
    return type(data).__name__
