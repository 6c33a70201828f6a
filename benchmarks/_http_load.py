"""A load generator in a process of its own: posts one request after another to a URL and
prints, per request, its start (``time.perf_counter``, the same clock in every process of
the machine), its latency, the HTTP status and the model version answered; for a request
that failed (status -1: no answer, or an answer that is not the JSON expected), a fifth
field: what went wrong, as a JSON string (the exception, or the status and the body's start).

Run by the benchmarks (``Load`` in ``serve_latency.py``) so that the client being measured
does not share a Python interpreter with the benchmark's own work (publishing versions,
fetching models), which would slow it by the GIL rather than by the server.

    python benchmarks/_http_load.py URL BODY_JSON
"""

from __future__ import annotations

import json
import signal
import sys
import time

import httpx


def main() -> None:
    url, body = sys.argv[1], sys.argv[2].encode()
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=60.0) as client:
        while not stop:
            t0 = time.perf_counter()
            r, detail = None, ""
            try:
                r = client.post(url, content=body, headers=headers)
                status, version = r.status_code, r.json().get("version")
                if status != 200:
                    detail = f"HTTP {status}: {r.text[:300]}"
            except Exception as exc:
                status, version = -1, None
                detail = f"{type(exc).__name__}: {exc}"[:300]
                if r is not None:
                    detail = f"HTTP {r.status_code}, body {r.text[:300]!r}: {detail}"
            dt = time.perf_counter() - t0
            tail = f" {json.dumps(detail)}" if detail else ""
            print(f"{t0!r} {dt!r} {status} {version}{tail}", flush=True)


if __name__ == "__main__":
    main()
