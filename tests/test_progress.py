"""Progress displays: the shared state, the text line, the widget, the factory, and Cancel."""

from __future__ import annotations

import importlib
import io
import os
import queue
import re
import subprocess
import sys
import textwrap
import threading
import time

import conftest
import pytest
from conftest import Fragile, SmaCross

import nbbacktest as nbb
from nbbacktest.display import progress as progress_module
from nbbacktest.display.progress import ProgressState, TextProgress, in_kernel, show_progress
from nbbacktest.display.widget import ProgressWidget
from nbbacktest.parallel.events import Finished, PointDone, PointSlow, Started


class Sleepy(conftest.Sleepy):
    """Slow enough for a Cancel to land mid-sweep."""

    _pause = 0.15


GRID = {"fast": [5, 10, 15], "slow": [30, 60]}
# The module that picks a sweep's progress display.
parallel_progress = importlib.import_module("nbbacktest.parallel.progress")


def row_numbers(table_html: str) -> list[int]:
    """The row column of an HTML results table, top to bottom."""
    return [int(n) for n in re.findall(r"<tr><td[^>]*>(\d+)</td>", table_html)]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def widget_factory(monkeypatch):
    """Sweeps show a ProgressWidget (as in a notebook), kept in the returned list."""
    shown: list[ProgressWidget] = []

    def factory(result):
        shown.append(ProgressWidget(result))
        return shown[-1]

    monkeypatch.setattr(parallel_progress, "default_display", factory)
    return shown


# ---------------------------------------------------------------------- state
def test_state_counts_points_errors_and_best_from_events(daily):
    state = ProgressState()
    sweep = nbb.sweep(Fragile, daily, GRID, progress=False, on_result=state.update)
    assert (state.done, state.failed, state.total) == (6, 2, 6)
    assert state.finished and state.status == "complete"
    assert state.best == sweep.best_value
    assert state.best_params == {"fast": sweep.best.fast, "slow": sweep.best.slow}
    fields = state.fields()
    assert fields["counts"] == "6/6" and fields["errors"] == "2 errors"
    assert fields["eta"] == "complete" and fields["engines"] == "in-process"
    assert fields["best"] == (f"best sharpe {sweep.best_value:.2f} "
                              f"(fast={sweep.best.fast}, slow={sweep.best.slow})")


def test_state_of_a_finished_sweep_matches_the_sweep(daily):
    sweep = nbb.sweep(Fragile, daily, GRID, progress=False)
    state = ProgressState.of(sweep)
    assert (state.done, state.failed, state.status) == (6, 2, "complete")
    assert state.best_index == sweep.best_index


def test_state_eta_and_engines_while_running():
    state = ProgressState()
    state.update(Started(total=100, engines=4, metric="sharpe", maximize=True, time=10.0))
    state.done = 25
    fields = state.fields(now=20.0)  # 25 runs in 10 s: 75 left at 2.5/s
    assert fields["rate"] == "2.5/s" and fields["elapsed"] == "elapsed 0:10"
    assert fields["eta"] == "ETA 0:30" and fields["engines"] == "4/4 engines busy"
    state.done = 98
    assert state.fields(now=20.0)["engines"] == "2/4 engines busy"  # two runs left


def test_counts_have_thousands_separators_in_the_line_and_the_widget(daily):
    state = ProgressState()
    state.update(Started(total=8150, engines=1200, metric="sharpe", maximize=True, time=0.0))
    state.done, state.failed = 3394, 1234
    fields = state.fields(now=10.0)
    assert fields["counts"] == "3,394/8,150" and fields["errors"] == "1,234 errors"
    assert fields["engines"] == "1,200/1,200 engines busy"
    assert state.line(now=10.0).split(" | ")[:2] == ["[########            ] 3,394/8,150", "1,234 errors"]
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5]}, progress=False)
    widget = ProgressWidget(sweep)
    widget.tracker = state
    widget.draw()
    assert "<b>3,394/8,150</b>" in widget.counts.value and "1,234 errors" in widget.counts.value
    assert "1,200/1,200 engines busy" in widget.best_label.value


# ---------------------------------------------------------------------- text
def test_text_line_on_a_pipe_writes_whole_lines_and_always_the_last(daily):
    stream = io.StringIO()
    text = TextProgress(stream=stream, interval=3600)
    nbb.sweep(Fragile, daily, GRID, progress=False, on_result=text)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the first event, then (throttled) only the final state
    assert lines[0].startswith("[                    ] 0/6")
    assert lines[-1].startswith("[####################] 6/6 | 2 errors |")
    assert "| complete |" in lines[-1] and "best sharpe" in lines[-1]
    assert "\r" not in stream.getvalue()


def test_text_line_on_a_terminal_is_rewritten_in_place(daily):
    stream = FakeTerminal()
    text = TextProgress(stream=stream, interval=0)
    assert text.tty and TextProgress(stream=io.StringIO()).interval == 5.0
    nbb.sweep(Fragile, daily, GRID, progress=False, on_result=text)
    written = stream.getvalue()
    assert written.count("\n") == 1 and written.endswith("\n")
    updates = written.split("\r")[1:]
    assert len(updates) == 8  # Started, six runs, Finished
    assert updates[3].startswith("[##########          ] 3/6")
    # A shorter line is padded over the longer one before it.
    assert all(len(after.rstrip("\n")) >= len(before.rstrip()) for before, after in zip(updates, updates[1:]))


def test_text_notes_get_a_line_of_their_own():
    stream = FakeTerminal()
    text = TextProgress(stream=stream, interval=0)
    text(Started(total=3, engines=2, metric="sharpe", maximize=True))
    text(PointSlow(index=2, params={"fast": 10}, seconds=3700.0, engine=1))
    written = stream.getvalue()
    # The progress line is wiped, the note written, then the line drawn again below it.
    assert "\rrow 2 (fast=10) has run for 1:01:40 on engine 1\n\r[" in written
    assert written.endswith("2/2 engines busy")


def test_progress_goes_to_stderr_unless_turned_off(daily, capsys, monkeypatch):
    monkeypatch.delenv("NBBACKTEST_PROGRESS", raising=False)
    nbb.sweep(SmaCross, daily, {"fast": [5, 10]})
    assert "[####################] 2/2" in capsys.readouterr().err
    nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, progress=False)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("NBBACKTEST_PROGRESS", "0")
    nbb.sweep(SmaCross, daily, {"fast": [5, 10]})
    assert capsys.readouterr().err == ""
    nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, progress=True)  # an explicit True wins
    assert "2/2" in capsys.readouterr().err


# ---------------------------------------------------------------------- progress=
def test_progress_may_be_a_callable_given_the_sweep(daily, capsys):
    seen = []
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, progress=seen.append)
    assert seen == [sweep] and capsys.readouterr().err == ""


@pytest.mark.parametrize("progress", ["yes", 1.5])
def test_a_progress_that_is_no_bool_nor_callable_names_the_argument(daily, progress):
    with pytest.raises(TypeError, match=r"progress must be True, False or a callable taking the SweepResult"):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, progress=progress)


PARALLEL_ALONE = """
import sys
from nbbacktest.engine.examples import SmaCross
from nbbacktest.engine.samples import load_sample
import nbbacktest.parallel as parallel
parallel.sweep(SmaCross, load_sample("daily"), {"fast": [5, 10]}, progress=True)
print(sorted(m for m in ("nbbacktest.display", "ipywidgets", "plotly", "IPython") if m in sys.modules))
"""

TOP_LEVEL_IN_IPYTHON = """
import sys
{ipython}
import nbbacktest as nbb
nbb.sweep
from nbbacktest.parallel import progress
print(getattr(progress.default_display, "__module__", None))
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NBBACKTEST_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=env, check=True)


def test_the_parallel_layer_alone_shows_the_text_line_when_asked():
    done = run_python(PARALLEL_ALONE)
    assert "[####################] 2/2" in done.stderr
    assert done.stdout.strip() == "[]"  # no display layer, no widgets, no plotly, no IPython


@pytest.mark.parametrize("ipython, default", [("import IPython", "nbbacktest.display.progress"),
                                              ("", "None")])
def test_the_top_level_package_names_the_notebook_display_only_where_ipython_runs(ipython, default):
    assert run_python(TOP_LEVEL_IN_IPYTHON.format(ipython=ipython)).stdout.strip() == default


# ---------------------------------------------------------------------- factory
class FakeKernelShell:
    kernel = object()


def test_factory_picks_text_outside_a_kernel(daily, monkeypatch):
    assert not in_kernel()
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5]}, progress=False)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    shown = show_progress(sweep)
    assert isinstance(shown, TextProgress) and shown.stream is sys.stderr


def test_factory_picks_the_widget_in_a_kernel(daily, monkeypatch, capsys):
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeKernelShell())
    assert in_kernel()
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5]}, progress=False)
    shown = show_progress(sweep)
    assert isinstance(shown, ProgressWidget) and callable(shown.poll)
    assert "[####################] 1/1" in capsys.readouterr().out  # displayed (as text here)


def test_factory_falls_back_to_text_without_ipywidgets(daily, monkeypatch):
    monkeypatch.setattr(progress_module, "in_kernel", lambda: True)
    monkeypatch.setitem(sys.modules, "nbbacktest.display.widget", None)  # import fails
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5]}, progress=False)
    assert isinstance(show_progress(sweep), TextProgress)


def test_poll_is_registered_and_harmless_outside_a_kernel(daily, widget_factory):
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, progress=True)
    widget = widget_factory[0]
    assert sweep._pollers == [widget.poll]
    started = time.perf_counter()
    widget.poll()
    assert time.perf_counter() - started < 0.01


# ---------------------------------------------------------------------- widget
def test_the_live_table_caption_counts_each_run_once(daily, widget_factory):
    sweep = nbb.sweep(Fragile, daily, GRID, progress=True)
    caption = "colour: sharpe across the 4 of 6 runs with a sharpe"
    assert caption in widget_factory[0].table.value
    # A widget shown after the sweep ended seeds its table from the results: the same words.
    assert caption in ProgressWidget(sweep).table.value


def test_widget_shows_the_final_state(daily, widget_factory):
    sweep = nbb.sweep(Fragile, daily, GRID, progress=True)
    widget = widget_factory[0]
    assert widget.bar.value == widget.bar.max == len(sweep) == 6
    assert widget.bar.bar_style == "success"
    assert "2 errors" in widget.counts.value and "<b>6/6</b>" in widget.counts.value
    assert "complete" in widget.counts.value
    best = sweep.best
    assert widget.best_label.value.startswith(
        f"best sharpe {sweep.best_value:.2f} (fast={best.fast}, slow={best.slow})")
    assert widget.best_label.value.endswith("in-process")
    assert widget.cancel_button.disabled
    # The live table: the four successful runs, best first.
    table = widget.table.value
    ranked = sweep.results.dropna(subset=["sharpe"]).sort_values("sharpe", ascending=False)
    assert row_numbers(table) == list(ranked.index) and len(ranked) == 4


def test_widget_built_late_starts_from_the_sweep(daily):
    sweep = nbb.sweep(Fragile, daily, GRID, progress=False)
    widget = ProgressWidget(sweep, top=2)
    assert (widget.bar.value, widget.bar.bar_style) == (6, "success")
    ranked = sweep.results.sort_values("sharpe", ascending=False)
    assert row_numbers(widget.table.value) == list(ranked.index[:2])


def test_widget_colours_by_how_the_sweep_ended(daily):
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5]}, progress=False)
    for status, style in [("cancelled", "warning"), ("stopped", "danger"), ("failed", "danger")]:
        widget = ProgressWidget(sweep)
        widget._observe(Finished(done=1, failed=0, cancelled=0, seconds=1.0, status=status,
                                 reason=f"it was {status}"))
        assert widget.bar.bar_style == style
        assert f"it was {status}" in widget.note.value


def test_widget_stop_on_error_turns_red(daily, widget_factory):
    sweep = nbb.sweep(Fragile, daily, GRID, progress=True, stop_on_error=True)
    widget = widget_factory[0]
    assert sweep.status == "stopped"
    assert widget.bar.bar_style == "danger"
    assert "fast=10" in widget.note.value


def test_widget_updates_are_throttled_but_the_last_state_is_drawn(daily):
    sweep = nbb.sweep(SmaCross, daily, {"fast": list(range(5, 95))}, progress=False)
    widget = ProgressWidget(sweep, interval=0.25)
    widget._observe(Started(total=len(sweep), engines=2, metric="sharpe", maximize=True))
    draws = widget.draws
    started = time.monotonic()
    for _ in range(20):  # a burst of 2,000 runs in well under a second
        for row in range(len(sweep)):
            widget._observe(PointDone(index=row, value=0.1, source=sweep))
    elapsed = time.monotonic() - started
    assert widget.draws - draws <= elapsed * 4 + 2
    time.sleep(0.4)  # no more events: the pending state is drawn anyway
    assert widget.bar.value == min(widget.tracker.done, widget.bar.max) == len(sweep)
    widget._observe(Finished(done=len(sweep), failed=0, cancelled=0, seconds=1.0, status="complete"))
    assert widget.bar.bar_style == "success"


def test_cancel_click_from_another_thread_stops_a_blocking_cluster_sweep(cluster, daily, widget_factory):
    clicked: list[float] = []

    def click_when_some_are_done():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if widget_factory and widget_factory[0].tracker.done >= 4:
                clicked.append(time.monotonic())
                widget_factory[0].cancel_button.click()
                return
            time.sleep(0.01)

    clicker = threading.Thread(target=click_when_some_are_done)
    clicker.start()
    sweep = nbb.sweep(Sleepy, daily, {"fast": list(range(5, 85))}, cluster=cluster, progress=True)
    ended = time.monotonic()
    clicker.join()
    widget = widget_factory[0]
    assert clicked, "the sweep ended before the click"
    assert ended - clicked[0] < 1.5
    assert sweep.status == "cancelled"
    status = sweep.results["status"]
    finished = status == "done"
    assert finished.sum() >= 4 and (status == "cancelled").sum() > 0
    assert sweep.results.loc[finished, "sharpe"].notna().all()  # finished rows are kept
    assert widget.bar.bar_style == "warning" and widget.bar.value == sweep.progress


KERNEL_CELL = conftest.KERNEL_SLEEPY + textwrap.dedent("""
    s = nbb.sweep(Sleepy, nbb.load_sample("daily"), {"fast": list(range(5, 95))}, progress=True)
    print("STATUS", s.status, s.progress, len(s))
""")


def test_cancel_click_reaches_a_blocking_sweep_in_a_real_kernel():
    """A click sent while the cell runs stops the sweep, as a front end would send it.

    With ipykernel 7 the click comes on a subshell (as JupyterLab 4.4+ sends widget
    messages); with ipykernel 6 on the main shell, handled through jupyter-ui-poll.
    """
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=60, env=env)
    try:
        subshell = None
        client.kernel_info()
        info = client.get_shell_msg(timeout=10)["content"]
        if "kernel subshells" in info.get("supported_features", []):
            client.control_channel.send(client.session.msg("create_subshell_request", {}))
            subshell = client.control_channel.get_msg(timeout=10)["content"]["subshell_id"]
        cell = client.execute(KERNEL_CELL)
        button = bar = clicked = None
        output = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                message = client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "comm_open":
                state = content["data"].get("state", {})
                if state.get("_model_name") == "ButtonModel" and state.get("description") == "Cancel":
                    button = content["comm_id"]
                elif state.get("_model_name") == "IntProgressModel":
                    bar = content["comm_id"]
            elif kind == "comm_msg" and content["comm_id"] == bar and clicked is None:
                if content["data"].get("state", {}).get("value", 0) >= 5:
                    click = client.session.msg("comm_msg", {
                        "comm_id": button, "data": {"method": "custom", "content": {"event": "click"}}})
                    if subshell is not None:
                        click["header"]["subshell_id"] = subshell
                    client.shell_channel.send(click)
                    clicked = time.monotonic()
            elif kind == "stream":
                output += content["text"]
            elif kind == "error":
                pytest.fail(f"the cell raised {content['ename']}: {content['evalue']}")
            elif (kind == "status" and content["execution_state"] == "idle"
                  and message["parent_header"].get("msg_id") == cell):
                break
        ended = time.monotonic()
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert button is not None and clicked is not None, output
    words = output.split("STATUS ")[1].split()
    assert words[0] == "cancelled" and int(words[1]) < int(words[2]) == 90, output
    assert ended - clicked < 2.0
