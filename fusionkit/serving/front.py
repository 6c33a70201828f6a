"""The HTTP front of a serve stage with several replicas: asks another replica when the
one holding a request dies (see :class:`HttpFront`)."""

from __future__ import annotations

import logging
import os
from typing import Any

from fusionkit.runtime.specs import ServeSpec
from fusionkit.serving.inputs import BadRequest
from fusionkit.serving.limits import RETRIES, read_request
from fusionkit.serving.replica import _replica_id

log = logging.getLogger("fusionkit")


class HttpFront:
    """The HTTP way in of a serve stage with several replicas: hands each request to a model
    replica and, if that replica dies holding it, to another one.

    Serve's proxy routes around a dead replica but does not send again a request the replica
    had already accepted, so without a front the one request a dying replica holds fails.
    Predictions change nothing, so asking again is safe. The front holds no model; it costs
    each request one more call between processes. It checks the token and the body's size
    itself, so what it refuses is never read, nor sent on to a replica.

    The front's own replicas are Serve replicas too, behind the same proxy: one that dies
    (a SIGKILL) fails the requests it holds at that moment with the proxy's 500, and nothing
    in fusionkit sits before it to ask again. Holding no model, they rarely die on their own
    (no model to run out of memory with, no user code); a client that must never see a
    failure retries a 500 (predictions are safe to ask again).
    """

    def __init__(self, model: Any, spec: ServeSpec):
        self.model, self.spec, self.name = model, spec, spec.name
        self.retried = 0  # requests asked again because their replica died
        self.replica = _replica_id()

    def info(self) -> dict[str, Any]:
        return {"replica": self.replica, "retried": self.retried, "pid": os.getpid()}

    async def __call__(self, request: Any) -> Any:
        from ray.exceptions import RayActorError
        from starlette.responses import JSONResponse

        try:
            body = await read_request(request, self.spec.token, self.spec.max_body_bytes)
        except BadRequest as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        args = (request.method, request.headers.get("authorization", ""), bytes(body),
                request.url.path)
        for attempt in range(RETRIES + 1):
            try:
                status, payload = await self.model.http.remote(*args)
                return JSONResponse(payload, status_code=status)
            except RayActorError as exc:
                if attempt == RETRIES:
                    log.warning("fusionkit serve %s: no replica answered: %s", self.name, exc)
                else:
                    self.retried += 1
        return JSONResponse({"error": f"serve stage {self.name!r}: every replica asked died "
                                      f"holding the request ({RETRIES + 1} tries)"},
                            status_code=503)
