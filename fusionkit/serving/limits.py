"""What a serve stage checks before it reads a request: the token, then the body's size;
and the warning for a stage that anyone on the network can reach.

The order is the point. A caller without the token costs one header comparison (in constant
time, so the comparison does not leak how much of a guess was right); a body larger than
the stage's cap is refused from its ``Content-Length`` before a byte of it is read, and a
body without one stops being read as soon as it passes the cap. Then the rows are counted
before anything is built from them (``inputs.check_rows``). Ray-free, tested without Ray.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import warnings
from collections.abc import AsyncIterable
from typing import Any

from fusionkit.serving.inputs import BadRequest

RETRIES = 3  # a prediction changes nothing, so one lost with its replica is asked again

MAX_BODY_BYTES = 8 * 2**20
"""Default cap on a request body: 8 MiB.

It holds ``max_rows`` (10,000 by default) rows of up to ~800 bytes of JSON each, i.e. some
50 features; a typical row of 4 features is ~60 bytes. The cap bounds what one request
can cost a replica: parsing JSON takes several times the body's size (measured: 8 MiB of
typical rows, 50 MB while parsing; 8 MiB of empty objects, the worst shape, 200 MB), so
set it lower for replicas with little memory, or higher for wide rows.
"""


class ExposedServeWarning(UserWarning):
    """A serve stage answers on a non-loopback address without a token."""


def token_ok(authorization: str, token: str | None) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (always, without a
    token), compared in constant time.

    Examples
    --------
    >>> token_ok("Bearer s3cret", "s3cret"), token_ok("Bearer s3cre", "s3cret")
    (True, False)
    >>> token_ok("", None)
    True
    """
    if token is None:
        return True
    return hmac.compare_digest(authorization.encode("utf-8", "surrogateescape"),
                               f"Bearer {token}".encode("utf-8", "surrogateescape"))


def check_length(content_length: str | None, max_bytes: int) -> int | None:
    """The body's declared length (``None`` without a ``Content-Length``); a length over
    ``max_bytes`` is refused (413) before the body is read, a malformed one too (400).

    Examples
    --------
    >>> check_length("120", 1000), check_length(None, 1000)
    (120, None)
    >>> check_length("50000000", 1000)
    Traceback (most recent call last):
    ...
    fusionkit.serving.inputs.BadRequest: request body too large: 50000000 bytes > 1000 allowed
    """
    if content_length is None:
        return None
    text = content_length.strip()
    if not text.isdigit():  # also refuses "-1", "+5" and "1e9"
        raise BadRequest(400, f"Content-Length is not a number of bytes: {content_length!r}"[:120])
    length = int(text)
    if length > max_bytes:
        raise BadRequest(413, f"request body too large: {length} bytes > {max_bytes} allowed")
    return length


async def read_capped(chunks: AsyncIterable[bytes], max_bytes: int) -> bytearray:
    """The body from its chunks, read no further than the first chunk that passes
    ``max_bytes`` (413): a body without a ``Content-Length`` (chunked) is bounded too."""
    body = bytearray()
    async for chunk in chunks:
        if len(body) + len(chunk) > max_bytes:
            raise BadRequest(413, f"request body too large: over {max_bytes} bytes allowed")
        body += chunk
    return body


async def read_request(request: Any, token: str | None, max_bytes: int) -> bytearray:
    """The body of an HTTP request (a Starlette ``Request``), once the token is right and
    the body within ``max_bytes``; ``BadRequest`` (401, 413, 400) otherwise, with the body
    unread. Only a POST's body is read: the others have no use for one."""
    from starlette.requests import ClientDisconnect

    try:
        if not token_ok(request.headers.get("authorization", ""), token):
            raise BadRequest(401, "missing or wrong bearer token")
        if request.method != "POST":
            return bytearray()
        check_length(request.headers.get("content-length"), max_bytes)
        return await read_capped(request.stream(), max_bytes)
    except ClientDisconnect:
        raise BadRequest(400, "the client went away before sending its whole body") from None
    except BadRequest:
        stop_receiving(request.receive)
        raise


def stop_receiving(receive: Any) -> None:
    """Stop Ray Serve fetching the body of a refused request.

    A Serve replica fetches a request's body from the HTTP proxy in a task of its own,
    ahead of the reader and to the body's end (``ASGIReceiveProxy.fetch_until_disconnect``,
    cancelled only once the request is answered). Measured with a chunked 50 MB body
    refused at 2 MiB and an answer that took 0.5 s: without this, 4 to 7 more batches of
    3 to 27 MB came in (up to 121 MiB more replica memory); with it, none after the one
    in flight. Finds that task by its ``receive``; does nothing outside Serve.
    """
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        frame = getattr(coro, "cr_frame", None)
        if getattr(coro, "__name__", "") == "fetch_until_disconnect" and frame is not None \
                and frame.f_locals.get("self") is receive:
            task.cancel()


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (``localhost``, 127.0.0.0/8,
    ``::1``). Any other name counts as reachable from the network.

    Examples
    --------
    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(name: str, host: str, token: str | None, stacklevel: int = 3) -> None:
    """Warn (``ExposedServeWarning``) when serve stage ``name`` would answer anyone who can
    reach ``host`` on the network: a non-loopback address and no token."""
    if token is None and not is_loopback(host):
        warnings.warn(
            f"serve stage {name!r} listens on {host} without a token: anyone who can reach "
            f"this machine can ask it for predictions; pass token=... (clients then send "
            f"'Authorization: Bearer <token>'), or host='127.0.0.1'",
            ExposedServeWarning, stacklevel=stacklevel)
