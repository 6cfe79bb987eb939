"""Charts: figure data checked against values computed here, and every bad argument."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.display import charts
from nbbacktest.display.widget import figure_widget
from nbbacktest.errors import SweepError


class Banded(nbb.Strategy):
    """Three params: long while the fast average is above the slow one by ``band``."""

    fast = nbb.Param(10, low=2, high=100)
    slow = nbb.Param(30, low=5, high=300)
    band = nbb.Param(0.0, low=0.0, high=0.1)

    def signals(self, data):
        close = data["Close"]
        fast, slow = close.rolling(self.fast).mean(), close.rolling(self.slow).mean()
        return (fast > slow * (1 + self.band)).astype(float)


BANDED_GRID = {"fast": [5, 10, 20], "slow": [10, 30, 60], "band": [0.0, 0.01, 0.03]}


@pytest.fixture(scope="module")
def banded(daily):
    # fast < slow leaves holes in the (fast, slow) grid.
    return nbb.sweep(Banded, daily, BANDED_GRID, where=lambda p: p.fast < p.slow, progress=False)


@pytest.fixture(scope="module")
def result(daily):
    return nbb.backtest(SmaCross(), daily)


# ---------------------------------------------------------------------- one backtest
def test_result_plot_has_equity_drawdown_and_trade_markers(result):
    fig = result.plot()
    assert [t.name for t in fig.data] == ["equity", "drawdown", "entry", "exit"]
    equity, drawdown, entry, exit_ = fig.data
    assert np.array_equal(equity.y, result.equity.to_numpy())
    assert np.allclose(drawdown.y, result.drawdown.to_numpy() * 100)
    assert fig.layout.xaxis.matches == "x2"  # the drawdown shares the time axis
    assert fig.layout.yaxis2.ticksuffix == "%"
    trades = result.trades
    assert len(entry.x) == len(exit_.x) == len(trades) > 0
    assert np.allclose(entry.y, result.equity.loc[trades.entry_time].to_numpy())
    assert np.allclose(exit_.y, result.equity.loc[trades.exit_time].to_numpy())
    colours = ["#2ca02c" if pnl > 0 else "#d62728" for pnl in trades.pnl]
    assert list(exit_.marker.color) == colours
    assert fig.layout.title.text == "SmaCross(fast=10, slow=30)"


def test_result_plot_options(result):
    assert [t.name for t in result.plot(trades=False).data] == ["equity", "drawdown"]
    with_stats = result.plot(stats=True, title="mine", height=700)
    assert with_stats.data[-1].type == "table" and with_stats.layout.height == 700
    assert with_stats.data[-1].cells.values[0][0] == "Start"
    assert with_stats.layout.title.text == "mine"
    with pytest.raises(TypeError, match="colour"):
        result.plot(colour="red")


def test_a_result_without_trades_has_no_markers(daily):
    class Flat(nbb.Strategy):
        def signals(self, data):
            return data["Close"] * 0.0

    assert [t.name for t in nbb.backtest(Flat(), daily).plot().data] == ["equity", "drawdown"]


# ---------------------------------------------------------------------- heatmap
def expected_grid(results: pd.DataFrame, x: str, y: str, metric: str, fold) -> np.ndarray:
    """The heatmap matrix computed the long way: rows are y values, columns x values."""
    xs, ys = sorted(results[x].unique()), sorted(results[y].unique())
    grid = np.full((len(ys), len(xs)), np.nan)
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            values = [v for v, a, b in zip(results[metric], results[x], results[y])
                      if a == xv and b == yv and not math.isnan(v)]
            if values:
                grid[i, j] = fold(values)
    return grid


@pytest.mark.parametrize(("agg", "fold"), [("max", max), ("min", min), ("mean", np.mean)])
def test_heatmap_matrix_matches_a_computation_by_hand(banded, agg, fold):
    fig = banded.heatmap("fast", "slow", agg=agg)
    heat = fig.data[0]
    assert heat.type == "heatmap" and heat.z.shape == (3, 3)
    expected = expected_grid(banded.results, "fast", "slow", "sharpe", fold)
    assert np.allclose(heat.z, expected, equal_nan=True)
    assert np.isnan(heat.z[0, 1]) and np.isnan(heat.z[0, 2])  # slow=10 with fast >= 10: none
    assert heat.x == ("5", "10", "20") and heat.y == ("10", "30", "60")
    assert fig.layout.title.text == f"sharpe by fast and slow ({agg} over band)"
    assert heat.colorscale and not heat.reversescale


def test_heatmap_of_another_metric_and_of_a_minimized_one(banded, daily):
    returns = banded.heatmap("band", "fast", metric="return_pct").data[0]
    expected = expected_grid(banded.results, "band", "fast", "return_pct", max)
    assert np.allclose(returns.z, expected, equal_nan=True)
    calm = nbb.sweep(SmaCross, daily, {"fast": [5, 10], "slow": [30, 60]},
                     metric="volatility_ann_pct", maximize=False, progress=False)
    assert calm.heatmap("fast", "slow").data[0].reversescale  # the best is bright either way


def test_bad_heatmap_arguments_name_the_argument(banded, daily):
    with pytest.raises(SweepError, match="x='fsat' is not a param of the sweep. Did you mean: fast\\?"):
        banded.heatmap("fsat", "slow")
    with pytest.raises(SweepError, match="y='sharpe' is not a param of the sweep.*Params: fast, slow, band"):
        banded.heatmap("fast", "sharpe")
    with pytest.raises(SweepError, match="x and y must be two different params, got x=y='fast'"):
        banded.heatmap("fast", "fast")
    with pytest.raises(SweepError, match="metric='sharp' is not a column.*Did you mean: sharpe\\?"):
        banded.heatmap("fast", "slow", metric="sharp")
    with pytest.raises(SweepError, match="agg must be one of 'max', 'min', 'mean', 'median', got 'sum'"):
        banded.heatmap("fast", "slow", agg="sum")
    mixed = nbb.run_many([SmaCross(5, 30), Banded(10, 30, 0.0)], daily, progress=False)
    with pytest.raises(SweepError, match="heatmap needs runs of one strategy class.*SmaCross, Banded"):
        mixed.heatmap("fast", "slow")


# ---------------------------------------------------------------------- other sweep charts
def test_parallel_coordinates_has_one_axis_per_param_and_the_metric(banded):
    fig = banded.parallel_coordinates()
    lines = fig.data[0]
    assert [d.label for d in lines.dimensions] == ["fast", "slow", "band", "sharpe"]
    done = banded.results.dropna(subset=["sharpe"])
    assert np.array_equal(lines.dimensions[0].values, done.fast.to_numpy(float))
    assert np.allclose(lines.dimensions[3].values, done.sharpe)
    assert np.allclose(lines.line.color, done.sharpe) and lines.line.showscale


def test_parallel_coordinates_needs_three_varying_params(daily, banded):
    two = nbb.sweep(SmaCross, daily, {"fast": [5, 10], "slow": [30, 60]}, progress=False)
    with pytest.raises(SweepError, match=r"three or more params that vary; this sweep has 2 \(fast, slow\)"):
        two.parallel_coordinates()
    mixed = nbb.run_many([SmaCross(5, 30), Banded(10, 30, 0.0)], daily, progress=False)
    with pytest.raises(SweepError, match="parallel_coordinates needs runs of one strategy class"):
        mixed.parallel_coordinates()
    with pytest.raises(SweepError, match="metric='nope'"):
        banded.parallel_coordinates(metric="nope")


def test_distribution_marks_the_best(banded):
    fig = banded.distribution()
    values = banded.results.sharpe.dropna().to_numpy()
    assert np.allclose(np.sort(fig.data[0].x), np.sort(values))
    assert fig.layout.shapes[0].x0 == fig.layout.shapes[0].x1 == banded.best_value
    assert fig.layout.annotations[0].text == f"best {banded.best_value:.2f}"
    other = banded.distribution("return_pct")
    assert other.layout.shapes[0].x0 == banded.results.return_pct.max()


def test_compare_overlays_the_best_equity_curves(banded):
    fig = banded.compare(top=3)
    best = banded.results.sort_values("sharpe", ascending=False).index[:3]
    assert len(fig.data) == 3
    for trace, row in zip(fig.data, best):
        assert trace.name.startswith(f"row {row}: fast=")
        assert np.array_equal(trace.y, banded.detail(int(row)).equity.to_numpy())
    with pytest.raises(SweepError, match="top must be a positive int, got 0"):
        banded.compare(top=0)


def test_overview_picks_heatmap_for_two_params_and_distribution_otherwise(banded):
    frame = banded.results
    two = charts.sweep_overview(frame[frame.band == 0.0], metric="sharpe")
    assert [t.type for t in two.data] == ["table", "heatmap"]
    three = charts.sweep_overview(frame, metric="sharpe")
    assert [t.type for t in three.data] == ["table", "histogram"]
    assert three.layout.shapes[0].x0 == banded.best_value


def test_figure_bundle_follows_plotly_renderer(monkeypatch):
    fig = go.Figure(go.Bar(y=[1, 2]))
    monkeypatch.setattr(pio.renderers, "default", "json")
    assert list(charts.figure_bundle(fig)) == ["application/json"]
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    bundle = charts.figure_bundle(fig)
    assert bundle["application/vnd.plotly.v1+json"]["data"][0]["type"] == "bar"


def test_figure_widget_without_anywidget_is_an_output_holding_the_figure(monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    output = figure_widget(go.Figure(go.Bar(y=[1, 2])))
    assert type(output).__name__ == "Output"
    (shown,) = output.outputs
    assert shown["output_type"] == "display_data"
    assert shown["data"]["application/vnd.plotly.v1+json"]["data"][0]["type"] == "bar"
