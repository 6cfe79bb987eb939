"""explore(): a slider per Param, a debounced backtest per change, the chart and stats redrawn."""

from __future__ import annotations

import importlib
import time

import numpy as np
import pytest
from conftest import Knobs, SmaCross

import nbbacktest as nbb
import nbbacktest.display
from nbbacktest.display.explorer import Explorer, explore, param_slider


class Picky(SmaCross):
    """Raises when the averages cross over (fast >= slow)."""

    def signals(self, data):
        if self.fast >= self.slow:
            raise ValueError(f"fast={self.fast} must be below slow={self.slow}")
        return super().signals(data)


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_one_control_per_param(daily):
    explorer = explore(Knobs, daily)
    kinds = {name: type(slider).__name__ for name, slider in explorer.sliders.items()}
    assert kinds == {"fast": "IntSlider", "band": "FloatSlider", "long_only": "Checkbox",
                     "kind": "Dropdown", "label": "Text"}
    fast, band = explorer.sliders["fast"], explorer.sliders["band"]
    assert (fast.min, fast.max, fast.step, fast.value, fast.tooltip) == (2, 50, 2, 10, "average length")
    assert (band.min, band.max, band.step, band.value) == (0.0, 0.05, 0.0005, 0.0)
    assert [value for _, value in explorer.sliders["kind"].options] == ["sma", "ema"]
    assert explorer.values() == {"fast": 10, "band": 0.0, "long_only": True, "kind": "sma", "label": "x"}
    # Params without bounds: a range around the default; an instance's values to start from.
    free = param_slider("lookback", nbb.Param(20), 300)
    assert (free.min, free.max, free.value) == (1, 300, 300)
    assert explore(SmaCross(fast=7, slow=50), daily).values() == {"fast": 7, "slow": 50}


def test_update_backtests_the_values_shown_and_redraws(daily):
    explorer = explore(SmaCross, daily, commission=0.001)
    assert explorer.runs == 1 and explorer.result.strategy == SmaCross()  # drawn on construction
    explorer.sliders["fast"].value = 20
    explorer.sliders["slow"].value = 80
    result = explorer.update()
    expected = nbb.backtest(SmaCross(20, 80), daily, commission=0.001)
    assert result is explorer.result and result.strategy == SmaCross(20, 80)
    assert result.settings.commission == 0.001
    assert np.array_equal(explorer.figure.data[0].y, expected.equity.to_numpy())
    assert explorer.figure.layout.title.text == "SmaCross(fast=20, slow=80)"
    labels, values = explorer.stats_figure.data[0].cells.values
    assert values[labels.index("Sharpe ratio")] == f"{expected.stats['sharpe']:.2f}"
    assert explorer.chart.outputs and explorer.stats.outputs
    assert explorer.status.value.startswith("SmaCross(fast=20, slow=80): ran in ")
    assert explorer.message.value == ""


def test_changes_are_debounced(daily):
    explorer = explore(SmaCross, daily, delay=0.3)
    before = explorer.runs
    for fast in (11, 12, 13, 14, 15):  # a drag: five values in quick succession
        explorer.sliders["fast"].value = fast
    assert explorer.pending and explorer.runs == before  # nothing ran yet
    wait_for(lambda: not explorer.pending and explorer.runs > before)
    time.sleep(0.4)  # nothing else was queued
    assert explorer.runs == before + 1
    assert explorer.result.strategy == SmaCross(fast=15, slow=30)
    # delay=0 runs at once; close() drops a waiting run.
    instant = explore(SmaCross, daily, delay=0)
    instant.sliders["slow"].value = 60
    assert instant.runs == 2 and instant.result.strategy.slow == 60
    explorer.sliders["fast"].value = 30
    explorer.close()
    time.sleep(0.5)
    assert explorer.runs == before + 1 and not explorer.pending


def test_a_failing_value_is_a_message_and_the_last_chart_stays(daily):
    explorer = explore(Picky, daily, delay=0)
    good = explorer.result
    explorer.sliders["fast"].value = 40
    assert explorer.result is good and explorer.runs == 1
    assert "fast=40 must be below slow=30" in explorer.message.value
    assert "Traceback" not in explorer.message.value
    explorer.sliders["slow"].value = 60
    assert explorer.message.value == "" and explorer.result.strategy == Picky(40, 60)
    # Every kind of control reaches the strategy.
    knobs = explore(Knobs, daily, delay=0)
    knobs.sliders["label"].value = "y"
    knobs.sliders["kind"].value = "ema"
    knobs.sliders["long_only"].value = False
    assert knobs.result.strategy == Knobs(label="y", kind="ema", long_only=False)


def test_a_universe_gets_a_symbol_box(small_universe):
    symbols = list(small_universe)
    explorer = explore(SmaCross, small_universe, delay=0, symbol=symbols[1])
    assert explorer.symbol_box.options == tuple(symbols) and explorer.symbol_box.value == symbols[1]
    explorer.symbol_box.value = symbols[2]
    expected = nbb.backtest(SmaCross(), small_universe[symbols[2]])
    assert np.array_equal(explorer.result.equity, expected.equity)
    assert explorer.status.value.startswith(f"SmaCross(fast=10, slow=30) on {symbols[2]}: ran in")


def test_bad_options_raise_with_their_name(daily, small_universe):
    cases = [
        (dict(comission=0.1), TypeError, "explore got an unknown option 'comission'"),
        (dict(delay=-1), ValueError, "delay must be a number of seconds >= 0, got -1"),
        (dict(symbol="AAA"), ValueError, "symbol= picks a symbol of a universe, but data is a single frame"),
        (dict(cash=0), ValueError, "cash"),
    ]
    for options, error, message in cases:
        with pytest.raises(error) as raised:
            explore(SmaCross, daily, **options)
        assert message in str(raised.value)
    with pytest.raises(ValueError, match="symbol 'ZZZ' is not in the data; it has"):
        explore(SmaCross, small_universe, symbol="ZZZ")
    with pytest.raises(TypeError, match="explore's strategy must be a Strategy instance .* or a Strategy "
                                        "subclass, got int 3"):
        explore(3, daily)


def test_outside_a_kernel_it_says_it_needs_jupyter(daily):
    explorer = explore(SmaCross, daily)
    text = repr(explorer)
    first, note = text.split("\n")
    assert first.startswith("<Explorer SmaCross(fast=10, slow=30): return_pct ")
    assert "explore() is an interactive widget: it needs Jupyter" in note
    assert "nbb.backtest(SmaCross(fast=10, slow=30), data)" in note and "nbb.sweep(" in note


def test_explore_is_the_function_wherever_it_is_reached(daily):
    importlib.import_module("nbbacktest.display.explorer")
    assert isinstance(nbb.explore(SmaCross, daily, delay=0), Explorer)
    assert isinstance(nbbacktest.display.explore(SmaCross, daily, delay=0), Explorer)
    assert nbb.explore is explore and explore.__module__ == "nbbacktest.display.explorer"
