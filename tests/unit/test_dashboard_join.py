"""The dashboard's join panel without Ray: a join stage's reports (``fk.infos``) become its
counts, their rates and its label delays, on its card, in the static snapshot and in the
pipeline view's layout."""

from __future__ import annotations

import json
import math
import shutil
import subprocess

import pytest

from fusionkit._widgets import asset
from fusionkit.notebook.cards import Cards, StageCard
from fusionkit.notebook.state import DashboardState, join_figures
from fusionkit.notebook.static import snapshot_html

ROWS = [{"name": "impressions", "kind": "stream", "status": "running"},
        {"name": "clicks", "kind": "stream", "status": "running"},
        {"name": "examples", "kind": "join", "status": "running",
         "on": "impressions + clicks"},
        {"name": "ctr", "kind": "train", "status": "running", "on": "examples"}]


def report(**counts) -> dict:
    """A join actor's report as ``fk.infos`` gives it (the fields the panel reads, and some
    it does not)."""
    base = {"stage": "examples", "index": 0, "status": "running", "kind": "join",
            "pending": 0, "joined": 0, "timed_out": 0, "late": 0, "orphans": 0,
            "lefts": 0, "rights": 0, "watermark": 12.5, "ended": (),
            "label_delay_p50": math.nan, "label_delay_p99": math.nan}
    return {**base, **counts}


def joined_state() -> DashboardState:
    state = DashboardState(window=30)
    state.ingest_status(ROWS)
    state.ingest_join("examples", [report(pending=40, joined=100, timed_out=300, lefts=440,
                                          rights=103, late=3)], time=100.0)
    state.ingest_join("examples", [report(pending=25, joined=160, timed_out=420, late=5,
                                          orphans=2, lefts=605, rights=167,
                                          label_delay_p50=0.5, label_delay_p99=1.75)],
                      time=102.0)
    return state


def test_a_join_stage_has_its_counts_rates_and_label_delays():
    view = joined_state().stages["examples"]
    f = view.join
    assert {k: f.counts[k] for k in ("pending", "joined", "timed_out", "late", "orphans")} == \
        {"pending": 25, "joined": 160, "timed_out": 420, "late": 5, "orphans": 2}
    assert f.rates == {"joined": 30.0, "timed_out": 60.0, "late": 1.0, "orphans": 1.0}
    assert (f.label_delay_p50, f.label_delay_p99) == (0.5, 1.75)
    # the counts add up: every left event is pending or decided, every right one used or not
    assert f.counts["pending"] + f.counts["joined"] + f.counts["timed_out"] == f.counts["lefts"]
    assert f.counts["joined"] + f.counts["late"] + f.counts["orphans"] == f.counts["rights"]


def test_first_reports_have_counts_but_no_rate_yet_and_no_delay_before_a_match():
    state = DashboardState(window=30)
    state.ingest_status(ROWS)
    state.ingest_join("examples", [report(timed_out=7)], time=5.0)
    f = state.stages["examples"].join
    assert f.counts["timed_out"] == 7 and f.rates == {}
    assert math.isnan(f.label_delay_p50) and math.isnan(f.label_delay_p99)
    state.ingest_join("ctr", [report(joined=9)], time=6.0)  # not a join: ignored
    assert state.stages["ctr"].join is None


def test_counts_summed_over_actors_and_a_restarted_join_has_no_negative_rate():
    a = join_figures([report(joined=10, label_delay_p50=0.2, label_delay_p99=1.0),
                      report(joined=5, label_delay_p50=0.4, label_delay_p99=0.9)], 10.0)
    assert a.counts["joined"] == 15 and (a.label_delay_p50, a.label_delay_p99) == (0.4, 1.0)
    b = join_figures([report(joined=3)], 11.0, a)  # defined again: its counts start over
    assert b.counts["joined"] == 3 and b.rates["joined"] == 0.0
    c = join_figures([report(joined=13)], 11.0, b)  # no time passed: no rate
    assert c.rates == {}


def test_the_join_card_is_its_panel():
    state = joined_state()
    card = StageCard("examples", "join", "#000", lambda *a: None)
    card.update(state.stages["examples"], "#000")
    html = card.stats.value
    for label, value in (("pending", "25"), ("joined", "160 · 30/s"),
                         ("timed out", "420 · 60/s"), ("late", "5 · 1/s"),
                         ("orphans", "2 · 1/s"), ("label delay p50 / p99", "0.50 s / 1.75 s")):
        assert f"<td>{label}</td><td class='fk-v'>{value}</td>" in html, (label, html)
    assert "replicas" not in html and "latency p99" not in html, "not a serve stage's card"
    assert card.plus.disabled and card.minus.disabled, "a join runs one actor: no scaling"
    assert not card.pause.disabled


def test_a_join_card_before_its_first_report_shows_dashes():
    state = DashboardState(window=30)
    state.ingest_status(ROWS)
    card = StageCard("examples", "join", "#000", lambda *a: None)
    card.update(state.stages["examples"], "#000")
    assert "<td>joined</td><td class='fk-v'>–</td>" in card.stats.value


def test_cards_run_stream_join_train():
    state = joined_state()
    cards = Cards(lambda *a: None)
    cards.update(state.stages, state.colour)
    names = [next(n for n, c in cards.cards.items() if c.box is b) for b in cards.box.children]
    assert names == ["clicks", "impressions", "examples", "ctr"]
    cards.close()


def test_the_static_snapshot_has_the_join_counts():
    html = snapshot_html(joined_state(), "127.0.0.1:6379")
    assert ("pending 25, joined 160, timed out 420, late 5, orphans 2; "
            "label delay p50 0.50 s, p99 1.75 s") in html


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the view's module")
def test_the_pipeline_view_places_a_join_between_its_inputs_and_its_train_stage(tmp_path):
    """The view's own ``layout`` (its ES module, run by node): a join column only when there
    is a join, an edge from each of its inputs, and one from it to the train stage."""
    module = tmp_path / "pipeline.mjs"
    module.write_text(asset("pipeline.js"))
    stages = [{**row, "color": "#000"} for row in ROWS]
    script = (f"import {{ layout }} from {json.dumps(str(module))};\n"
              f"const out = (s) => {{ const l = layout(s); return {{ columns: l.columns, "
              f"edges: l.edges.map((e) => [e.from, e.to]), nodes: l.nodes.length }}; }};\n"
              f"console.log(JSON.stringify([out({json.dumps(stages)}), "
              f"out({json.dumps(stages[:2])})]));")
    proc = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    with_join, without = json.loads(proc.stdout)
    assert with_join["columns"] == ["source", "stream", "join", "train", "serve"]
    assert sorted(map(tuple, with_join["edges"])) == sorted([
        ("source:impressions", "impressions"), ("source:clicks", "clicks"),
        ("impressions", "examples"), ("clicks", "examples"), ("examples", "ctr")])
    assert with_join["nodes"] == 6
    assert "join" not in without["columns"]
