"""A serve stage's models side by side on the dashboard, without Ray: the comparison sums of
the train stage that learns the served log (``TrainReport.compared``) and the serve stage's
routing ride in their status rows, and become ``fk.compare``'s figures per model (requests,
online accuracy, log loss, verdict), a line per model on one chart over time, a table above
it, and the same in the static snapshot; nothing of it for a serve stage with one model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fusionkit.control.status import summary
from fusionkit.control.table import StageRecord
from fusionkit.notebook.charts import Charts
from fusionkit.notebook.compare_view import CompareSection
from fusionkit.notebook.state import DashboardState
from fusionkit.notebook.static import snapshot_html
from fusionkit.runtime.reports import ActorReport, TrainReport
from fusionkit.runtime.specs import ServeSpec, TrainSpec
from fusionkit.training.comparison import Z95, Comparison

API, MAIN, TREE, LEARN = "ctr-api", "ctr", "ctr-tree", "served-learner"


def served(n: int, seed: int = 3) -> pd.DataFrame:
    """``n`` requests answered by the primary and by a shadow, with their labels: the
    primary right 80% of the time, the shadow 60%, both with probabilities."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    out = []
    for model, role, right in ((MAIN, "primary", 0.8), (TREE, "shadow", 0.6)):
        ok = rng.random(n) < right
        pred = np.where(ok, label, 1 - label)
        proba = np.clip(np.where(pred == 1, 0.7, 0.3) + rng.normal(0, 0.1, n), 0.02, 0.98)
        out.append(pd.DataFrame({"request_id": [f"r{i}" for i in range(n)], "label": label,
                                 "_model": model, "_role": role, "_prediction": pred,
                                 "_proba": proba}))
    return pd.concat(out, ignore_index=True)


def train_row(rows: pd.DataFrame) -> dict:
    """The status row of the train stage on the join, its two actors each having scored the
    requests of its key partition (as the controller's ``summary`` makes it)."""
    reports = []
    for index, part in enumerate((rows[rows["request_id"].str[-1] < "5"],
                                  rows[rows["request_id"].str[-1] >= "5"])):
        c = Comparison("label", positive=1)
        c.add(part)
        reports.append(TrainReport(stage=LEARN, status="running", kind="train", pid=index,
                                   node="n", started=1.0, index=index, compared=c.rows()))
    rec = StageRecord(LEARN, "train", TrainSpec(LEARN, on="examples", model=None, label="label"),
                      created=1.0)
    return summary(rec, reports).to_dict()


def serve_row(**routing) -> dict:
    rec = StageRecord(API, "serve", ServeSpec(API, model=MAIN, **routing), created=1.0)
    return summary(rec, [ActorReport(stage=API, status="running")]).to_dict()


def status(rows: pd.DataFrame, **routing) -> list[dict]:
    return [{"name": MAIN, "kind": "train", "status": "running"},
            {"name": TREE, "kind": "train", "status": "running"},
            serve_row(**(routing or {"shadow": (TREE,)})), train_row(rows)]


def test_the_status_rows_carry_the_comparison_sums_and_a_routing_of_several_models():
    rows = status(served(40))
    api, learn = rows[2], rows[3]
    assert api["routing"] == {"primary": MAIN, "canary": {}, "shadow": [TREE], "sticky": None}
    assert len(learn["compared"]) == 2, "one per actor, summed where they are read"
    assert sum(c["models"][MAIN][0] for c in learn["compared"]) == 40
    assert "routing" not in serve_row(canary=(), shadow=()), "one model: no routing"
    bare = TrainReport(stage=LEARN, status="running", kind="train", pid=1, node="n", started=1.0)
    rec = StageRecord(LEARN, "train", TrainSpec(LEARN, on="x", model=None, label="y"), created=1)
    assert "compared" not in summary(rec, [bare]).to_dict(), "nothing compared: no key"


def test_the_figures_are_fk_compares_and_equal_pandas_over_the_served_rows():
    rows = served(400)
    state = DashboardState(window=60)
    state.ingest_status(status(rows), time=100.0)
    figures = state.stages[API].compare
    assert figures is not None and figures.scored_by == LEARN
    assert [(s.model, s.role) for s in figures.models] == [(MAIN, "primary"), (TREE, "shadow")]
    p = rows["_proba"].clip(1e-15, 1 - 1e-15)
    rows = rows.assign(correct=(rows["_prediction"] == rows["label"]).astype(int),
                       loss=-np.log(np.where(rows["label"] == 1, p, 1 - p)))
    g = rows.groupby("_model")
    got = {s.model: s for s in figures.models}
    assert {m: s.requests for m, s in got.items()} == g.size().to_dict()
    for model in (MAIN, TREE):
        assert got[model].accuracy == pytest.approx(g["correct"].mean()[model])
        assert got[model].log_loss == pytest.approx(g["loss"].mean()[model])
    d = rows.pivot(index="request_id", columns="_model", values="loss")
    d = d[TREE] - d[MAIN]
    half = Z95 * d.std(ddof=1) / math.sqrt(len(d))
    assert got[TREE].verdict == (
        f"{TREE} is worse than {MAIN}: log loss {d.mean():+.4f} (95% CI "
        f"{d.mean() - half:.4f} to {d.mean() + half:.4f}), 400 paired requests")
    assert got[MAIN].verdict == "", "the primary is what the others are judged against"
    for stage in (MAIN, TREE, LEARN):
        assert state.stages[stage].compare is None


def test_a_line_per_model_gains_a_point_each_time_more_of_its_rows_were_scored():
    rows = served(400)
    first = rows[rows["request_id"].str[1:].astype(int) < 200]
    state = DashboardState(window=60)
    state.ingest_status(status(first), time=100.0)
    before = {s.model: s for s in state.stages[API].compare.models}
    state.ingest_status(status(first), time=101.0)  # nothing new scored: no point
    state.ingest_status(status(rows), time=102.0)
    after = {s.model: s for s in state.stages[API].compare.models}
    lines = {(line.chart, line.stage): (line, w) for line, w in state.lines.items()
             if line.chart.startswith("compare_")}
    assert set(lines) == {(c, m) for c in ("compare_accuracy", "compare_log_loss")
                          for m in (MAIN, TREE)}
    for model in (MAIN, TREE):
        line, acc = lines[("compare_accuracy", model)]
        assert line.label == f"{API}: {model} ({before[model].role})"
        assert acc.t.tolist() == [100.0, 102.0]
        assert acc.y.tolist() == [before[model].accuracy, after[model].accuracy]
        loss = lines[("compare_log_loss", model)][1]
        assert loss.y.tolist() == [before[model].log_loss, after[model].log_loss]
        assert state.colour(line.stage) == state.colour(model), "the model's trainer's colour"


def test_the_models_share_one_chart_under_a_table_of_their_figures():
    state = DashboardState(window=600)
    state.ingest_status(status(served(100)), time=state.now - 1)
    state.ingest_status(status(served(200)), time=state.now)
    section = CompareSection()
    section.view_ready()
    section.update(state)
    assert section.box.children == (section.table, section.charts.figure)
    traces = {t.name: t for t in section.charts.figure.data if t.showlegend}
    assert set(traces) == {MAIN, TREE}, "one legend entry per model, its two panels grouped"
    assert traces[TREE].line.color == state.colour(TREE)
    acc = [t for t in section.charts.figure.data if t.legendgroup == TREE]
    assert len(acc) == 2 and section.charts.note("compare_log_loss") == ""
    figures = {s.model: s for s in state.stages[API].compare.models}
    assert list(acc[0].y)[-1] == figures[TREE].accuracy and len(acc[0].y) == 2
    assert "200" in section.table.value and figures[TREE].verdict in section.table.value
    html = snapshot_html(state, "local")
    assert "models compared on the same traffic" in html and figures[TREE].verdict in html
    compared = html.split("models compared")[1]
    assert "accuracy over time" in compared and compared.count("<svg") == 2, \
        "a sparkline of each model's accuracy"
    charts = Charts()
    charts.view_ready()
    charts.render(state)
    assert not [t for t in charts.figure.data if t.legendgroup in (MAIN, TREE)], \
        "the six panels draw none of it"
    section.close()


def test_a_canary_is_compared_unpaired_on_the_rows_it_answered():
    rows = served(300)
    canary = rows[(rows["_model"] == MAIN) & (rows["request_id"].str[-1] < "7")]
    canary = pd.concat([canary, rows[(rows["_model"] == TREE)
                                     & (rows["request_id"].str[-1] >= "7")]])
    canary["_role"] = np.where(canary["_model"] == MAIN, "primary", "canary")
    state = DashboardState(window=60)
    state.ingest_status(status(canary, canary=((TREE, 0.3),)), time=1.0)
    got = {s.model: s for s in state.stages[API].compare.models}
    assert got[TREE].role == "canary" and got[TREE].requests == (canary["_model"] == TREE).sum()
    assert "unpaired, Welch interval" in got[TREE].verdict


def test_a_serve_stage_with_one_model_shows_nothing_new():
    state = DashboardState(window=60)
    rows = status(served(200), canary=(), shadow=())  # the comparison rows of before remain
    state.ingest_status(rows, time=1.0)
    assert all(v.compare is None for v in state.stages.values())
    assert not state.lines_of("compare_accuracy") and not state.lines_of("compare_log_loss")
    section = CompareSection()
    section.update(state)
    assert section.box.children == () and section.charts is None, "no figure built"
    assert "models compared" not in snapshot_html(state, "local")


def test_nothing_is_shown_until_a_row_of_the_models_is_scored():
    state = DashboardState(window=60)
    rows = status(served(10))
    rows[3] = {k: v for k, v in rows[3].items() if k != "compared"}
    state.ingest_status(rows, time=1.0)
    assert state.stages[API].compare is None
    assert not state.lines_of("compare_accuracy")
