"""A load generator in a process of its own: posts one request after another to a URL and
prints, per request, its start (``time.perf_counter``, the same clock in every process of
the machine), its latency, the HTTP status and the model version answered.

Run by the benchmarks (``Load`` in ``serve_latency.py``) so that the client being measured
does not share a Python interpreter with the benchmark's own work (publishing versions,
fetching models), which would slow it by the GIL rather than by the server.

    python benchmarks/_http_load.py URL BODY_JSON
"""

from __future__ import annotations

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
            try:
                r = client.post(url, content=body, headers=headers)
                status, version = r.status_code, r.json().get("version")
            except Exception:
                status, version = -1, None
            dt = time.perf_counter() - t0
            print(f"{t0!r} {dt!r} {status} {version}", flush=True)


if __name__ == "__main__":
    main()
