"""The front-end half of fusionkit's custom widgets: ES modules and CSS that anywidget loads.

They live in the top-level ``widgets/`` folder of the source tree; ``fusionkit/widgets`` links
to it, so a wheel ships them inside the package (``fusionkit/widgets/*.js``, ``*.css``). This
module finds them wherever fusionkit is installed from.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def widgets_dir() -> Path:
    """The folder holding the widgets' ES modules and CSS."""
    for folder in (_PACKAGE / "widgets", _PACKAGE.parent / "widgets"):
        if (folder / "pipeline.js").is_file():
            return folder
    raise FileNotFoundError(
        f"fusionkit's widget assets are missing (looked in {_PACKAGE / 'widgets'}); "
        "reinstall fusionkit")


@cache
def asset(name: str) -> str:
    """The text of one asset, e.g. ``asset("pipeline.js")``."""
    path = widgets_dir() / name
    if not path.is_file():
        known = ", ".join(sorted(p.name for p in widgets_dir().iterdir()))
        raise FileNotFoundError(f"no widget asset {name!r} (there are: {known})")
    return path.read_text(encoding="utf-8")
