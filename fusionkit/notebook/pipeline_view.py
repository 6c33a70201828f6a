"""The pipeline view: a custom anywidget drawing source → stream → train → serve.

Its ES module and CSS are ``widgets/pipeline.js`` and ``widgets/pipeline.css``. The kernel
sets ``stages`` (one dict per stage: name, kind, status, rate, events, parallelism, the stage
it reads from, its colour); the view redraws the graph only when stages come or go and
otherwise updates labels in place. While a view is on screen it sends ``{"type": "alive"}``
every two seconds, and ``{"type": "gone"}`` when it is removed, so the dashboard can stop
updating when no one can see it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anywidget
import traitlets

from fusionkit._widgets import asset


class PipelineView(anywidget.AnyWidget):
    """Stages as boxes in columns by kind, linked by the data that flows between them."""

    _esm = asset("pipeline.js")
    _css = asset("pipeline.css")
    stages = traitlets.List(traitlets.Dict()).tag(sync=True)

    def __init__(self, on_heartbeat: Callable[[str], None] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._on_heartbeat = on_heartbeat
        self.on_msg(self._message)

    def _message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") in ("alive", "gone") \
                and self._on_heartbeat is not None:
            self._on_heartbeat(content["type"])
