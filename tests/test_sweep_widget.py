"""The sweep widget, driven from Python: controls -> grid, Run, results, selection, export, errors."""

from __future__ import annotations

import math
import os
import queue
import re
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest
from conftest import KERNEL_SLEEPY, Fragile, Knobs, Sleepy, SmaCross

import nbbacktest as nbb
import nbbacktest.display
from nbbacktest.display import sweep_widget
from nbbacktest.display.controls import BoolControl, ChoiceControl, RangeControl, TextListControl
from nbbacktest.display.sweep_widget import (
    MAX_RUNS,
    MAX_VALUES,
    SweepWidget,
    describe_estimate,
    range_of,
    range_values,
    slider_range,
)
from nbbacktest.engine.metrics import NUMERIC_STATS
from nbbacktest.errors import ParamError, SweepError, UnknownParamError
from nbbacktest.parallel.grid import plan_sweep

WAIT = 120  # seconds a Run may take at most in these tests


class Unbounded(nbb.Strategy):
    lookback = 20

    def signals(self, data):
        close = data["Close"]
        return (close > close.rolling(self.lookback).mean()).astype(float)


class Unsendable(SmaCross):
    """A class attribute that cannot be pickled: the cluster cannot receive it."""

    lock = threading.Lock()


def set_range(widget, name, low, high, step=None):
    control = widget.controls[name]
    control.slider.value = (low, high)
    if step is not None:
        control.step.value = step


def make_widget(strategy, data, **options):
    """A SweepWidget that runs in this process unless told otherwise (a cluster may be current)."""
    options.setdefault("engines", 1)
    return SweepWidget(strategy, data, **options)


def sma_widget(daily, **options):
    """SmaCross over fast 5..30 step 5, slow 20..60 step 20, where fast < slow: 15 runs."""
    widget = make_widget(SmaCross, daily, **options)
    set_range(widget, "fast", 5, 30, 5)
    set_range(widget, "slow", 20, 60, 20)
    widget.where_box.value = "fast < slow"
    return widget


SMA_GRID = {"fast": [5, 10, 15, 20, 25, 30], "slow": [20, 40, 60]}
COMPARED = ["fast", "slow", *NUMERIC_STATS]


def run_and_wait(widget):
    widget.run_button.click()
    assert widget.result is not None, widget.message.value
    widget.result.result(timeout=WAIT)
    # The widget fills its results from the sweep's done callback: it ran before result() returned.
    return widget.result


def error_shown(widget) -> str:
    """The message's text when it shows an error (and Run is disabled), else fail."""
    assert widget.run_button.disabled, "Run should wait for a fix"
    assert "color:#c0392b" in widget.message.value
    return widget.message.value


# ---------------------------------------------------------------------- pure functions
def test_slider_range_from_param_bounds_and_step():
    assert slider_range(nbb.Param(10, low=2, high=50, step=2)) == (2, 50, 2, 2)
    # Without bounds: around the default, never below 1 for a positive int, 0 for a float.
    assert slider_range(nbb.Param(20)) == (1, 40, 1, 1)
    assert slider_range(nbb.Param(0)) == (0, 10, 1, 1)
    assert slider_range(nbb.Param(0.5)) == (0.0, 1.5, 0.15, 0.015)
    assert slider_range(nbb.Param(-3)) == (-13, 0, 1, 1)
    # One bound given: the other is placed from the default.
    assert slider_range(nbb.Param(10, low=5)) == (5, 20, 1, 1)
    assert slider_range(nbb.Param(10, high=15)) == (1, 15, 1, 1)
    # A float's step is a tenth of the range; the slider moves ten times finer.
    assert slider_range(nbb.Param(0.02, low=0.0, high=0.1)) == (0.0, 0.1, 0.01, 0.001)
    # A Param step sets both; an int step is a whole number.
    assert slider_range(nbb.Param(1.0, low=0.0, high=2.0, step=0.25)) == (0.0, 2.0, 0.25, 0.25)
    assert slider_range(nbb.Param(10, low=0, high=100, step=2.6)).step == 3
    with pytest.raises(TypeError, match="slider_range needs an int or float Param, got a str one"):
        slider_range(nbb.Param("sma"))


def test_range_values_exact_and_errors():
    assert range_values(2, 50, 16) == [2, 18, 34, 50]
    assert range_values(5, 7, 5) == [5]
    assert range_values(0.0, 0.05, 0.01, float) == [0.0, 0.01, 0.02, 0.03, 0.04, 0.05]
    assert range_values(0.1, 0.35, 0.1, float) == [0.1, 0.2, 0.3]
    cases = [
        ((1, 10, 0), "fast: the step must be a positive number, got 0"),
        ((1, 10, -2), "fast: the step must be a positive number, got -2"),
        ((1, 10, float("nan")), "fast: the step must be a positive number, got nan"),
        ((10, 1, 1), "fast: the range is empty: from 10 up to 1"),
        ((1, 10, 1.5), "fast: the step of an int param must be a whole number, got 1.5"),
    ]
    for args, message in cases:
        with pytest.raises(SweepError) as raised:
            range_values(*args, name="fast")
        assert str(raised.value) == message
    # One cap with the magics: a range may hold as many values as a sweep holds runs.
    with pytest.raises(SweepError, match=rf"stop: a step of 0.00000001 from 0 to 0.1 has 10,000,001 values; "
                                         rf"at most {MAX_VALUES:,} per parameter: raise the step or narrow "
                                         "the range"):
        range_values(0.0, 0.1, 1e-8, float, name="stop")


def test_range_of_grid_values():
    assert range_of(range(5, 61, 5)) == (5, 60, 5)
    assert range_of([10, 4, 30]) == (4, 30, 2)
    assert range_of([0.01, 0.03, 0.02], float) == (0.01, 0.03, 0.01)
    assert range_of([3.0], float) == (3.0, 3.0, None)
    with pytest.raises(SweepError, match="range_of needs at least one value"):
        range_of([])


def test_describe_estimate_words():
    assert describe_estimate(132, 0.06, 2) == "132 runs, about 4 s on 2 engines"
    assert describe_estimate(1, 0.5, 0) == "1 run, under 1 s in this process"
    assert describe_estimate(3, 0.5, 1) == "3 runs, about 2 s on 1 engine"
    assert describe_estimate(10_000, 0.03, 2) == "10,000 runs, about 2 min on 2 engines"
    assert describe_estimate(100_000, 0.5, 4) == "100,000 runs, about 3.5 h on 4 engines"
    assert describe_estimate(600, 0.01, 0, points=200, symbols=3) == \
        "200 points × 3 symbols = 600 runs, about 6 s in this process"
    assert describe_estimate(80_000, math.nan, 2, approximate=True) == \
        "up to 80,000 runs (where is applied when the sweep starts)"


# ---------------------------------------------------------------------- controls
def test_controls_follow_the_param_kinds(daily):
    widget = make_widget(Knobs, daily)
    kinds = {name: type(control) for name, control in widget.controls.items()}
    assert kinds == {"fast": RangeControl, "band": RangeControl, "long_only": BoolControl,
                     "kind": ChoiceControl, "label": TextListControl}
    fast, band = widget.controls["fast"], widget.controls["band"]
    assert type(fast.slider).__name__ == "IntRangeSlider"
    assert (fast.slider.min, fast.slider.max, fast.slider.value, fast.step.value) == (2, 50, (2, 50), 2)
    assert type(band.slider).__name__ == "FloatRangeSlider"
    assert (band.slider.min, band.slider.max, band.step.value, band.slider.step) == (0.0, 0.05, 0.005, 0.0005)
    assert [label for label, _ in widget.controls["long_only"].buttons.options] == ["both", "True", "False"]
    assert widget.controls["kind"].select.value == ("sma", "ema")
    assert fast.widget.children[0].tooltip == "average length"
    # A class and no grid: every param over its whole range.
    assert widget.grid() == {
        "fast": list(range(2, 51, 2)), "band": [round(0.005 * i, 12) for i in range(11)],
        "long_only": [False, True], "kind": ["sma", "ema"], "label": ["x"],
    }
    assert widget.runs == 25 * 11 * 2 * 2 == len(plan_sweep(Knobs, widget.grid()))


def test_grid_and_estimate_follow_the_controls(daily):
    widget = make_widget(Knobs, daily)
    set_range(widget, "fast", 10, 20, 4)
    set_range(widget, "band", 0.01, 0.03, 0.01)
    widget.controls["long_only"].buttons.value = (True,)
    widget.controls["kind"].select.value = ("ema",)
    widget.controls["label"].text.value = "a, b ,a,"
    expected = {"fast": [10, 14, 18], "band": [0.01, 0.02, 0.03], "long_only": [True], "kind": ["ema"],
                "label": ["a", "b"]}
    assert widget.grid() == expected
    assert widget.runs == 18
    widget.where_box.value = "fast > 10 and band < 0.03"
    assert widget.runs == 8 == len(plan_sweep(Knobs, expected, where="fast > 10 and band < 0.03"))
    assert widget.estimate.value.startswith("8 runs, under 1 s in this process")
    assert widget.options()["where"] == "fast > 10 and band < 0.03"
    assert not widget.run_button.disabled and widget.message.value == ""


def test_estimate_uses_a_measured_backtest_then_the_last_run(daily):
    widget = make_widget(Sleepy, daily)
    set_range(widget, "fast", 5, 84, 1)  # 80 runs of ~0.05 s
    assert widget.runs == 80
    assert re.fullmatch("80 runs, about [45] s in this process", widget.estimate.value)
    set_range(widget, "fast", 5, 8)
    run_and_wait(widget)
    seconds = widget.result.results["seconds"]
    assert (seconds > 0.04).all()
    set_range(widget, "fast", 5, 124, 1)
    # The last sweep's time from its first work on, per run: at least a run's own seconds.
    assert describe_estimate(120, float(seconds.median()), 0) == "120 runs, about 6 s in this process"
    assert re.fullmatch("120 runs, about [67] s in this process", widget.estimate.value)


def test_big_grids_are_counted_before_where_and_capped(daily):
    widget = make_widget(SmaCross, daily)
    set_range(widget, "fast", 2, 100, 1)
    set_range(widget, "slow", 5, 300, 1)
    widget.where_box.value = "fast < slow"
    # Small enough to plan as you type: where is applied.
    assert widget.runs == len(plan_sweep(SmaCross, widget.grid(), where="fast < slow")) == 24_648
    many = make_widget(Knobs, daily)
    set_range(many, "band", 0.0, 0.05, 0.0005)
    many.controls["label"].text.value = ",".join("abcdefghij")
    many.where_box.value = "fast < 20"
    assert many.runs == 25 * 101 * 2 * 2 * 10
    assert many.estimate.value.startswith("up to 101,000 runs (where is applied when the sweep starts)")
    assert not many.run_button.disabled
    many.where_box.value = "fast < slow"  # still checked
    assert "where refers to unknown parameter" in error_shown(many)
    many.where_box.value = ""
    many.controls["label"].text.value = ",".join(str(i) for i in range(100))
    assert f"the controls make 1,010,000 runs; at most {MAX_RUNS:,}: narrow a range or raise a step" \
        in error_shown(many)


def test_bad_input_shows_a_message_and_disables_run_until_fixed(daily):
    def where(text):
        return lambda widget: setattr(widget.where_box, "value", text)

    cases = [
        (where("fast <"), "where=&#x27;fast &lt;&#x27; is not a valid expression"),
        (where("fsat < 10"), "where refers to unknown parameter &#x27;fsat&#x27;. Did you mean: fast?"),
        (where("__import__('os')"), "may not use &#x27;__import__&#x27;"),
        (where("fast > 100"), "where filtered out all 1100 points of the grid"),
        (where("fast / (fast - 2) > 0"), "where raised ZeroDivisionError for point"),
        (lambda w: setattr(w.controls["kind"].select, "value", ()), "kind: select at least one value"),
        (lambda w: setattr(w.controls["label"].text, "value", " , "), "label: give at least one value"),
        (lambda w: setattr(w.controls["fast"].step, "value", 0),
         "fast: the step must be a positive number, got 0"),
        # Over the grammar's one cap (the magics' too): more values than a sweep holds runs.
        (lambda w: setattr(w.controls["band"].step, "value", 1e-8),
         "band: a step of 0.00000001 from 0 to 0.05 has 5,000,001 values; at most 1,000,000 per parameter"),
    ]
    for spoil, message in cases:
        widget = make_widget(Knobs, daily)
        spoil(widget)
        assert message in error_shown(widget), (message, widget.message.value)
        assert widget.estimate.value == ""
        widget.run_button.click()  # disabled in a browser; from Python it must do nothing either
        assert widget.run() is None and widget.result is None
    # Two problems at once are both listed; fixing them clears the message and enables Run.
    widget = make_widget(Knobs, daily)
    widget.controls["kind"].select.value = ()
    widget.where_box.value = "fast <"
    shown = error_shown(widget)
    assert "kind: select at least one value" in shown and "not a valid expression" in shown
    widget.controls["kind"].select.value = ("sma",)
    widget.where_box.value = "fast < 20"
    assert widget.message.value == "" and not widget.run_button.disabled
    assert widget.runs == len(plan_sweep(Knobs, widget.grid(), where="fast < 20")) == 9 * 11 * 2


# ---------------------------------------------------------------------- runs
def test_run_in_process_matches_sweep_and_fills_the_results(daily):
    widget = sma_widget(daily)
    assert widget.runs == 15 and widget.results_area.layout.display == "none"
    result = run_and_wait(widget)
    expected = nbb.sweep(SmaCross, daily, SMA_GRID, where="fast < slow", progress=False)
    pd.testing.assert_frame_equal(result.results[COMPARED], expected.results[COMPARED])
    assert result.status == "complete" and result.engines == 0
    assert widget.message.value.startswith("complete: 15 of 15 runs finished in")
    assert widget.progress is widget.progress_area.children[0]
    assert widget.progress.bar.value == 15 and widget.progress.bar.bar_style == "success"
    assert not widget.run_button.disabled and widget.cancel_button.disabled
    assert not widget.save_button.disabled and widget.results_area.layout.display == ""
    # The table tab: the best rows by the metric, best first.
    ranked = result.results.sort_values("sharpe", ascending=False).index[:15]
    table = widget.figures["table"].data[0]
    assert table.cells.values[0] == [str(i) for i in ranked]
    # The row chooser lists them, and the best one is shown.
    assert [row for _, row in widget.rows.options] == list(ranked)
    assert widget.rows.options[0][0].startswith(f"{ranked[0]}: fast=")
    best = result.best
    assert widget.rows.value == result.best_index and widget.detail_result.strategy == best
    equity = nbb.backtest(best, daily).equity
    assert np.array_equal(widget.figures["detail"].data[0].y, equity.to_numpy())
    assert f"{len(widget.detail_result.trades)} trades" in widget.trades.value
    assert widget.detail_output.outputs  # the chart is shown


def test_the_min_trades_box_reaches_the_sweep_and_its_code(daily):
    widget = sma_widget(daily, min_trades=60)
    assert widget.min_trades_box.value == 60 and widget.options()["min_trades"] == 60
    assert "min_trades=60" in widget.sweep_call()
    result = run_and_wait(widget)
    expected = nbb.sweep(SmaCross, daily, SMA_GRID, where="fast < slow", progress=False, min_trades=60)
    assert result.min_trades == 60 and result.best_index == expected.best_index
    assert result.results.loc[result.best_index, "trades"] >= 60
    with pytest.raises(SweepError, match="min_trades"):
        make_widget(SmaCross, daily, min_trades=-1)


def test_tabs_show_the_sweeps_charts(daily):
    widget = sma_widget(daily)
    result = run_and_wait(widget)
    heatmap = widget.show_tab("heatmap")
    assert widget.tabs.selected_index == 1 and widget.heatmap_output.outputs
    assert (widget.heatmap_x.value, widget.heatmap_y.value) == ("fast", "slow")
    np.testing.assert_array_equal(heatmap.data[0].z, result.heatmap("fast", "slow").data[0].z)
    widget.heatmap_x.value, widget.heatmap_y.value = "slow", "fast"
    assert widget.figures["heatmap"].layout.xaxis.title.text == "slow"
    widget.heatmap_y.value = "slow"  # the same param twice: said in the tab, no traceback
    assert "x and y must be two different params" in widget.tab_notes["heatmap"].value
    assert "heatmap" not in widget.figures and widget.heatmap_output.outputs == ()
    # Two params vary: parallel coordinates say what to use instead.
    assert widget.show_tab("parallel coordinates") is None
    assert "parallel_coordinates needs three or more params that vary" in \
        widget.tab_notes["parallel coordinates"].value
    distribution = widget.show_tab("distribution")
    assert sorted(distribution.data[0].x) == sorted(result.results["sharpe"].dropna())
    with pytest.raises(ValueError, match="tab must be one of 'table', 'heatmap'"):
        widget.show_tab("pie")


def test_parallel_coordinates_and_one_param_heatmap_note(daily):
    widget = make_widget(Knobs, daily)
    set_range(widget, "fast", 10, 20, 10)
    set_range(widget, "band", 0.0, 0.01, 0.01)
    widget.controls["long_only"].buttons.value = (True,)
    run_and_wait(widget)
    parallel = widget.show_tab("parallel coordinates")
    assert [d.label for d in parallel.data[0].dimensions] == ["fast", "band", "kind", "sharpe"]
    single = make_widget(SmaCross, daily, grid={"fast": [5, 10, 20]})
    run_and_wait(single)
    assert single.show_tab("heatmap") is None
    assert "the heatmap needs two params that vary; this sweep varies 1 (fast)" in \
        single.tab_notes["heatmap"].value


def test_selecting_a_row_shows_its_chart_and_trades(daily):
    widget = make_widget(Fragile, daily, grid={"fast": [5, 10, 20], "slow": [40]})
    result = run_and_wait(widget)
    assert result.failed == 1 and "1 failed" in widget.message.value
    assert 1 not in [row for _, row in widget.rows.options]  # the failed row is not offered
    detail = widget.select(2)
    assert detail.strategy == Fragile(fast=20, slow=40) and widget.rows.value == 2
    assert np.array_equal(widget.figures["detail"].data[0].y, nbb.backtest(Fragile(20, 40), daily).equity)
    assert widget.figures["detail"].layout.title.text == "row 2: fast=20, slow=40"
    # A failing row is offered when asked for, and its error shown, not raised.
    assert widget.select(1) is None
    assert "row 1: fast=10, slow=40" in widget.detail_note.value
    assert "fast=10 is not allowed" in widget.detail_note.value
    assert widget.trades.value == "" and widget.detail_output.outputs == ()
    with pytest.raises(IndexError, match="row must be a row number from 0 to 2, got 3"):
        widget.select(3)
    with pytest.raises(SweepError, match="select\\(row\\) needs a finished run: click Run first"):
        make_widget(SmaCross, daily).select(0)


@pytest.mark.cluster
def test_run_on_the_cluster_matches_sweep(cluster, daily, monkeypatch):
    # Other tests start and stop clusters of their own: make the fixture's the current one.
    monkeypatch.setattr(nbb.Cluster, "_current", cluster)
    widget = sma_widget(daily, cluster=cluster, engines=2)
    assert (widget.engines_box.value, widget.engines_box.max) == (2, 2)
    # Without engines=, the cluster's (or the current cluster's) engines are the default.
    assert make_widget(SmaCross, daily, cluster=cluster, engines=None).engines_box.value == 2
    assert make_widget(SmaCross, daily, engines=None).engines_box.value == 2  # it is current now
    assert widget.estimate.value.startswith("15 runs, under 1 s on 2 engines")
    options = widget.options()
    assert options["cluster"] is cluster and options["engines"] == 2
    result = run_and_wait(widget)
    expected = nbb.sweep(SmaCross, daily, SMA_GRID, where="fast < slow", cluster=cluster, engines=2,
                         progress=False)
    assert result.status == expected.status == "complete" and result.engines == 2
    pd.testing.assert_frame_equal(result.results[COMPARED], expected.results[COMPARED])
    assert set(result.results["engine"].dropna()) <= set(cluster.ids)
    assert result.results["engine"].notna().sum() >= 14  # the first point runs here, to measure it
    assert widget.detail_result.strategy == expected.best


@pytest.mark.cluster
def test_a_sweep_that_cannot_start_is_a_message(cluster, daily):
    widget = make_widget(Unsendable, daily, grid={"fast": [5, 10], "slow": [40]}, cluster=cluster)
    assert widget.run() is None and widget.result is None
    assert "strategy class Unsendable cannot be sent to the engines: its attribute &#x27;lock&#x27;" \
        in widget.message.value
    assert not widget.run_button.disabled  # the controls are fine: Run may be tried again
    with pytest.raises(SweepError, match="engines=3 but the cluster has 2 engine"):
        make_widget(SmaCross, daily, cluster=cluster, engines=3)


def test_cancel_keeps_the_finished_rows(daily):
    widget = make_widget(Sleepy, daily, grid={"fast": list(range(5, 85))})
    widget.run_button.click()
    assert widget.running and widget.run_button.disabled and not widget.cancel_button.disabled
    assert widget.progress.cancel_button.layout.display == "none"  # one Cancel on screen
    assert widget.run() is None  # one run at a time
    deadline = time.monotonic() + WAIT
    while widget.result.progress < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    widget.cancel_button.click()
    result = widget.result
    result.result(timeout=WAIT)
    assert result.status == "cancelled" and 3 <= result.progress < 80
    finished = result.results["status"] == "done"
    assert result.results.loc[finished, "sharpe"].notna().all()
    assert widget.message.value.startswith(f"cancelled: {result.progress} of 80 runs finished")
    assert len(widget.rows.options) == min(result.progress, widget.top)
    assert not widget.run_button.disabled and widget.cancel_button.disabled
    assert widget.progress.bar.bar_style == "warning"
    assert widget.cancel() is False  # nothing left to cancel


def test_save_csv(daily, tmp_path):
    widget = sma_widget(daily)
    assert widget.save_button.disabled and widget.save_csv(tmp_path / "early.csv") is None
    assert "Nothing to save yet: click Run first" in widget.message.value
    result = run_and_wait(widget)
    widget.csv_path.value = str(tmp_path / "rows.csv")
    widget.save_button.click()
    assert widget.message.value == f"Saved 15 rows to {tmp_path / 'rows.csv'}"
    saved = pd.read_csv(tmp_path / "rows.csv", index_col="row")
    assert list(saved.columns) == list(result.results.columns)
    np.testing.assert_allclose(saved["sharpe"], result.results["sharpe"])
    assert saved["fast"].tolist() == result.results["fast"].tolist()
    assert widget.save_csv(tmp_path / "missing" / "rows.csv") is None
    assert "Could not save" in widget.message.value and "non-existent directory" in widget.message.value


# ---------------------------------------------------------------------- options
def test_options_as_the_magic_passes_them(daily):
    widget = make_widget(SmaCross, daily, grid={"fast": list(range(5, 61, 5))}, metric="sortino",
                         maximize=False, engines=1, where="fast < slow", commission=0.002, cash=5_000)
    fast, slow = widget.controls["fast"], widget.controls["slow"]
    assert (fast.slider.value, fast.step.value) == ((5, 60), 5)
    assert slow.slider.value == (30, 30)  # outside the grid: the default
    assert (widget.metric_box.value, widget.maximize_box.value, widget.where_box.value) == \
        ("sortino", False, "fast < slow")
    assert widget.runs == 5
    result = run_and_wait(widget)
    assert (result.metric, result.maximize) == ("sortino", False)
    assert (result.settings.commission, result.settings.cash) == (0.002, 5_000)
    expected = nbb.sweep(SmaCross, daily, {"fast": [5, 10, 15, 20, 25], "slow": [30]}, metric="sortino",
                         maximize=False, commission=0.002, cash=5_000, progress=False)
    pd.testing.assert_frame_equal(result.results[COMPARED], expected.results[COMPARED])
    assert widget.rows.value == expected.best_index  # the lowest sortino first


def test_an_instance_starts_at_its_values(daily):
    widget = make_widget(SmaCross(fast=7, slow=50), daily)
    assert widget.grid() == {"fast": [7], "slow": [50]} and widget.runs == 1
    widget = make_widget(Unbounded, daily, grid={"lookback": range(100, 301, 100)})
    assert widget.controls["lookback"].slider.max == 300  # widened past (1, 40) for the grid
    assert widget.grid() == {"lookback": [100, 200, 300]}


def test_uneven_grid_values_are_kept_until_the_slider_moves(daily):
    widget = make_widget(SmaCross, daily, grid={"fast": [5, 10, 20], "slow": [40, 80]})
    fast = widget.controls["fast"]
    assert widget.grid() == {"fast": [5, 10, 20], "slow": [40, 80]} and widget.runs == 6
    assert "5, 10, 20 (move the slider for a range)" in fast.note.value
    assert (fast.slider.value, fast.step.value) == ((5, 20), 5)
    fast.slider.value = (5, 25)
    assert widget.grid()["fast"] == [5, 10, 15, 20, 25] and fast.note.value == "" and widget.runs == 10


def test_bad_options_raise_with_their_name(daily, small_universe):
    cases = [
        (dict(comission=0.1), TypeError, "SweepWidget got an unknown option 'comission'; the simulation "
                                         "settings are cash, commission"),
        (dict(metric="sharp"), SweepError, "metric 'sharp' is not a numeric stat. Did you mean: sharpe?"),
        (dict(maximize="yes"), TypeError, "maximize must be True or False, got 'yes'"),
        (dict(grid={"fsat": [5]}), UnknownParamError,
         "Strategy 'SmaCross' has no parameter 'fsat'. Did you mean: fast?"),
        (dict(grid={"fast": [500]}), ParamError, "SmaCross parameter 'fast' must be <= 100, got 500"),
        (dict(grid=[5, 10]), TypeError, "grid must be a dict of {name: values}, got list"),
        (dict(where=lambda p: p.fast < p.slow), TypeError, "where must be a str expression"),
        (dict(top=0), SweepError, "top must be a positive int, got 0"),
        (dict(commission=2), ValueError, "commission"),
        (dict(symbols=["AAA"]), SweepError, "symbols= selects symbols of a universe"),
        (dict(cluster="local"), TypeError, "cluster must be an nbbacktest.Cluster, got str"),
    ]
    for options, error, message in cases:
        with pytest.raises(error) as raised:
            make_widget(SmaCross, daily, **options)
        assert message in str(raised.value), (options, str(raised.value))
    with pytest.raises(TypeError, match="SweepWidget's strategy must be a Strategy instance .* or a Strategy "
                                        "subclass, got str"):
        SweepWidget("SmaCross", daily)
    with pytest.raises(SweepError, match=r"symbols \['ZZZ'\] are not in the data"):
        make_widget(SmaCross, small_universe, symbols=["ZZZ"])


def test_a_universe_runs_every_point_on_every_symbol(small_universe):
    widget = make_widget(SmaCross, small_universe, grid={"fast": [5, 10], "slow": [30, 60]})
    assert widget.runs == 12
    assert widget.estimate.value.startswith("4 points × 3 symbols = 12 runs")
    result = run_and_wait(widget)
    assert result.results["symbol"].tolist() == list(small_universe) * 4
    row = widget.rows.value
    symbol = result.results.at[row, "symbol"]
    assert np.array_equal(widget.detail_result.equity,
                          nbb.backtest(result.plan.strategy_at(row), small_universe[symbol]).equity)
    assert widget.heatmap_x.options == ("fast", "slow", "symbol")


# ---------------------------------------------------------------------- outside a kernel
def test_outside_a_kernel_it_says_it_needs_jupyter_and_gives_the_sweep_call(daily):
    widget = sma_widget(daily, commission=0.001)
    text = repr(widget)
    assert text.startswith("<SweepWidget SmaCross: 15 runs, under 1 s in this process>")
    assert "SweepWidget is an interactive widget: it needs Jupyter" in text
    call = widget.sweep_call()
    assert call == ("nbb.sweep(SmaCross, data, grid={'fast': range(5, 35, 5), 'slow': range(20, 80, 20)}, "
                    "where='fast < slow', metric='sharpe', commission=0.001)")
    assert call in text
    # The call runs as written, and gives what the widget's Run gives.
    swept = eval(call, {"nbb": nbb, "SmaCross": SmaCross, "data": daily})  # noqa: S307 - our own text
    result = run_and_wait(widget)
    pd.testing.assert_frame_equal(result.results[COMPARED], swept.results[COMPARED])
    assert "last run: <SweepResult complete: 15/15 runs" in repr(widget)
    widget.where_box.value = "fast <"
    assert repr(widget).startswith("<SweepWidget SmaCross: where='fast <' is not a valid expression")
    assert "grid={...}" in widget.sweep_call()


def test_the_sweep_call_names_seed_symbols_and_direction(small_universe):
    symbols = list(small_universe)[:2]
    widget = make_widget(SmaCross, small_universe, grid={"fast": [5, 10], "slow": [40]}, seed=7,
                         symbols=symbols, maximize=False, metric="max_drawdown_pct")
    assert widget.sweep_call() == (
        "nbb.sweep(SmaCross, data, grid={'fast': [5, 10], 'slow': [40]}, metric='max_drawdown_pct', "
        f"maximize=False, seed=7, symbols={symbols!r})")
    swept = eval(widget.sweep_call(), {"nbb": nbb, "SmaCross": SmaCross, "data": small_universe})  # noqa: S307
    result = run_and_wait(widget)
    pd.testing.assert_frame_equal(result.results[["symbol", *COMPARED]], swept.results[["symbol", *COMPARED]])
    assert result.results["symbol"].unique().tolist() == symbols


def test_lazy_exports():
    assert "SweepWidget" in nbbacktest.display.__all__ and "explore" in nbbacktest.display.__all__
    assert nbb.SweepWidget is nbbacktest.display.SweepWidget is sweep_widget.SweepWidget
    assert nbbacktest.display.explore(SmaCross, nbb.load_sample("daily"), delay=0).runs == 1


# ---------------------------------------------------------------------- in a real kernel
KERNEL_SETUP = KERNEL_SLEEPY + textwrap.dedent("""
    w = nbb.SweepWidget(Sleepy, nbb.load_sample("daily"), grid={"fast": list(range(5, 65))}, engines=1)
    display(w)
    print("IDS", w.run_button.model_id, w.cancel_button.model_id, "Jupyter" in repr(w))
""")


def test_run_and_cancel_clicks_in_a_real_kernel_keep_it_responsive():
    """Clicks sent as a front end sends them; the kernel runs other cells while the sweep runs."""
    from jupyter_client.manager import start_new_kernel

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    manager, client = start_new_kernel(kernel_name="python3", startup_timeout=60, env=env)

    def run_cell(code: str) -> str:
        cell = client.execute(code)
        output = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                message = client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            kind, content = message["msg_type"], message["content"]
            if kind == "stream":
                output += content["text"]
            elif kind == "error":
                pytest.fail(f"the cell raised {content['ename']}: {content['evalue']}")
            elif (kind == "status" and content["execution_state"] == "idle"
                  and message["parent_header"].get("msg_id") == cell):
                return output
        pytest.fail(f"the cell did not finish: {output}")

    def click(comm_id: str) -> None:
        client.shell_channel.send(client.session.msg("comm_msg", {
            "comm_id": comm_id, "data": {"method": "custom", "content": {"event": "click"}}}))

    try:
        words = run_cell(KERNEL_SETUP).split("IDS ")[1].split()
        run_id, cancel_id, says_needs_jupyter = words[0], words[1], words[2]
        click(run_id)
        started = time.monotonic()
        running = run_cell("time.sleep(0.5); print('RUNNING', w.running, w.result.progress, len(w.result))")
        answered = time.monotonic() - started
        click(cancel_id)
        ended = run_cell("w.result.result(timeout=30); print('STATUS', w.result.status, w.result.progress, "
                         "w.results_area.layout.display == '', w.message.value.split(':')[0])")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert says_needs_jupyter == "False"  # in a kernel the text does not ask for Jupyter
    flag, progress, total = running.split("RUNNING ")[1].split()
    assert flag == "True" and 0 < int(progress) < int(total) == 60, running
    assert answered < 3.0  # the sweep (about 6 s) did not hold the kernel
    status, done, shown, said = ended.split("STATUS ")[1].split()
    assert status == "cancelled" and int(done) < 60 and shown == "True" and said == "cancelled", ended


# ---------------------------------------------------------------------- one range grammar
@pytest.mark.parametrize(("name", "text"), [
    ("fast", "5:60:5"), ("fast", "5:31:5"), ("slow", "40:100"), ("fast", "2:100:7"),
])
def test_a_range_reads_the_same_in_the_magic_and_the_widget(daily, name, text):
    """``--grid NAME=TEXT`` and the widget's control show the same values, and the control's range
    is that text again, in the magics' grammar (stop excluded)."""
    from nbbacktest.magics import parse_grid_spec

    param = SmaCross.params()[name]
    values = parse_grid_spec(name, text, param, "SmaCross")
    widget = make_widget(SmaCross, daily, grid={name: values})
    control = widget.controls[name]
    assert control.values() == values == widget.grid()[name]
    assert parse_grid_spec(name, str(control.range()), param, "SmaCross") == values
    # Moved, the slider's handles are the first and last values of the range it shows.
    control.slider.value = (values[0], values[-1] + control.step.value)
    assert parse_grid_spec(name, str(control.range()), param, "SmaCross") == control.values()
    assert control.values()[-1] == values[-1] + control.step.value


def test_a_float_range_reads_the_same_in_the_magic_and_the_widget(daily):
    from nbbacktest.magics import parse_grid_spec

    param = Knobs.params()["band"]
    values = parse_grid_spec("band", "0:0.05:0.01", param, "Knobs")
    assert values == [0.0, 0.01, 0.02, 0.03, 0.04]
    control = make_widget(Knobs, daily, grid={"band": values}).controls["band"]
    assert control.values() == values and str(control.range()) == "0:0.05:0.01"


class WidgetMomentum(nbb.PortfolioStrategy):
    lookback = nbb.Param(60, low=10, high=200, step=10)

    def scores(self, universe):
        return universe.close.pct_change(self.lookback, fill_method=None)


def test_the_widget_sweeps_a_portfolio_strategy_ranked_by_its_ic():
    universe = nbb.load_sample("universe")
    widget = nbb.SweepWidget(WidgetMomentum(), universe, metric="ic_mean")  # from its values
    offered = [value for _, value in widget.metric_box.options]
    assert {"ic_mean", "turnover", "long_return_pct"} <= set(offered)
    set_range(widget, "lookback", 20, 60, 20)
    result = run_and_wait(widget)
    assert result.status == "complete" and len(result) == 3  # one run per point, not per symbol
    expected = nbb.backtest(WidgetMomentum(lookback=40), universe).stats["ic_mean"]
    assert result.results.set_index("lookback").at[40, "ic_mean"] == expected
