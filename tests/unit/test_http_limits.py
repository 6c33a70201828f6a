"""A serve stage's checks before it reads a request: the token (constant time), the body's
size (from its length, or as it is read), the number of rows (before anything is built);
and the warning for a stage that answers the network without a token."""

from __future__ import annotations

import asyncio
import hmac
import tracemalloc
import warnings

import pandas as pd
import pytest
from starlette.requests import Request

import fusionkit as fk
from fusionkit.serving.inputs import BadRequest, check_records, count_rows, parse_rows
from fusionkit.serving.limits import (
    MAX_BODY_BYTES,
    ExposedServeWarning,
    check_length,
    is_loopback,
    read_capped,
    read_request,
    token_ok,
    warn_if_exposed,
)
from fusionkit.streaming.validate import Schema

MiB = 2**20


def test_token_compared_in_constant_time(monkeypatch):
    seen = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert token_ok("Bearer s3cret", "s3cret")
    assert not token_ok("Bearer s3creT", "s3cret")
    assert not token_ok("Bearer s3cret-and-more", "s3cret")
    assert not token_ok("s3cret", "s3cret")
    assert not token_ok("", "s3cret")
    assert not token_ok("Bearer sécret\udcff", "s3cret")  # no TypeError on odd headers
    assert len(seen) == 6, "every comparison goes through hmac.compare_digest"
    assert token_ok("", None) and token_ok("Bearer anything", None)


@pytest.mark.parametrize("header, expected", [(None, None), ("0", 0), ("120", 120),
                                              (" 64 ", 64), (str(MiB), MiB)])
def test_a_length_within_the_cap_is_taken(header, expected):
    assert check_length(header, MiB) == expected


def test_a_length_over_the_cap_is_refused_413():
    with pytest.raises(BadRequest, match="50000000 bytes > 1048576") as err:
        check_length("50000000", MiB)
    assert err.value.status == 413
    with pytest.raises(BadRequest) as err:
        check_length(str(MiB + 1), MiB)
    assert err.value.status == 413


@pytest.mark.parametrize("header", ["-1", "abc", "1e9", "", "+5", "12 34"])
def test_a_malformed_length_is_refused_400(header):
    with pytest.raises(BadRequest) as err:
        check_length(header, MiB)
    assert err.value.status == 400


class Chunks:
    """An endless body, in chunks, counting how many were taken."""

    def __init__(self, size: int, limit: int | None = None):
        self.size, self.limit, self.taken = size, limit, 0

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        if self.limit is not None and self.taken >= self.limit:
            raise StopAsyncIteration
        self.taken += 1
        return b"x" * self.size


def test_a_lengthless_body_stops_being_read_once_past_the_cap():
    chunks = Chunks(MiB)  # never ends
    with pytest.raises(BadRequest, match="over 4194304 bytes") as err:
        asyncio.run(read_capped(chunks, 4 * MiB))
    assert err.value.status == 413
    assert chunks.taken == 5  # four fit, the fifth passed the cap: nothing more was read
    body = asyncio.run(read_capped(Chunks(MiB, limit=4), 4 * MiB))
    assert len(body) == 4 * MiB


def http_request(method: str = "POST", headers: dict[str, str] | None = None,
                 chunks: list[bytes] = ()) -> tuple[Request, list[int]]:
    """A Starlette request as Ray Serve hands it over; ``reads`` counts body reads."""
    reads: list[int] = []
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)] or [{"type": "http.request", "body": b""}]

    async def receive():
        reads.append(1)
        return messages[len(reads) - 1] if len(reads) <= len(messages) else {
            "type": "http.disconnect"}

    scope = {"type": "http", "method": method, "path": "/api", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    return Request(scope, receive), reads


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "s3cret"}])
def test_a_wrong_token_is_refused_before_the_body_is_read(headers):
    request, reads = http_request(headers={**headers, "Content-Length": "10"},
                                  chunks=[b"0123456789"])
    with pytest.raises(BadRequest, match="token") as err:
        asyncio.run(read_request(request, "s3cret", MiB))
    assert err.value.status == 401
    assert reads == [], "the body was read before the token was checked"


def test_a_large_declared_body_is_refused_unread():
    request, reads = http_request(headers={"Authorization": "Bearer s3cret",
                                           "Content-Length": str(50_000_000)},
                                  chunks=[b"x" * MiB])
    with pytest.raises(BadRequest) as err:
        asyncio.run(read_request(request, "s3cret", 8 * MiB))
    assert err.value.status == 413 and reads == []


def test_a_chunked_body_is_read_up_to_the_cap_only():
    request, reads = http_request(headers={"Authorization": "Bearer s3cret"},
                                  chunks=[b"x" * MiB] * 50)
    with pytest.raises(BadRequest) as err:
        asyncio.run(read_request(request, "s3cret", 3 * MiB))
    assert err.value.status == 413 and len(reads) == 4


class FetchingReceive:
    """Shaped like Ray Serve's ``ASGIReceiveProxy``: a task of its own fetches the body's
    messages ahead of the reader, to the end, whether they are read or not."""

    def __init__(self, chunks: int):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.chunks, self.fetched = chunks, 0

    async def fetch_until_disconnect(self) -> None:
        for i in range(self.chunks):
            await asyncio.sleep(0)  # a call to the proxy
            self.fetched += 1
            self.queue.put_nowait({"type": "http.request", "body": b"x" * MiB,
                                   "more_body": i < self.chunks - 1})

    async def __call__(self):
        return await self.queue.get()


def test_a_refused_body_stops_being_fetched():
    async def refuse() -> tuple[int, int, bool]:
        receive = FetchingReceive(50)
        fetching = asyncio.create_task(receive.fetch_until_disconnect())
        scope = {"type": "http", "method": "POST", "path": "/api", "query_string": b"",
                 "headers": [(b"authorization", b"Bearer s3cret")]}
        with pytest.raises(BadRequest) as err:
            await read_request(Request(scope, receive), "s3cret", 3 * MiB)
        assert err.value.status == 413
        at_refusal = receive.fetched
        for _ in range(100):  # the loop goes on, as the replica's does until it answers
            await asyncio.sleep(0)
        return at_refusal, receive.fetched, fetching.cancelled()

    at_refusal, fetched, cancelled = asyncio.run(refuse())
    assert cancelled and fetched == at_refusal < 10, (at_refusal, fetched)


def test_a_good_request_is_read_whole():
    request, _ = http_request(headers={"Authorization": "Bearer s3cret"},
                              chunks=[b'{"rows": ', b"[]}"])
    assert asyncio.run(read_request(request, "s3cret", MiB)) == b'{"rows": []}'
    request, reads = http_request("GET", headers={"Authorization": "Bearer s3cret"})
    assert asyncio.run(read_request(request, "s3cret", MiB)) == b"" and reads == []


def test_count_rows_of_every_request_shape():
    assert count_rows([{"a": 1}] * 3) == 3
    assert count_rows([]) == 0 and count_rows({}) == 0
    assert count_rows({"a": 1, "b": "xyz"}) == 1  # scalars: pandas wants an index, one row
    assert count_rows({"a": [1, 2], "b": "long string, not a column"}) == 2
    assert count_rows({"a": [0] * 1_000_000, "b": 1}) == 1_000_000
    assert count_rows({"a": {"x": 1, "y": 2}, "b": {"y": 3, "z": 4}}) == 3  # keys' union
    assert count_rows(pd.DataFrame({"a": range(7)})) == 7
    assert count_rows(5) == 0 and count_rows(None) == 0


SCHEMA = Schema({"price": "number", "age": "integer", "device": "string"})


def test_a_million_rows_are_refused_before_a_frame_is_built():
    """An object of columns: one long column beside scalars that pandas would repeat a
    million times each (~2 MB of JSON making a frame of hundreds of MB)."""
    rows = {"price": [0] * 1_000_000, "age": 30, "device": "mobile",
            **{f"extra{i}": i for i in range(20)}}
    tracemalloc.start()
    try:
        with pytest.raises(BadRequest, match="too many rows: 1000000 > 10000") as err:
            parse_rows(rows, SCHEMA, 10_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err.value.status == 413
    assert peak < MiB, f"refusing took {peak / MiB:.0f} MiB: the rows were built first"
    for shaped in ([{"price": 1.0, "age": 3, "device": "x"}] * 10_001,
                   pd.DataFrame({"price": [1.0] * 10_001})):
        with pytest.raises(BadRequest, match="too many rows") as err:
            parse_rows(shaped, SCHEMA, 10_000)
        assert err.value.status == 413
    with pytest.raises(BadRequest, match="too many rows") as err:
        check_records([{"price": 1.0}] * 11, SCHEMA, 10)
    assert err.value.status == 413


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("127.0.1.1", True),
                                            ("localhost", True), ("::1", True),
                                            ("[::1]", True), ("0.0.0.0", False),
                                            ("::", False), ("192.168.1.20", False),
                                            ("myhost.example", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_serving_the_network_without_a_token_warns_at_definition(monkeypatch):
    defined = []
    monkeypatch.setattr(fk.api, "call", lambda method, *args: defined.append(args[0]))
    with pytest.warns(ExposedServeWarning, match="listens on 0.0.0.0 without a token") as w:
        fk.serve("api", model="ctr", host="0.0.0.0")
    assert w[0].filename == __file__  # shown at the user's own line (a notebook cell)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fk.serve("api", model="ctr", host="0.0.0.0", token="s3cret")
        fk.serve("api", model="ctr")  # loopback, the default
        warn_if_exposed("api", "127.0.0.1", None)
    assert [s.max_body_bytes for s in defined] == [MAX_BODY_BYTES] * 3
    fk.serve("api", model="ctr", max_body_bytes=1024)
    assert defined[-1].max_body_bytes == 1024
    with pytest.raises(ValueError, match="max_body_bytes"):
        fk.serve("api", model="ctr", max_body_bytes=0)
