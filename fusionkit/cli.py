"""The ``fusionkit`` command. ``fusionkit demo`` runs the whole loop on an embedded Ray."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fusionkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run stream -> train -> serve on a drifting synthetic "
                                       "stream, print a summary, write an HTML report")
    demo.add_argument("--seconds", type=float, default=40.0, help="how long to run (default 40)")
    demo.add_argument("--rate", type=float, default=3000.0, help="events per second (default 3000)")
    demo.add_argument("--publish-every", default="200ms", help="publish interval (default 200ms)")
    demo.add_argument("--replicas", type=int, default=1, help="serve replicas (default 1)")
    demo.add_argument("--qps", type=float, default=50.0,
                      help="requests per second of the load generator (default 50)")
    demo.add_argument("--report", default="fusionkit-report.html",
                      help="where to write the HTML report (default fusionkit-report.html)")
    demo.add_argument("--no-serve", action="store_true", help="stream and train only")
    demo.add_argument("--port", type=int, default=8000,
                      help="HTTP port of the serve stage on 127.0.0.1 (default 8000)")
    sub.add_parser("worker-path", help="print the PYTHONPATH for `ray start` on a cluster's "
                                       "nodes: Ray workers then start ~1 s faster (see docs)")
    args = parser.parse_args(argv)
    if args.command == "worker-path":
        from fusionkit.connect import worker_pythonpath

        print(worker_pythonpath())
        return 0
    if args.command == "demo":
        from fusionkit.demo import run_demo

        return run_demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
