"""What the Redis Streams source and sink share: the client and stream ids as offsets.

A stream entry id is ``"<ms>-<seq>"``. The stream stage's ``_offset`` column is an int64, so
an id maps to ``ms * 2**20 + seq``: monotone in the id order and reversible, good until the
year 2248 and for up to 2**20 entries in one millisecond (an entry beyond that, only
possible with ids chosen by the producer, is sent to the dead letters).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fusionkit._optional import require

SEQ_BITS = 20
SEQ_MASK = (1 << SEQ_BITS) - 1
MAX_MS = (1 << (63 - SEQ_BITS)) - 1

_ID = re.compile(rb"^(\d+)-(\d+)$")


def id_to_offset(entry_id: bytes | str) -> int:
    """The int64 offset of a stream id.

    >>> id_to_offset("1700000000000-3") == 1700000000000 * 2**20 + 3
    True
    >>> id_to_offset(b"0-1")
    1
    """
    raw = entry_id.encode() if isinstance(entry_id, str) else entry_id
    m = _ID.match(raw)
    if m is None:
        raise ValueError(f"not a stream id: {entry_id!r}")
    ms, seq = int(m.group(1)), int(m.group(2))
    if seq > SEQ_MASK or ms > MAX_MS:
        raise ValueError(f"stream id {raw.decode()} does not fit an int64 offset "
                         f"(sequence above {SEQ_MASK} or time above {MAX_MS} ms)")
    return (ms << SEQ_BITS) | seq


def offset_to_id(offset: int) -> str:
    """The stream id of an offset (the inverse of ``id_to_offset``).

    >>> offset_to_id(id_to_offset("1700000000000-3"))
    '1700000000000-3'
    """
    if offset < 0:
        raise ValueError(f"offsets are not negative, got {offset}")
    return f"{offset >> SEQ_BITS}-{offset & SEQ_MASK}"


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages.

    >>> safe_url("redis://user:secret@127.0.0.1:6379/0")
    'redis://user:***@127.0.0.1:6379/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redis_module():
    """The ``redis`` package, imported on first use with a clear error if it is missing."""
    return require("redis", "redis", "the Redis source and sink")


def connection_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "the server cannot be reached right now"."""
    redis = redis_module()
    return (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)


def connect(url: str, socket_timeout: float) -> Any:
    """A client of ``url`` that does not retry by itself (fusionkit retries with backoff,
    so a dead server shows up in the stage's status instead of hanging a call) and keeps
    raw bytes (payloads are decoded by the source, so bad bytes become dead letters)."""
    redis = redis_module()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"a Redis URL looks like 'redis://127.0.0.1:6379/0', got {url!r}")
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), decode_responses=False,
                                socket_timeout=socket_timeout, socket_connect_timeout=5.0)
