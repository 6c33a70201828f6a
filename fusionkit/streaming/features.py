"""Feature definitions: one function plus table lookups, the same on both paths.

``fk.features(fn, tables={"user-stats": "user_id"})`` is a :class:`Features`. It turns rows
into a model's features in two places, and gives the same features for the same raw row
and the same table state:

- **Training path** (:class:`Enricher`, in a train stage defined with ``features=feats``):
  each event of a batch gets, per table, the table's values *as of just before it*
  (``TableState.as_of_before``: earlier events count, the event itself does not, so a label
  can never leak into its own features), then ``fn``. The train stage keeps its own copy
  of each table, updated by the same events in the same order as the table stage (both
  take the same stream's batches), so the values are exactly those a lookup of the table
  would have given just before each event, with no call between actors and no race.
- **Serving path** (:class:`RowFeatures`, in a serve replica defined with
  ``features=feats``): each request row gets the table's freshest values of its key, then
  ``fn``. The replica keeps a copy of each table's values (:class:`TableCopy`), brought up
  to date about every ``staleness / 2`` seconds with what changed in the table's actors
  (the keys of the batches they took, the keys the ttl dropped), so a request reads a dict
  and makes no call. Until a copy is complete (the replica has just started), or while
  its table's actor does not answer, a request reads the actors instead, one call per
  actor for all its keys, and keeps what it read for at most ``staleness`` seconds.

A table adds its aggregations' columns (``views_5m``...), not ``as_of`` or ``miss``; a key
the table does not hold reads as the table's defaults (NaN where none is given) on both
paths. ``fn`` takes and returns a DataFrame, as a stream's ``fn`` does; ``None`` keeps the
rows with the tables' columns added.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._clock import monotonic
from fusionkit.streaming.tables import TableState, held

__all__ = ["Enricher", "Features", "FeatureError", "RowFeatures"]

REQUEST_ID = "request_id"
CACHE_KEYS = 200_000  # keys a replica keeps per table before it starts afresh


class FeatureError(Exception):
    """A request row the features cannot be made for, with the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Features:
    """A feature definition: ``fn`` (DataFrame -> DataFrame, or None) over rows with the
    columns of ``tables`` (table name -> the row column holding its key) added.
    ``specs``: the tables' definitions (``TableSpec``), filled in when a stage using the
    features is defined."""

    fn: Callable[[pd.DataFrame], pd.DataFrame] | None
    tables: tuple[tuple[str, str], ...]
    specs: tuple[Any, ...] = ()

    @classmethod
    def define(cls, fn: Any, tables: Mapping[str, str] | None) -> Features:
        if fn is not None and not callable(fn):
            raise TypeError(f"fn must be a function DataFrame -> DataFrame (or None), got "
                            f"{type(fn).__name__}")
        tables = dict(tables or {})
        for name, key in tables.items():
            if not isinstance(name, str) or not isinstance(key, str):
                raise TypeError(f"tables maps a table's name to the column of its key, e.g. "
                                f"{{'user-stats': 'user_id'}}; got {name!r}: {key!r}")
        if fn is None and not tables:
            raise ValueError("features need a function, tables to read, or both")
        return cls(fn, tuple(tables.items()))

    def resolved(self, specs: list[Any]) -> Features:
        """These features with the tables' definitions, checked: no two tables add a
        column of the same name."""
        seen: dict[str, str] = {}
        for spec in specs:
            for col in spec.window.agg:
                if col in seen:
                    raise ValueError(f"tables {seen[col]!r} and {spec.name!r} both add a column "
                                     f"{col!r}; name the aggregations apart")
                seen[col] = spec.name
        return replace(self, specs=tuple(specs))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.tables]

    def key_of(self, table: str) -> str:
        return dict(self.tables)[table]

    def columns_of(self, spec: Any) -> list[str]:
        """The columns table ``spec`` adds to a row."""
        return list(spec.window.agg)

    def finish(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``fn`` over rows that have their tables' columns."""
        if self.fn is None:
            return frame
        out = self.fn(frame)
        if not isinstance(out, pd.DataFrame):
            raise TypeError(f"the feature function must return a DataFrame, got "
                            f"{type(out).__name__}")
        return out


def _parts(spec: Any) -> list[TableState]:
    """Fresh copies of a table's parts (one per actor of a table on N actors)."""
    n = getattr(spec, "parallelism", 1)
    return [TableState(spec.window, key=spec.key, ttl=spec.ttl, defaults=spec.defaults,
                       share=(i, n)) for i in range(n)]


class Enricher:
    """The training path: each event with its tables' values as of just before it, then
    ``fn`` (see the module's docstring). Its copies of the tables are in the train stage's
    checkpoints (``get_state``/``set_state``), so a replay rebuilds them exactly."""

    def __init__(self, features: Features):
        self.features = features
        self.tables = {spec.name: _parts(spec) for spec in features.specs}

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        added: dict[str, Any] = {}
        for spec in self.features.specs:
            parts, key = self.tables[spec.name], self.features.key_of(spec.name)
            rows = batch if key == spec.key else batch.rename(columns={key: spec.key})
            # each part takes the batch in as the table's actor of that part does; the
            # parts' rows are put back in the batch's order by position (a batch's index
            # may repeat labels)
            if len(parts) > 1:
                rows = rows.reset_index(drop=True)
                before = pd.concat([p.as_of_before(rows) for p in parts]).sort_index()
            else:
                before = parts[0].as_of_before(rows)
            for col in self.features.columns_of(spec):
                added[col] = before[col].to_numpy()
        frame = batch.assign(**added) if added else batch
        return self.features.finish(frame)

    def get_state(self) -> dict[str, list[Any]]:
        """Per table, its parts' states (what a table actor's state holds of its part)."""
        return {name: [p.get_state() for p in parts] for name, parts in self.tables.items()}

    def set_state(self, state: dict[str, list[Any]] | None) -> None:
        self.tables = {spec.name: _parts(spec) for spec in self.features.specs}
        for name, states in (state or {}).items():
            parts = self.tables.get(name)
            if parts is not None and len(states) == len(parts):
                for p, s in zip(parts, states, strict=True):
                    p.set_state(s)


class TableCopy:
    """A copy of the values of one table actor's keys, brought up to date with what
    changed (``apply`` what its ``changes`` gave); ``get`` reads a key (None: not held)."""

    def __init__(self, spec: Any, clock: Callable[[], float] = monotonic):
        self.key = spec.key
        self.columns = list(spec.window.agg)
        self.values: dict[Any, tuple] = {}
        self.token: str | None = None
        self.version = 0
        self.clock = clock
        self.heard = -math.inf  # when the actor last answered (``clock``)

    def apply(self, token: str | None, version: int, values: pd.DataFrame | None,
              dropped: list, afresh: bool) -> None:
        self.heard = self.clock()
        if values is None:  # nothing changed
            return
        rows = dict(zip(values[self.key].tolist(),
                        zip(*[values[c].tolist() for c in self.columns], strict=True),
                        strict=True)) if len(values) else {}
        if afresh:
            self.values = rows
        else:
            self.values.update(rows)
            for k in dropped:
                self.values.pop(k, None)
        self.token, self.version = token, version

    def live(self, within: float) -> bool:
        """Whether the copy is complete and its actor answered within ``within`` seconds."""
        return self.token is not None and self.clock() - self.heard <= within

    def get(self, key: Any) -> tuple | None:
        """The values of ``key`` (or of its other spelling, ``"17"`` for ``17``: as the
        table reads it); None: not held."""
        return held(self.values, _hashable(key))


class RowFeatures:
    """The serving path: request rows (records) with their tables' freshest values, then
    ``fn``. ``copies`` (table name -> the :class:`TableCopy` of each of its actors) are
    read where live; else ``read(table, keys)`` reads a table's values of some keys (a
    DataFrame as ``fk.lookup`` gives it), and what it read is kept for at most
    ``staleness`` seconds of ``clock``."""

    def __init__(self, features: Features, read: Callable[[str, list[Any]], pd.DataFrame],
                 staleness: float = 0.05, clock: Callable[[], float] = monotonic,
                 copies: dict[str, list[TableCopy]] | None = None, live: float = 2.0,
                 counted: Callable[..., None] | None = None):
        self.features = features
        self.read = read
        self.staleness = staleness
        self.clock = clock
        self.copies = copies or {}
        self.live = live  # how recently a copy's actor must have answered for it to be read
        self._cache: dict[str, dict[Any, tuple[float, tuple]]] = {
            spec.name: {} for spec in features.specs}
        self._defaults = {spec.name: tuple((spec.defaults or {}).get(c, math.nan)
                                           for c in spec.window.agg)
                          for spec in features.specs}
        self.reads = self.cached = 0  # keys read from a table, keys answered from the cache
        self.copied = self.misses = 0  # keys read from a copy, and of those not held
        self.counted = counted  # told each read's counts (a replica's totals), as they happen

    def __call__(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # the frame is built once, from columns (a request is often one row: building it
        # column by column, or reading it back with to_dict, costs more than the rest)
        columns = {f: [r.get(f) for r in records]
                   for f in dict.fromkeys(k for r in records for k in r)}
        for spec in self.features.specs:
            key = self.features.key_of(spec.name)
            if len(records) and key not in columns:
                raise FeatureError(400, f"the rows have no field {key!r}, which the features "
                                        f"read table {spec.name!r} by")
            missing = [i for i, r in enumerate(records) if key not in r]
            if missing:
                raise FeatureError(400, f"row {missing[0]}: no field {key!r}, which the "
                                        f"features read table {spec.name!r} by")
            cols = self.features.columns_of(spec)
            values = self._values(spec.name, [r[key] for r in records])
            for j, col in enumerate(cols):
                columns[col] = _column([v[j] for v in values])
        frame = pd.DataFrame(columns, index=pd.RangeIndex(len(records)))
        try:
            out = self.features.finish(frame)
        except KeyError as exc:
            field = exc.args[0] if exc.args else "?"
            raise FeatureError(400, f"the feature function needs the field {field!r}, which "
                                    f"the rows do not have") from None
        except Exception as exc:
            raise FeatureError(422, f"the feature function failed on these rows: "
                                    f"{type(exc).__name__}: {exc}") from None
        if REQUEST_ID in frame.columns and REQUEST_ID not in out.columns:
            out = out.assign(**{REQUEST_ID: frame[REQUEST_ID].to_numpy()})
        return _records(out)

    def counts(self) -> dict[str, int]:
        """Keys read from the copies (``copied``, of which ``misses`` not held), from the
        tables' actors (``read``) and from the short cache of those reads (``cached``)."""
        return {"copied": self.copied, "misses": self.misses, "read": self.reads,
                "cached": self.cached}

    def _values(self, table: str, keys: list[Any]) -> list[tuple]:
        """The values of ``keys`` in ``table``: from the replica's copy of it when live,
        else from the cache where fresh enough and the others in one read."""
        copies = self.copies.get(table)
        if copies and all(c.live(self.live) for c in copies):
            return self._copied(table, copies, keys)
        cache, t = self._cache[table], self.clock()
        stale = list(dict.fromkeys(k for k in keys if _fresh(cache.get(_hashable(k)), t,
                                                             self.staleness) is None))
        if stale:
            if len(cache) + len(stale) > CACHE_KEYS:
                cache.clear()
            spec = next(s for s in self.features.specs if s.name == table)
            got = self.read(table, stale)
            cols = [got[c].tolist() for c in self.features.columns_of(spec)]
            for i, k in enumerate(stale):
                cache[_hashable(k)] = (t, tuple(c[i] for c in cols))
        self._count(read=len(stale), cached=len(keys) - len(stale))
        return [cache[_hashable(k)][1] for k in keys]


    def _copied(self, table: str, copies: list[TableCopy], keys: list[Any]) -> list[tuple]:
        """The values of ``keys`` from the copies of ``table``'s actors (each key is held by
        at most one); the defaults for a key none holds."""
        default, out, misses = self._defaults[table], [], 0
        for k in keys:
            got = None
            for copy in copies:
                got = copy.get(k)
                if got is not None:
                    break
            if got is None:
                misses += 1
                got = default
            out.append(got)
        self._count(copied=len(keys), misses=misses)
        return out

    def _count(self, **counts: int) -> None:
        """Add one read's counts to the totals (``counts()``) and tell ``counted``: per
        read, so requests answered at once on several threads each count their own."""
        self.reads += counts.get("read", 0)
        self.cached += counts.get("cached", 0)
        self.copied += counts.get("copied", 0)
        self.misses += counts.get("misses", 0)
        if self.counted is not None:
            self.counted(**counts)


def _fresh(entry: tuple[float, tuple] | None, t: float, staleness: float) -> tuple | None:
    if entry is None or t - entry[0] > staleness:
        return None
    return entry[1]


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return key


def _column(values: list[Any]) -> Any:
    """A column of table values (None for NaN in an object column)."""
    arr = np.asarray(values)
    return arr if arr.dtype.kind in "biuf" else np.asarray(values, dtype=object)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A frame as JSON-ready records: numpy scalars as Python ones, NaN as None (column by
    column: ``to_dict("records")`` costs a third of a millisecond for one row)."""
    names = list(frame.columns)
    columns = [frame.iloc[:, j].tolist() for j in range(len(names))]
    out = []
    for values in zip(*columns, strict=True):
        row = {}
        for k, v in zip(names, values, strict=True):
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and math.isnan(v):
                v = None
            row[k] = v
        out.append(row)
    return out
