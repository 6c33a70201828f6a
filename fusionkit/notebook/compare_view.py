"""The dashboard's section for serve stages with canaries or shadows: per stage, its models'
requests, online accuracy, log loss and verdict (a table), over one chart of them side by
side (``CompareCharts``). Empty, and no figure built, while no such stage has scored rows.
"""

from __future__ import annotations

import ipywidgets as w

from fusionkit.notebook.charts import CompareCharts
from fusionkit.notebook.comparing import comparison_table
from fusionkit.notebook.state import DashboardState


class CompareSection:
    """``box`` is what the dashboard lays out; ``update(state)`` brings it up to date."""

    def __init__(self) -> None:
        self.table = w.HTML()
        self.charts: CompareCharts | None = None
        self.box = w.VBox([])
        self.box.add_class("fk-compare-section")
        self.ready_without_view = False  # scripts and tests: no browser draws the figure

    def view_ready(self) -> None:
        """Send chart updates without waiting for a browser view (``Charts.view_ready``)."""
        self.ready_without_view = True
        if self.charts is not None:
            self.charts.view_ready()

    def update(self, state: DashboardState) -> None:
        compared = [v.compare for v in state.stages.values() if v.compare is not None]
        if not compared:
            if self.box.children:
                self.box.children = ()
            return
        if self.charts is None:
            self.charts = CompareCharts()
            if self.ready_without_view:
                self.charts.view_ready()
        table = "".join(comparison_table(c, state.colour) for c in compared)
        if self.table.value != table:
            self.table.value = table
        children = (self.table, self.charts.figure)
        if tuple(self.box.children) != children:
            self.box.children = children
        self.charts.render(state)

    def close(self) -> None:
        self.table.close()
        if self.charts is not None:
            self.charts.figure.close()
        self.box.close()
