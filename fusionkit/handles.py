"""What defining a stage returns: a handle to look at it and operate it."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from fusionkit.runtime.specs import ServeSpec, StreamSpec, TrainSpec


class StageHandle:
    """A stage of the pipeline, by name. Cheap: every call asks the controller.

    Defining a stage returns one; ``fusionkit.stage(name)`` gives one for a stage defined
    elsewhere (another cell, notebook or process connected to the same cluster).

    >>> h = StageHandle("clicks", "stream")
    >>> h
    <fusionkit stream stage 'clicks'>

    Connected, ``h.spec.batch_size`` and ``h.actor_ids()`` ask the controller (``500`` and
    one id for a stream stage defined with the defaults).
    """

    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind

    def __repr__(self) -> str:
        return f"<fusionkit {self.kind} stage {self.name!r}>"

    # -- looking ---------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        from fusionkit.stages import status

        return status().loc[self.name].to_dict()

    @property
    def status(self) -> str:
        return self.info()["status"]

    def metrics(self, since: float | None = None) -> pd.DataFrame:
        from fusionkit.stages import metrics

        return metrics(self.name, since)

    def infos(self) -> list[dict[str, Any]]:
        """What each of the stage's actors reports about itself (``fusionkit.infos``)."""
        from fusionkit.stages import infos

        return infos(self.name)

    @property
    def spec(self) -> StreamSpec | TrainSpec | ServeSpec:
        """The stage's definition as the controller holds it (``fusionkit.stages.spec``)."""
        from fusionkit.stages import spec

        return spec(self.name)

    def actor_ids(self) -> list[str]:
        """The Ray actor ids of the stage's actors (``fusionkit.stages.actor_ids``)."""
        from fusionkit.stages import actor_ids

        return actor_ids(self.name)

    def dead_letters(self, limit: int | None = None) -> pd.DataFrame:
        from fusionkit.stages import dead_letters

        return dead_letters(self.name, limit)

    def peek(self, n: int = 5) -> pd.DataFrame | None:
        from fusionkit.stages import peek

        return peek(self.name, n)

    def check(self) -> None:
        from fusionkit.stages import check

        check(self.name)

    # -- operating -------------------------------------------------------------------------
    def stop(self) -> None:
        from fusionkit.stages import stop

        stop(self.name)

    def pause(self) -> str:
        from fusionkit.stages import pause

        return pause(self.name)

    def resume(self) -> str:
        from fusionkit.stages import resume

        return resume(self.name)

    def scale(self, n: int) -> None:
        from fusionkit.stages import scale

        scale(self.name, n)

    # -- train stages ----------------------------------------------------------------------
    def models(self) -> pd.DataFrame:
        from fusionkit.models import models

        return models(self.name)

    def rollback(self, version: int) -> None:
        from fusionkit.models import rollback

        rollback(self.name, version)

    def pin(self, version: int) -> None:
        from fusionkit.models import pin

        pin(self.name, version)

    def unpin(self) -> None:
        from fusionkit.models import unpin

        unpin(self.name)

    # -- serve stages ----------------------------------------------------------------------
    def predict(self, rows: Any) -> pd.DataFrame:
        from fusionkit.serving.client import predict

        return predict(self.name, rows)

    # -- display ---------------------------------------------------------------------------
    def _repr_html_(self) -> str:
        try:
            row = self.info()
        except Exception as exc:  # a static snapshot must not fail the cell that made it
            return f"<b>{html.escape(self.name)}</b>: {html.escape(str(exc))}"
        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th>"
                        f"<td>{html.escape(str(v))}</td></tr>"
                        for k, v in row.items() if k != "traceback")
        return (f"<div class='fusionkit-stage'><b>fusionkit {html.escape(self.kind)} stage "
                f"{html.escape(self.name)}</b><table>{cells}</table></div>")
