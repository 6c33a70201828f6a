"""The ``%fusion`` magic driven through a real IPython shell, on the session's local Ray.

Every cell goes through ``InteractiveShell.run_cell`` and its error is re-raised
(``result.raise_error()``), so the tests see exactly what a notebook user would.
"""

from __future__ import annotations

import socket
import time
import warnings

import pytest
from conftest import wait_for
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import fusionkit as fk
from fusionkit.errors import FusionError, StageFailedError, StageNotFoundError
from fusionkit.notebook import live
from fusionkit.notebook.magics import FusionMagics, apply_settings, find_pyproject, project_settings
from fusionkit.notebook.parsing import CellError, FusionUsageError
from fusionkit.notebook.results import LiveStage, StatusView

WIDGET = "application/vnd.jupyter.widget-view+json"

STREAM_CELL = '''%%fusion stream clicks --rate 5000 --batch 250 --seed 3 -o clicks_stage
def featurize(df):
    df["evening"] = (df["hour"] >= 18).astype("int64")
    return df
'''

TRAIN_CELL = '''%%fusion train ctr --on clicks --label clicked --publish-every 300ms -o ctr_stage
from river import linear_model, preprocessing
from fusionkit.demo import ctr_model
model = ctr_model()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shell(fk_session):
    sh = InteractiveShell.instance()
    run(sh, "%load_ext fusionkit")
    return sh


@pytest.fixture()
def ip(shell, fk):
    """The shell, with a clean pipeline (the ``fk`` fixture stops every stage after)."""
    yield shell
    for view in live.live_views():
        view.close()


def run(shell, code: str):
    """Run a cell like a notebook does; raise what the cell raised; return its value."""
    result = shell.run_cell(code)
    result.raise_error()
    return result.result


def timed(shell, code: str) -> tuple[object, float]:
    t0 = time.perf_counter()
    value = run(shell, code)
    return value, time.perf_counter() - t0


def actor_counts() -> tuple[int, int]:
    stages = fk.controller_info().stages
    return len(stages), sum(len(v) for v in stages.values())


def events(name: str) -> int:
    return int(fk.status().loc[name, "events"])


# -- connecting, help, settings ----------------------------------------------------------------

def test_connect_returns_the_connection(ip):
    conn = run(ip, "%fusion connect")
    assert conn is fk.connect()
    assert "<b>fusionkit</b> connected" in conn._repr_html_()


def test_help_explains_every_sub_command_with_an_example(ip, capsys):
    text = repr(run(ip, "%fusion --help"))
    doc = FusionMagics.fusion.__doc__
    for sub in ("connect", "stream", "train", "serve", "status", "stop", "pause", "resume",
                "scale", "rollback", "pin", "unpin", "dashboard", "wait", "check", "help"):
        assert f"\n{sub}: " in text and f"\n{sub}: " in doc
    assert text.count("example:") >= 16
    one = repr(run(ip, "%fusion stream --help"))
    assert one.startswith("usage: %%fusion stream NAME [--source SOURCE]")
    assert "Example:" in one and "def featurize(df):" in one
    ip.run_cell("%fusion?")  # the pager prints the docstring in a plain shell
    assert "%%fusion train NAME --on STREAM" in capsys.readouterr().out


def test_the_help_examples_of_stream_and_train_run_as_given(ip):
    from fusionkit.notebook.commands import COMMANDS

    run(ip, COMMANDS["stream"].example)
    run(ip, COMMANDS["train"].example)  # a numbers-only model: the example names its features
    assert fk.status().loc["ctr", "kind"] == "train"


def test_config_round_trip(ip, capsys, caplog):
    run(ip, "%config FusionMagics")
    listing = capsys.readouterr().out
    for trait in ("rate", "batch_size", "publish_every", "serve_port", "refresh_rate"):
        assert f"FusionMagics.{trait}" in listing
    before = run(ip, "%config FusionMagics.batch_size")
    try:
        run(ip, "%config FusionMagics.batch_size = 123")
        assert run(ip, "%config FusionMagics.batch_size") == 123
        run(ip, "%fusion stream cfg --rate 1000")
        assert fk.stage("cfg").spec.batch_size == 123
        run(ip, "%config FusionMagics.batch_size = 0")  # refused: %config logs the error
        assert "batch_size must be at least 1" in caplog.text
        assert run(ip, "%config FusionMagics.batch_size") == 123
        run(ip, "%config FusionMagics.refresh_rate = 4")
        assert live._poller.rate == 4
    finally:
        run(ip, f"%config FusionMagics.batch_size = {before}")
        run(ip, "%config FusionMagics.refresh_rate = 2.0")


def test_pyproject_settings(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.fusionkit]\nrate = 1234\nbatch-size = 50\n'
        'publish_every = "250ms"\n')
    deep = tmp_path / "notebooks" / "sub"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    path = find_pyproject()
    assert path == tmp_path / "pyproject.toml"
    magics = FusionMagics()
    apply_settings(magics, project_settings(path), str(path))
    assert (magics.rate, magics.batch_size, magics.publish_every) == (1234, 50, "250ms")
    with pytest.raises(FusionUsageError, match=r"pyproject.toml: \[tool.fusionkit\] rate = -5"):
        apply_settings(magics, {"rate": -5}, str(path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_settings(magics, {"batch_sise": 10}, str(path))
    assert "did you mean batch_size?" in str(caught[0].message)


def test_pyproject_settings_reach_the_loaded_magic(ip, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.fusionkit]\nserve_replicas = 3\n")
    monkeypatch.chdir(tmp_path)
    try:
        run(ip, "%reload_ext fusionkit")
        assert run(ip, "%config FusionMagics.serve_replicas") == 3
        assert sum(type(c).__name__ == "FusionMagics" for c in ip.configurables) == 1
    finally:
        monkeypatch.undo()
        run(ip, "%reload_ext fusionkit")
    assert run(ip, "%config FusionMagics.serve_replicas") == 1


# -- defining stages ---------------------------------------------------------------------------

def test_stream_cell_defines_the_stage_and_returns_at_once(ip):
    handle, seconds = timed(ip, STREAM_CELL)
    print(f"\n%%fusion stream returned in {seconds * 1000:.0f} ms")
    assert isinstance(handle, LiveStage) and handle.name == "clicks"
    assert ip.user_ns["clicks_stage"] is handle
    # nothing reads it yet: it waits, says why, and peek shows the sample its definition read
    wait_for(lambda: fk.status().loc["clicks", "status"] == "waiting", what="waiting")
    head = fk.peek("clicks", 5)
    assert list(head["evening"]) == list((head["hour"] >= 18).astype("int64"))
    waiting = handle.view.html(live.snapshot(("clicks",)))  # what its display shows
    assert ">waiting<" in waiting and "no stage reads &#x27;clicks&#x27; yet" in waiting
    assert fk.resume("clicks") == "running"  # runs it alone
    wait_for(lambda: events("clicks") > 500, what="events streamed")
    head = fk.peek("clicks", 5)
    assert list(head["evening"]) == list((head["hour"] >= 18).astype("int64"))
    bundle = handle._repr_mimebundle_()
    assert {"text/html", "text/plain", WIDGET} <= set(bundle)
    assert "<b>clicks</b>" in bundle["text/html"] and "running" in bundle["text/html"]
    assert bundle["text/plain"] == "<fusionkit stream stage 'clicks'>"


def test_stream_sources_and_fn(ip):
    import pandas as pd

    ip.user_ns["frame"] = pd.DataFrame({"x": range(1000), "y": [0, 1] * 500})
    ip.user_ns["double"] = lambda df: df.assign(x2=df["x"] * 2)
    run(ip, "%fusion stream rows --source frame --rate max --fn double --start")
    wait_for(lambda: fk.status().loc["rows", "status"] == "finished", what="replay finished")
    assert events("rows") == 1000
    assert list(fk.peek("rows", 2)["x2"]) == [1996, 1998]
    with pytest.raises(FusionUsageError, match="--source 'fram' is not .* did you mean frame"):
        run(ip, "%fusion stream rows --source fram")
    with pytest.raises(FusionUsageError, match="--seed applies to --source synthetic only"):
        run(ip, "%fusion stream rows --source frame --seed 1")
    with pytest.raises(FusionUsageError, match="no connector for nats://"):
        run(ip, "%fusion stream rows --source nats://127.0.0.1:4222")


def test_rerunning_cells_replaces_stages_in_place(ip):
    run(ip, STREAM_CELL)
    run(ip, TRAIN_CELL)
    counts = actor_counts()
    ids = fk.stage("clicks").actor_ids()
    assert counts == (2, 2)
    for _ in range(3):
        run(ip, STREAM_CELL)
        run(ip, TRAIN_CELL)
        assert actor_counts() == counts
    assert list(fk.status().index) == ["clicks", "ctr"]
    assert set(fk.stage("clicks").actor_ids()).isdisjoint(ids)  # new code, new actor
    # only the newest displayed view of a stage keeps updating
    old, new = ip.user_ns["ctr_stage"], run(ip, TRAIN_CELL)
    old._repr_mimebundle_()
    new._repr_mimebundle_()
    assert old.view.frozen == "a newer view of this stage is live"
    assert new.view in live.live_views()


def test_train_serve_and_operations(ip):
    run(ip, STREAM_CELL)
    _, train_seconds = timed(ip, TRAIN_CELL)
    print(f"\n%%fusion train returned in {train_seconds * 1000:.0f} ms")
    run(ip, "%fusion wait ctr --timeout 60")
    port = free_port()
    api, serve_seconds = timed(ip, f"%fusion serve ctr-api --model ctr --port {port} -o api")
    print(f"%fusion serve returned in {serve_seconds * 1000:.0f} ms")
    assert fk.status().loc["ctr-api", "status"] in ("starting", "running")
    run(ip, "%fusion wait ctr-api --timeout 120")
    rows = fk.peek("clicks", 3)
    answer = ip.user_ns["api"].predict(rows)
    assert len(answer) == 3 and answer["version"].iloc[0] >= 1
    assert fk.status().loc["ctr-api", "url"] == f"http://127.0.0.1:{port}/ctr-api"

    wait_for(lambda: (fk.live_version("ctr") or 0) >= 2, what="two versions")
    assert run(ip, "%fusion pause ctr").status == "paused"  # no new versions meanwhile
    run(ip, "%fusion rollback ctr 1")
    assert fk.live_version("ctr") == 1
    run(ip, "%fusion pin ctr v1")
    newest = int(fk.models("ctr")["version"].max())
    assert run(ip, "%fusion resume ctr").status == "running"
    wait_for(lambda: int(fk.models("ctr")["version"].max()) > newest, what="a newer version")
    assert fk.live_version("ctr") == 1  # pinned
    run(ip, "%fusion unpin ctr")
    wait_for(lambda: fk.live_version("ctr") > newest, what="a newer version live after unpin")
    run(ip, "%fusion scale clicks 2")
    assert fk.status().loc["clicks", "parallelism"] == 2

    view = run(ip, "%fusion status")
    assert isinstance(view, StatusView)
    assert set(view.frame().index) == {"clicks", "ctr", "ctr-api"}
    html = view._repr_mimebundle_()["text/html"]
    assert all(f"<b>{n}</b>" in html for n in ("clicks", "ctr", "ctr-api"))
    assert repr(run(ip, "%fusion check")) == "healthy: clicks, ctr, ctr-api"
    assert repr(run(ip, "%fusion stop ctr-api")) == "stopped ctr-api"
    assert sorted(run(ip, "%fusion stop").data["stopped"]) == ["clicks", "ctr"]
    assert len(fk.status()) == 0


def test_live_view_updates_and_stops_when_closed(ip):
    handle = run(ip, STREAM_CELL)
    widget_id = handle._repr_mimebundle_()[WIDGET]["model_id"]
    assert widget_id == handle.view.widget.model_id
    first = handle.view.widget.value
    wait_for(lambda: handle.view.widget.value != first and "live" in handle.view.widget.value,
             what="the widget to refresh")
    handle.close()
    assert handle.view not in live.live_views()
    wait_for(lambda: not live._poller.running, what="the updater thread to end")
    # a stage that is stopped freezes its view as stopped
    handle = run(ip, "%fusion status clicks")
    handle._repr_mimebundle_()
    run(ip, "%fusion stop clicks")
    wait_for(lambda: handle.view.frozen == "stopped", what="the view to freeze")
    assert "stopped" in handle.view.widget.value


def test_dashboard(ip):
    board = run(ip, "%fusion dashboard --interval 500ms")
    try:
        bundle = board._repr_mimebundle_()
        assert "text/html" in bundle and WIDGET in bundle
    finally:
        board.close()


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, message", [
    ("%fusion strem clicks", "%fusion has no sub-command 'strem'; did you mean stream?"),
    ("%fusion stream clicks --rat 5", "%fusion stream: unknown option --rat; did you mean --rate?"),
    ("%fusion stream clicks --rate fast",
     "%fusion stream: --rate takes a number of events per second (or max), not 'fast'"),
    ("%fusion stream clicks --parallelism 0", "%fusion stream: --parallelism must be at least 1"),
    ("%fusion stream clicks --overload drop",
     "--overload cannot be 'drop', it is one of wait, shed"),
    ("%fusion train ctr --label clicked", "%fusion train: --on is required"),
    ("%fusion train ctr --on clicks --publish-every soon",
     "--publish-every takes a duration such as 1s or 500ms, or a number of events"),
    ("%fusion scale clicks two", "%fusion scale: N takes a whole number, not 'two'"),
    ("%fusion wait clicks --status runing",
     "--status cannot be 'runing', it is one of running, waiting, paused, finished; "
     "did you mean running?"),
    ("%fusion serve api --model ctr --port 99999", "--port must be a port between 1 and 65535"),
    ("%fusion train ctr --on clicks", "%fusion train needs a model"),
    ("%%fusion status\nx = 1", "%fusion status takes no cell body"),
    ("%fusion rollback ctr vx", "V takes a version number"),
])
def test_usage_errors(ip, line, message):
    with pytest.raises(UsageError) as err:
        run(ip, line)
    assert message in str(err.value)
    assert err.value._render_traceback_() == [f"UsageError: {err.value}"]


def test_unknown_stream_for_on(ip):
    run(ip, "%fusion stream clicks --rate 1000")
    with pytest.raises(StageNotFoundError,
                       match=r"no stream stage named 'clickz' \(defined: clicks\)\. "
                             r"Did you mean 'clicks'\?"):
        run(ip, TRAIN_CELL.replace("--on clicks", "--on clickz"))


def test_missing_label_column(ip):
    run(ip, STREAM_CELL)
    with pytest.raises(FusionError, match=r"label column 'clicke' is not in the output of "
                                          r"stream 'clicks'.*Did you mean 'clicked'\?"):
        run(ip, TRAIN_CELL.replace("--label clicked", "--label clicke"))
    assert "ctr" not in fk.status().index


NUMBERS_MODEL = ("from river import linear_model, preprocessing\n"
                 "model = preprocessing.StandardScaler() | linear_model.LogisticRegression()\n")


def test_text_columns_for_a_model_made_for_numbers(ip):
    """No --features on the synthetic clicks: the text columns reach a model made for numbers,
    and the stage is refused with one sentence saying which, and the ways out (River's own
    error was a TypeError about 'str' and 'float' from deep inside the pipeline)."""
    run(ip, "%fusion stream clicks --rate 1000")
    with pytest.raises(FusionError) as err:
        run(ip, f"%%fusion train ctr --on clicks\n{NUMBERS_MODEL}")
    message = str(err.value)
    assert message.startswith("the model StandardScaler | LogisticRegression needs numbers, "
                              "but the column(s) 'device', 'country' of stream 'clicks' hold "
                              "text: ")
    assert "features=[...]" in message and "river.preprocessing.OneHotEncoder" in message
    assert "user_id" not in message  # an id is no feature when none are named
    assert "\n" not in message and "'str' and 'float'" not in message
    assert err.value._render_traceback_() == [f"FusionError: {message}"]
    assert "ctr" not in fk.status().index
    # the first way out it names works
    run(ip, f"%%fusion train ctr --on clicks --features hour,position,price,dwell,age\n"
            f"{NUMBERS_MODEL}")
    wait_for(lambda: events("ctr") > 0, timeout=60, what="events learned")


def test_cells_that_define_nothing_usable(ip):
    run(ip, "%fusion stream clicks --rate 1000")
    with pytest.raises(CellError, match="the cell defines no function"):
        run(ip, "%%fusion stream other\nthreshold = 3\n")
    with pytest.raises(CellError, match=r"several functions \(a, b\).*--fn b"):
        run(ip, "%%fusion stream other\ndef a(df):\n    return df\ndef b(df):\n    return df\n")
    with pytest.raises(CellError, match="the cell defines no model"):
        run(ip, "%%fusion train ctr --on clicks\nrate = 0.1\n")
    with pytest.raises(FusionUsageError, match="--model mdl: there is no variable 'mdl'"):
        run(ip, "%%fusion train ctr --on clicks --model mdl\nfrom fusionkit.demo import ctr_model\n"
                "mdl2 = ctr_model()\n")
    assert list(fk.status().index) == ["clicks"]


def test_failing_stage_raises_with_remote_frames(ip):
    cell = ('%%fusion stream broken --rate 1000\n'
            'def explode(df):\n'
            '    return df["no_such_column"] * 2\n')
    result = ip.run_cell(cell)
    err = result.error_in_exec
    assert isinstance(err, StageFailedError)
    rendered = "\n".join(err._render_traceback_())
    assert rendered.startswith("StageFailedError: stage 'broken' (probe) failed: KeyError")
    assert "Remote traceback" in rendered and "explode" in rendered


def test_stage_failing_later_fails_wait_and_check(ip):
    run(ip, '%%fusion stream late --rate 20000 --start\n'
            'def fails_later(df):\n'
            '    if df["_offset"].max() > 3000:\n'
            '        raise ValueError("bad day at the office")\n'
            '    return df\n')
    with pytest.raises(StageFailedError) as err:
        run(ip, "%fusion wait late --events 1000000 --timeout 60")
    assert err.value.actor.startswith("stream actor 0, pid ")
    rendered = "\n".join(err.value._render_traceback_())
    assert "stage 'late' (stream actor 0" in rendered and "fails_later" in rendered
    with pytest.raises(StageFailedError, match="bad day at the office"):
        run(ip, "%fusion check")


def test_wait_times_out_with_a_clear_message(ip):
    run(ip, "%fusion stream slow --rate 100")
    with pytest.raises(TimeoutError, match=r"stage 'slow' did not reach status running and "
                                           r"10,000,000 events within 0.5s"):
        run(ip, "%fusion wait slow --events 10000000 --timeout 500ms")


def test_unknown_stage_for_operations(ip):
    run(ip, "%fusion stream clicks --rate 1000")
    for line in ("%fusion pause clickz", "%fusion stop clickz", "%fusion status clickz",
                 "%fusion wait clickz"):
        with pytest.raises(StageNotFoundError, match="Did you mean 'clicks'"):
            run(ip, line)
