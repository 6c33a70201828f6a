"""What ``--source`` of ``%%fusion stream`` names: synthetic, a notebook variable (a
DataFrame or a fusionkit source), a .csv/.parquet file, or a broker URL (``redis://``,
``kafka://``) whose query parameters become the source's options.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fusionkit._suggest import did_you_mean
from fusionkit.notebook.namespace import is_source_data
from fusionkit.notebook.parsing import HINT, FusionUsageError

__all__ = ["SOURCE_KINDS", "connector", "make_source"]

SOURCE_KINDS = "synthetic, a DataFrame or source variable, a .csv/.parquet file, or a URL"


def make_source(magics: Any, args: argparse.Namespace) -> Any:
    """The source ``--source`` names, paced at ``--rate``."""
    import fusionkit as fk

    spec = args.source
    explicit_rate = hasattr(args, "rate")
    rate = args.rate if explicit_rate else (magics.rate or None)
    if args.seed is not None and spec != "synthetic":
        raise FusionUsageError("--seed applies to --source synthetic only")
    if spec == "synthetic":
        options = {"seed": args.seed} if args.seed is not None else {}
        return fk.sources.synthetic(args.name, rate=rate, **options)
    ns = magics.shell.user_ns
    if spec.isidentifier() and spec in ns:
        value = ns[spec]
        if isinstance(value, fk.sources.Source):
            if explicit_rate:
                raise FusionUsageError(f"--rate does not apply to --source {spec}: a source "
                                       f"object has its own rate (set it where {spec} is made)")
            return value
        if not is_source_data(value):
            raise FusionUsageError(f"--source {spec}: {spec!r} is a {type(value).__name__}, "
                                   f"not a DataFrame or a fusionkit source")
        return fk.sources.replay(value, rate=rate)
    if "://" in spec:
        return connector(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return fk.sources.replay(str(path.resolve()), rate=rate)
    candidates = ["synthetic"] + [k for k, v in ns.items()
                                  if not k.startswith("_") and is_source_data(v)]
    raise FusionUsageError(f"--source {spec!r} is not {SOURCE_KINDS} "
                           f"(no such variable or file){did_you_mean(spec, candidates, HINT)}")


def connector(url: str) -> Any:
    """A broker source from a URL: ``redis://host:port/db?stream=events&group=g`` or
    ``kafka://host:port/topic?group=g``; query parameters become the source's options."""
    import fusionkit.sources as sources

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options: dict[str, Any] = {k: int(v) if v.isdigit() else v
                               for k, v in parse_qsl(parts.query)}
    factory = getattr(sources, {"rediss": "redis"}.get(scheme, scheme), None)
    if factory is None or scheme not in ("redis", "rediss", "kafka"):
        raise FusionUsageError(f"--source {url}: no connector for {scheme}:// in this "
                               f"installation of fusionkit (sources: {SOURCE_KINDS})")
    if scheme == "kafka":
        topic = parts.path.strip("/")
        if topic:
            options.setdefault("topic", topic)
        return factory(parts.netloc, **options)
    return factory(parts._replace(query="").geturl(), **options)
