"""Write a stage's output to a Redis stream.

``Redis`` is an operator: put it last in a stream stage's chain and every batch that
reaches it is appended to the stream with ``XADD`` (one ``MULTI``/``EXEC`` pipeline per
batch, so a batch is written whole or not at all) and passed on unchanged. Delivery is at
least once: after a recovery the stage replays from its last checkpoint and writes those
events again; each entry carries the event's ``_offset`` so a reader can drop repeats.
It can also be used on its own: ``sink.write(frame)``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fusionkit.batch import INGEST_TS
from fusionkit.sources import _redis
from fusionkit.sources.base import Backoff
from fusionkit.streaming.base import Operator

__all__ = ["Redis"]

ENCODES = ("json", "fields")


class Redis(Operator):
    """A Redis stream as a sink.

    Parameters
    ----------
    url
        The server, ``redis://host:port/db``.
    stream
        The stream's key (created by the first write).
    encode
        ``"json"``: one field (``field``) holding the row as a JSON object (missing values
        are ``null``). ``"fields"``: one field per column, values as text, missing values
        left out.
    field
        The field holding the JSON object (``encode="json"``).
    columns
        The columns to write; default every column but ``_ingest_ts``.
    maxlen
        Keep the stream at about this many entries (``XADD MAXLEN ~``); ``None``: unbounded.
    retry_for
        Seconds a write keeps retrying, with backoff, while the server cannot be reached,
        before it raises (and the stage fails with the URL in its error).

    Examples
    --------
    >>> sink = Redis("redis://127.0.0.1:6379/0", stream="predictions", maxlen=100_000)
    >>> sink.describe()["stream"]
    'predictions'
    """

    #: writes outside the pipeline: the stage's definition-time probe leaves it out
    sink = True

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", stream: str = "predictions",
                 encode: str = "json", field: str = "data", columns: list[str] | None = None,
                 maxlen: int | None = None, retry_for: float | None = 60.0):
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"a Redis URL looks like 'redis://127.0.0.1:6379/0', got {url!r}")
        if not isinstance(stream, str) or not stream:
            raise ValueError(f"stream must be a non-empty string, got {stream!r}")
        if encode not in ENCODES:
            raise ValueError(f"encode must be one of {ENCODES}, got {encode!r}")
        if maxlen is not None and (isinstance(maxlen, bool) or int(maxlen) < 1):
            raise ValueError(f"maxlen must be a positive number of entries or None, got {maxlen!r}")
        self.url = url
        self.stream = stream
        self.encode = encode
        self.field = field
        self.columns = list(columns) if columns is not None else None
        self.maxlen = None if maxlen is None else int(maxlen)
        self.retry_for = retry_for
        self.written = 0
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:  # picklable: the connection stays behind
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    def process(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.write(batch)
        return batch

    def write(self, batch: pd.DataFrame) -> int:
        """Append the batch's rows to the stream; return how many were written."""
        if len(batch) == 0:
            return 0
        entries = self._entries(batch)
        backoff = Backoff(give_up=self.retry_for)
        while True:
            try:
                if self._client is None:
                    self._client = _redis.connect(self.url, socket_timeout=10.0)
                pipe = self._client.pipeline(transaction=True)
                for fields in entries:
                    pipe.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
                pipe.execute()
                break
            except _redis.connection_errors() as exc:
                backoff.failed(exc)
                if backoff.expired():
                    raise ConnectionError(f"cannot write to Redis at {_redis.safe_url(self.url)}"
                                          f" for {self.retry_for:g}s: {backoff.last_error}") from None
                backoff.wait()
        self.written += len(entries)
        return len(entries)

    def describe(self) -> dict[str, Any]:
        return {"kind": "redis sink", "url": _redis.safe_url(self.url), "stream": self.stream,
                "encode": self.encode}

    def _entries(self, batch: pd.DataFrame) -> list[dict[str, str]]:
        cols = self.columns or [c for c in batch.columns if c != INGEST_TS]
        missing = [c for c in cols if c not in batch.columns]
        if missing:
            raise KeyError(f"Redis sink: the batch has no column {missing[0]!r} "
                           f"(it has {list(batch.columns)})")
        frame = batch[cols]
        if self.encode == "json":
            lines = frame.to_json(orient="records", lines=True, date_format="iso")
            return [{self.field: line} for line in lines.splitlines()]
        text = frame.astype(str).to_numpy()
        present = frame.notna().to_numpy()
        names = [str(c) for c in cols]
        rows = [{n: v for n, v, ok in zip(names, row, keep, strict=True) if ok}
                for row, keep in zip(text, present, strict=True)]
        return [r for r in rows if r]  # a row with every value missing has nothing to add
