"""Online metrics on the dashboard without Ray: the served rows a train stage scored
(``TrainReport.served``) ride in its status row, and become, per served model, the accuracy
and log loss of each version's answers as served, on the card next to the trainer's
prequential accuracy, as a dotted line on the accuracy chart, and in the static snapshot;
nothing of it while no served row has been scored."""

from __future__ import annotations

import math

import pytest

from fusionkit.control.status import summary
from fusionkit.control.table import StageRecord
from fusionkit.notebook.cards import StageCard, online_rows
from fusionkit.notebook.charts import Charts
from fusionkit.notebook.state import ONLINE_MIN_ROWS, DashboardState, Line, online_figures
from fusionkit.notebook.static import snapshot_html
from fusionkit.runtime.reports import TrainReport
from fusionkit.runtime.specs import TrainSpec

ROWS = [{"name": "impressions", "kind": "stream", "status": "running"},
        {"name": "examples", "kind": "join", "status": "running"},
        {"name": "ctr", "kind": "train", "status": "running", "on": "examples"},
        {"name": "ctr-api", "kind": "serve", "status": "running", "on": "ctr"},
        {"name": "served", "kind": "stream", "status": "running"},
        {"name": "served-examples", "kind": "join", "status": "running"},
        {"name": "served-learner", "kind": "train", "status": "running",
         "on": "served-examples"}]
ONLINE = Line("accuracy", "ctr", "ctr online, as served", "dot", True)


def rows(served: list[tuple]) -> list[dict]:
    """The status rows, the served rows on the train stage that learns the served log."""
    return [{**r, "served": served} if r["name"] == "served-learner" else r for r in ROWS]


def test_a_train_stage_status_row_carries_the_served_rows_its_actors_scored():
    rec = StageRecord("served-learner", "train",
                      TrainSpec("served-learner", on="served-examples", model=None, label="y"),
                      created=5.0)
    reports = [TrainReport(stage="served-learner", status="running", kind="train", pid=1,
                           node="n", started=1.0, served=(("ctr", 1, 10, 9, 10, 2.0),)),
               TrainReport(stage="served-learner", status="running", kind="train", pid=2,
                           node="n", started=1.0, index=1, served=(("ctr", 2, 5, 1, 0, 0.0),))]
    row = summary(rec, reports).to_dict()
    assert row["served"] == (("ctr", 1, 10, 9, 10, 2.0), ("ctr", 2, 5, 1, 0, 0.0))
    bare = TrainReport(stage="served-learner", status="running", kind="train", pid=1, node="n",
                       started=1.0)
    assert "served" not in summary(rec, [bare]).to_dict(), "nothing scored: no key"


def test_online_metrics_per_version_sit_on_the_trainers_card():
    state = DashboardState(window=30)
    state.ingest_status(rows([("ctr", 3, 40, 36, 40, 12.0), ("ctr", 4, 60, 30, 60, 42.0),
                              ("ctr", 3, 10, 4, 0, 0.0)]), time=100.0)
    online = state.stages["ctr"].online  # the model's trainer, not the stage that scored
    assert online is not None and online.scored_by == "served-learner"
    assert (online.n, online.correct) == (110, 70)
    assert [(s.version, s.n, s.accuracy) for s in online.versions] == [(3, 50, 0.8), (4, 60, 0.5)]
    assert [s.log_loss for s in online.versions] == pytest.approx([0.3, 0.7])
    assert state.stages["served-learner"].online is None
    assert dict(online_rows(online)) == {"as served": "0.636 of 110",
                                         "v4 as served": "0.500 · loss 0.700 · 60",
                                         "v3 as served": "0.800 · loss 0.300 · 50"}
    card = StageCard("ctr", "train", "#000", lambda *a: None)
    card.update(state.stages["ctr"], "#000")
    assert "v4 as served" in card.stats.value and "0.500 · loss 0.700" in card.stats.value
    assert "as served 0.636 of 110 rows" in snapshot_html(state, "local")


def test_a_model_without_its_trainer_on_the_dashboard_shows_on_the_scoring_stage():
    state = DashboardState(window=30)
    state.ingest_status(rows([("elsewhere", 1, 30, 15, 0, 0.0)]), time=1.0)
    assert state.stages["served-learner"].online.model == "elsewhere"
    assert state.stages["ctr"].online is None


def test_the_stage_that_scored_most_of_a_models_rows_is_the_one_shown():
    f = online_figures({"a": [("ctr", 1, 5, 5, 0, 0.0)], "b": [("ctr", 1, 50, 10, 0, 0.0)]})
    assert f["ctr"].scored_by == "b" and f["ctr"].accuracy == 0.2
    assert math.isnan(f["ctr"].versions[0].log_loss), "no probabilities: no log loss"


def test_the_online_line_plots_the_accuracy_of_the_rows_scored_since_its_last_point():
    state = DashboardState(window=60)
    state.ingest_status(rows([("ctr", 1, 100, 90, 100, 10.0)]), time=100.0)
    state.ingest_status(rows([("ctr", 1, 100, 90, 100, 10.0), ("ctr", 2, 5, 0, 5, 9.0)]),
                        time=101.0)  # fewer than ONLINE_MIN_ROWS new rows: no point yet
    assert 5 < ONLINE_MIN_ROWS
    state.ingest_status(rows([("ctr", 1, 100, 90, 100, 10.0), ("ctr", 2, 100, 20, 100, 90.0)]),
                        time=102.0)  # after a drift: the new rows are mostly wrong
    win = state.lines[ONLINE]
    assert win.t.tolist() == [100.0, 102.0] and win.y.tolist() == [0.9, 0.2]
    # scored again from scratch (the scoring stage defined again): starts over, no dip
    state.ingest_status(rows([("ctr", 1, 30, 30, 0, 0.0)]), time=103.0)
    assert win.y.tolist() == [0.9, 0.2, 1.0]


def test_nothing_online_is_shown_until_a_served_row_is_scored():
    state = DashboardState(window=30)
    state.ingest_status(ROWS, time=1.0)
    state.ingest_status(rows([]), time=2.0)
    assert all(v.online is None for v in state.stages.values())
    assert not state.lines_of("accuracy")
    assert online_rows(None) == []
    card = StageCard("ctr", "train", "#000", lambda *a: None)
    card.update(state.stages["ctr"], "#000")
    assert "as served" not in card.stats.value
    assert "as served" not in snapshot_html(state, "local")


def test_the_online_line_is_drawn_dotted_in_the_trainers_colour_with_its_own_legend():
    state = DashboardState(window=600)
    state.ingest_status(rows([("ctr", 1, 100, 90, 100, 10.0)]), time=state.now)
    charts = Charts()
    charts.view_ready()
    assert charts.render(state)
    trace = next(t for t in charts.figure.data if t.name == "ctr online, as served")
    assert trace.line.dash == "dot" and trace.showlegend
    assert trace.line.color == state.colour("ctr") and list(trace.y) == [0.9]
    assert charts.note("accuracy") == ""
