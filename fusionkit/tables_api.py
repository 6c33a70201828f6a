"""Tables, the Python API: keep a stream's keyed window aggregates, read them by key.

``fk.table`` defines a stage that keeps, per key, the aggregates of a window over a stream
stage's events (``fusionkit.streaming.tables``), updated with every batch and in the
pipeline's checkpoints; ``fk.lookup`` reads the freshest values of some keys from the
table's actor, all keys in one call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from fusionkit._names import check_name
from fusionkit.api import _placement
from fusionkit.connect import call
from fusionkit.errors import FusionError
from fusionkit.handles import StageHandle
from fusionkit.runtime.specs import TableSpec
from fusionkit.streaming.features import Features
from fusionkit.streaming.tables import TableState


def table(name: str, on: str, key: str | None = None, *, window: Any,
          ttl: float | str | None = None, defaults: dict[str, Any] | None = None,
          parallelism: int = 1, resources: dict[str, float] | None = None,
          placement: str = "pack") -> StageHandle:
    """Define (or replace) a table stage ``name`` kept from stream stage ``on``.

    Per value of ``key`` (default: the window's key), the table holds the aggregates of
    ``window`` (``fk.sliding(size, slide, agg={...})`` or ``fk.tumbling(size, agg=...)``)
    over the key's events in the window still open at its newest event: the row the
    sliding window will emit for it, already now (see
    :mod:`fusionkit.streaming.tables` for the exact rule, late events and ``ttl``). Every
    batch of the stream updates it. ``ttl`` (seconds of event time, or e.g. ``"1h"``)
    evicts keys quiet for that long, so memory stays flat however many keys pass;
    ``defaults`` are the values of a key the table does not hold (NaN where none is given).

    The table is a consumer of its stream: a stream waiting for one reads from now on (a
    table defined on a stream that already reads takes its events from then on). Its state
    is in the pipeline's checkpoints and comes back exactly after its actor is lost.
    ``fk.lookup(name, keys)`` reads it; ``fk.status()`` shows its keys held, lookups and
    misses. With ``parallelism=N``, N actors each keep a part of the keys (a stable hash of
    the key): each takes every batch of the stream and keeps its keys' events, with the
    whole stream's time, so together they hold exactly what one actor would; a lookup
    asks each actor holding some of its keys, all at once. ``resources`` and
    ``placement`` place them on a cluster, as for ``fk.stream``.
    """
    check_name(name)
    if not isinstance(parallelism, int) or parallelism < 1:
        raise FusionError(f"table {name!r}: parallelism must be a whole number of actors, at "
                          f"least 1; got {parallelism!r}")
    if name == on:
        raise FusionError(f"table {name!r} cannot be kept from itself: give it its own name")
    resources, placement = _placement(resources, placement)
    state = TableState(window, key=key, ttl=ttl, defaults=defaults)  # checked in this cell
    spec = TableSpec(name=name, on=on, window=window, key=state.key, ttl=state.ttl,
                     defaults=state.defaults or None, parallelism=parallelism,
                     resources=resources, placement=placement)
    call("define_table", spec)
    return StageHandle(name, "table")


def lookup(name: str, keys: Any) -> pd.DataFrame:
    """The freshest values of ``keys`` (one key, or a list of them) in table ``name``: one
    row per key asked, in that order, with the key, the aggregates, ``as_of`` (the key's
    newest event time) and ``miss``. A key the table does not hold (never seen, or evicted
    by its ttl) is a miss: its row has the table's defaults (NaN where none is given) and
    it is counted in ``fk.status()``'s ``misses``, never an error. A whole-number key is one
    key however it is spelled: ``"17"`` finds the stream's ``17`` (as a request sent as JSON
    may carry it), and ``17`` a stream's ``"17"``. An unknown table name
    raises ``StageNotFoundError`` listing the tables."""
    return call("lookup", name, _key_list(keys))


def features(fn: Any = None, tables: dict[str, str] | None = None) -> Features:
    """One feature definition for training and serving: ``fn`` (a DataFrame -> DataFrame
    function, as a stream's ``fn``) over rows that have the columns of ``tables`` added
    (table name -> the row's column holding the table's key, e.g.
    ``{"user-stats": "user_id"}``; each table adds its aggregations' columns).

    Give it to ``fk.train(..., features=feats)``: every event gets its tables' values as of
    just before it (the event itself never counts, so a label cannot leak into its own
    features). Give it to ``fk.serve(..., features=feats)``: every request row gets its
    tables' freshest values. The same raw row meets the same function on both paths, so a
    model is served the features it learned from. A key a table does not hold reads as the
    table's ``defaults`` (NaN where none is given) on both paths.
    """
    return Features.define(fn, tables)


def _key_list(keys: Any) -> list[Any]:
    """``keys`` as a list: one key (a string, a number, None) is a list of one."""
    if isinstance(keys, (str, bytes)) or not isinstance(keys, (Iterable, np.ndarray)):
        return [keys]
    return list(keys)
