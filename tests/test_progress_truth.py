"""A progress display that tells the truth: the final state at once after Cancel, a rate
and ETA from the first result on, and a sweep in which every run failed says so
(issue 16, items 7, 8 and 10)."""

from __future__ import annotations

import argparse
import io
import threading
import time

import conftest
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.display.sweep_widget import RUN_OVERHEAD, SWEEP_OVERHEAD, SweepWidget
from nbbacktest.display.widget import FINAL_LABELS, ProgressWidget
from nbbacktest.errors import NbbacktestWarning
from nbbacktest.magics import _report
from nbbacktest.parallel import progress as parallel_progress
from nbbacktest.parallel.events import Finished, PointDone, PointFailed, Started
from nbbacktest.parallel.progress import ETA_AFTER_SECONDS, ProgressState, TextProgress


class Broken(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)

    def signals(self, data):
        raise ValueError(f"no signal for fast={self.fast}")


@pytest.fixture
def widgets(monkeypatch):
    shown: list[ProgressWidget] = []

    def factory(result):
        shown.append(ProgressWidget(result))
        return shown[-1]

    monkeypatch.setattr(parallel_progress, "default_display", factory)
    return shown


# ---------------------------------------------------------------------- item 7
def test_after_cancel_the_button_shows_how_the_sweep_ended_at_once(daily, widgets):
    clicked = threading.Event()

    def click_when_some_are_done():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if widgets and widgets[0].tracker.done >= 3:
                widgets[0].cancel_button.click()
                clicked.set()
                return
            time.sleep(0.005)

    clicker = threading.Thread(target=click_when_some_are_done)
    clicker.start()
    sweep = nbb.sweep(conftest.Sleepy, daily, {"fast": list(range(5, 85))}, progress=True)
    clicker.join()
    assert clicked.is_set() and sweep.status == "cancelled"
    button = widgets[0].cancel_button
    assert (button.description, button.disabled) == ("Cancelled", True)


def test_each_ending_has_its_own_label(daily):
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5]}, progress=False)
    assert ProgressWidget(sweep).cancel_button.description == "Done"
    for status, label in FINAL_LABELS.items():
        widget = ProgressWidget(sweep)
        widget.cancel_button.description = "Cancelling…"
        widget._observe(Finished(done=1, failed=0, cancelled=0, seconds=1.0, status=status))
        assert widget.cancel_button.description == label


# ---------------------------------------------------------------------- item 8
def test_rate_counts_from_the_first_result_not_the_cluster_start(daily):
    sweep = nbb.sweep(SmaCross, daily, {"fast": list(range(5, 45))}, progress=False)
    state = ProgressState()
    state.update(Started(total=40, engines=2, metric="sharpe", maximize=True, time=100.0))
    # The first chunk of 10 comes 6 s later (engines starting, data shipped), all at once.
    for row in range(10):
        state.update(PointDone(index=row, value=0.1, source=sweep, time=106.0 + row * 0.001))
    assert state.fields(now=106.5)["eta"] == "ETA …"  # one chunk says nothing yet
    for row in range(10, 30):  # then 20 more over 2 s: 10 a second
        state.update(PointDone(index=row, value=0.1, source=sweep, time=106.0 + (row - 9) * 0.1))
    fields = state.fields(now=108.0)
    assert fields["rate"] == "10/s"  # not 30 in 8 s
    assert fields["eta"] == "ETA 0:01"  # 10 left at 10/s
    assert fields["elapsed"] == "elapsed 0:08"


def test_no_eta_from_a_single_result(daily):
    sweep = nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, progress=False)
    state = ProgressState()
    state.update(Started(total=1000, engines=2, metric="sharpe", maximize=True, time=0.0))
    state.update(PointDone(index=0, value=0.1, source=sweep, time=0.1))
    state.update(PointDone(index=1, value=0.1, source=sweep, time=0.2))
    assert state.fields(now=0.3)["eta"] == "ETA …"  # not "20:39" after one run
    assert state.fields(now=0.2 + ETA_AFTER_SECONDS)["eta"].startswith("ETA ")


# ---------------------------------------------------------------------- item 10
def test_a_sweep_whose_every_run_failed_says_so(daily, widgets):
    with pytest.warns(NbbacktestWarning, match="every run of the sweep failed"):
        sweep = nbb.sweep(Broken, daily, {"fast": [5, 10, 15]}, progress=True)
    assert sweep.best is None and sweep.failed == 3
    widget = widgets[0]
    assert "every run failed: ValueError: no signal for fast=5" in widget.note.value
    assert widget.bar.bar_style == "danger" and widget.cancel_button.icon == ""
    assert "every run failed: ValueError" in ProgressState.of(sweep).line()
    stream = io.StringIO()
    with pytest.warns(NbbacktestWarning, match="every run of the sweep failed"):
        nbb.sweep(Broken, daily, {"fast": [5, 10]}, progress=False, on_result=TextProgress(stream, 0))
    assert stream.getvalue().splitlines()[-1].endswith("every run failed: ValueError: no signal for fast=5")


def test_a_sweep_with_some_successes_does_not_say_every_run_failed(daily):
    state = ProgressState()
    sweep = nbb.sweep(conftest.Fragile, daily, {"fast": [5, 10]}, progress=False,
                      on_result=state.update)
    assert sweep.failed == 1 and "every run failed" not in state.line()
    state = ProgressState()
    state.update(Started(total=1, engines=0, metric="sharpe", maximize=True))
    state.update(PointFailed(index=0, source=sweep))
    state.update(Finished(done=0, failed=1, cancelled=0, seconds=1.0, status="complete"))
    assert state.reason.startswith("every run failed")


def test_the_magic_says_every_run_failed(daily, capsys):
    with pytest.warns(NbbacktestWarning, match="every run of the sweep failed"):
        sweep = nbb.sweep(Broken, daily, {"fast": [5, 10]}, progress=False)
    _report(sweep, argparse.Namespace(output="_backtest"))
    err = capsys.readouterr().err
    assert err.startswith("Every run failed: 2 of 2 runs raised; the first, row 0 (fast=5), raised"
                          " ValueError: no signal for fast=5")


def test_the_sweep_widgets_estimate_on_engines_counts_what_a_sweep_costs_beyond_its_runs(daily):
    widget = SweepWidget(SmaCross, daily, grid={"fast": range(5, 60, 5), "slow": range(10, 200, 10)},
                         where="fast < slow", engines=2)
    widget._point_seconds = 0.0007  # what measure_point_cost gives for this strategy
    seconds = SWEEP_OVERHEAD + 179 * (0.0007 + RUN_OVERHEAD) / 2  # 0.24 s measured: 0.19-0.31 s
    assert 0.15 < seconds < 0.4 and widget.estimate_text().startswith("179 runs, under 1 s on 2 engines")
    widget._point_seconds = 0.5
    assert widget.estimate_text().startswith("179 runs, about 45 s on 2 engines")
