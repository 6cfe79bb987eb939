"""Portfolio charts: figure data checked against the PortfolioResult, empty states, bundle and sizes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.display import charts, portfolio
from nbbacktest.display.portfolio import (
    ic_figure,
    portfolio_bundle,
    portfolio_figure,
    quantile_figure,
    sampled_bars,
    weights_heatmap,
)
from nbbacktest.display.tables import HEADER_HEIGHT, STATS_ROW_HEIGHT
from nbbacktest.engine import views

PLOTLY = "application/vnd.plotly.v1+json"


class Momentum(nbb.PortfolioStrategy):
    lookback = 60

    def scores(self, universe):
        return universe.close.pct_change(self.lookback, fill_method=None)


class Hold(nbb.PortfolioStrategy):
    def weights(self, universe):
        return universe.close * 0 + 0.1


@pytest.fixture(scope="module")
def universe():
    return nbb.load_sample("universe")


@pytest.fixture(scope="module")
def scored(universe):
    """A scores strategy: long and short legs, monthly IC and quantiles (10 symbols x 2,500 bars)."""
    return nbb.backtest(Momentum(long=0.3, short=0.3, rebalance="M"), universe, commission=0.001)


@pytest.fixture(scope="module")
def held(universe):
    """A weights strategy: no scores, so no IC and no quantiles."""
    return nbb.backtest(Hold(), universe)


@pytest.fixture(scope="module")
def short(universe):
    """Under 500 bars: the heatmap shows every bar."""
    return nbb.backtest(Momentum(rebalance="W"), {s: f.iloc[:300] for s, f in universe.items()})


@pytest.fixture(scope="module")
def wide():
    """52 symbols x 2,520 bars, rebalanced daily: the largest figures the sizes are bounded for."""
    return nbb.backtest(Momentum(long=0.2, short=0.2, rebalance="D"), nbb.load_sample("equities"),
                        commission=0.001)


@pytest.fixture
def mimetype(monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")


def times(trace) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(np.asarray(trace.x)))


def same(a, b) -> bool:
    return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), equal_nan=True, rtol=1e-12)


# ---------------------------------------------------------------------- equity and legs
def test_portfolio_figure_draws_equity_legs_drawdown_and_turnover(scored):
    fig = portfolio_figure(scored)
    names = [t.name for t in fig.data]
    assert names == ["equity", "long leg", "short leg", "drawdown", "turnover"]
    equity, long, short_, drawdown, turnover = fig.data
    assert same(equity.y, scored.equity)
    assert times(equity).equals(pd.DatetimeIndex(scored.equity.index))
    cash = scored.settings.cash
    assert same(long.y, cash * scored.leg_equity["long"])
    assert same(short_.y, cash * scored.leg_equity["short"])
    assert same(drawdown.y, scored.drawdown * 100.0)
    assert same(turnover.y, scored.turnover * 100.0)
    assert turnover.type == "bar"
    # equity and legs on the top plot, then drawdown, then turnover, one time axis
    assert [t.yaxis for t in fig.data] == ["y", "y", "y", "y2", "y3"]
    assert fig.layout.xaxis.matches == fig.layout.xaxis2.matches == "x3"
    assert fig.layout.title.text == repr(scored.strategy)
    assert equity.hovertemplate == "%{y:,.2f}<extra>equity</extra>"


def test_the_legs_start_at_the_starting_cash(scored):
    fig = portfolio_figure(scored)
    assert fig.data[1].y[0] == fig.data[2].y[0] == scored.settings.cash


def test_plot_is_the_registered_portfolio_figure(scored, held):
    assert views.view("portfolio_plot") is portfolio_figure
    assert views.view("portfolio_bundle") is portfolio_bundle
    fig = held.plot(title="held")
    assert [t.name for t in fig.data][:3] == ["equity", "long leg", "short leg"]
    assert fig.layout.title.text == "held"
    assert same(fig.data[2].y, np.full(len(held.equity), held.settings.cash))  # no short leg


def test_stats_beside_the_chart_show_every_stat(scored):
    fig = portfolio_figure(scored, stats=True)
    table = fig.data[-1]
    assert table.type == "table" and len(table.cells.values[0]) == len(scored.stats)
    margin = fig.layout.margin
    assert fig.layout.height - margin.t - margin.b >= HEADER_HEIGHT + len(scored.stats) * STATS_ROW_HEIGHT


def test_daily_times_travel_as_dates(scored):
    x = portfolio_figure(scored).data[0].x
    assert x[0] == scored.equity.index[0].strftime("%Y-%m-%d")


# ---------------------------------------------------------------------- weights
def test_sampled_bars_keep_the_last_bar_and_the_limit():
    assert sampled_bars(2500).tolist() == list(range(4, 2500, 5))
    assert len(sampled_bars(2520)) == 420 and sampled_bars(2520)[-1] == 2519
    assert sampled_bars(300).tolist() == list(range(300))
    assert sampled_bars(0).tolist() == []


def test_heatmap_z_is_the_downsampled_weights(scored):
    fig = weights_heatmap(scored)
    (trace,) = fig.data
    rows = sampled_bars(len(scored.weights))
    expected = scored.weights.iloc[rows]
    assert trace.type == "heatmap" and trace.z.shape == (10, 500)
    assert np.allclose(trace.z, expected.to_numpy().T, atol=1e-7)
    assert list(trace.y) == [str(s) for s in scored.symbols]
    assert times(trace).equals(pd.DatetimeIndex(expected.index))
    assert trace.zmid == 0.0
    assert fig.layout.title.text == "Weights of 10 symbols at every 5th bar (500 of 2,500 bars)"
    assert fig.layout.yaxis.autorange == "reversed"  # the first symbol on top


def test_heatmap_of_a_short_result_shows_every_bar(short):
    fig = weights_heatmap(short)
    assert np.allclose(fig.data[0].z, short.weights.to_numpy().T, atol=1e-7)
    assert fig.layout.title.text == "Weights of 10 symbols"


def test_heatmap_keeps_the_most_held_symbols(scored):
    fig = weights_heatmap(scored, max_symbols=3)
    held = scored.weights.abs().mean().nlargest(3).index
    kept = [s for s in scored.symbols if s in held]
    assert list(fig.data[0].y) == kept
    assert fig.layout.title.text.startswith("Weights of the 3 most held of 10 symbols")


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "60"])
def test_heatmap_rejects_a_bad_max_symbols(scored, bad):
    with pytest.raises(ValueError, match="max_symbols must be a positive int"):
        weights_heatmap(scored, max_symbols=bad)


# ---------------------------------------------------------------------- IC and quantiles
def test_ic_bars_and_running_mean(scored):
    fig = ic_figure(scored)
    bars, mean = fig.data
    assert (bars.name, bars.type, mean.name, mean.type) == ("IC", "bar", "running mean", "scatter")
    assert same(bars.y, scored.ic)
    assert same(mean.y, scored.ic.expanding().mean())
    assert times(bars).equals(pd.DatetimeIndex(scored.ic.index))
    stats = scored.stats
    assert fig.layout.title.text == (f"IC per period ({len(scored.ic)} periods): "
                                     f"mean {stats['ic_mean']:.3f}, IR {stats['ic_ir']:.2f}")


def test_quantile_bars_and_growth(scored):
    fig = quantile_figure(scored)
    returns = scored.quantile_returns
    assert [t.name for t in fig.data] == ["mean return", "q1", "q2", "q3", "q4", "q5"]
    bars = fig.data[0]
    assert list(bars.x) == list(returns.columns)
    assert same(bars.y, returns.mean() * 100.0)
    growth = (1.0 + returns.fillna(0.0)).cumprod()
    for line in fig.data[1:]:
        assert same(line.y, growth[line.name])
        assert times(line).equals(pd.DatetimeIndex(returns.index))
    assert f"{scored.stats['quantile_spread_pct']:.2f}%" in fig.layout.title.text


@pytest.mark.parametrize(("draw", "text"), [(ic_figure, "No IC without scores"),
                                            (quantile_figure, "No score quantiles without scores")])
def test_a_weights_strategy_has_no_ic_and_no_quantiles(held, draw, text):
    assert held.ic.empty
    fig = draw(held)
    assert fig.data == ()
    (note,) = fig.layout.annotations
    assert note.text.startswith(text) and "Hold decides weights()" in note.text


# ---------------------------------------------------------------------- rich display
def test_bundle_stacks_every_chart(scored, held, mimetype):
    figure = portfolio_bundle(scored)[PLOTLY]
    types = [t["type"] for t in figure["data"]]
    assert types == ["scatter"] * 4 + ["bar", "table", "heatmap", "bar", "scatter", "bar"] + ["scatter"] * 5
    assert "Weights of 10 symbols" in json.dumps(figure["layout"]["annotations"])
    only = [t["type"] for t in portfolio_bundle(held)[PLOTLY]["data"]]
    assert only == ["scatter"] * 4 + ["bar", "table", "heatmap"]  # no IC panels without scores


@pytest.mark.parametrize("renderer", ["plotly_mimetype", "json"])
def test_bundle_has_the_mime_types_of_a_result_bundle(scored, daily, monkeypatch, renderer):
    monkeypatch.setattr(pio.renderers, "default", renderer)
    single = charts.result_bundle(nbb.backtest(SmaCross(), daily))
    assert sorted(portfolio_bundle(scored)) == sorted(single)


def test_repr_mimebundle_includes_the_plotly_figure(scored, held, mimetype):
    for result in (scored, held):
        bundle = result._repr_mimebundle_()
        assert {"text/plain", "text/html", PLOTLY} <= set(bundle)
        assert bundle[PLOTLY]["data"][0]["name"] == "equity"


def test_figures_stay_small_for_52_symbols_and_2520_bars(wide, mimetype):
    assert wide.weights.shape == (2520, 52)
    sizes = {draw.__name__: len(draw(wide).to_json())
             for draw in (portfolio_figure, weights_heatmap, ic_figure, quantile_figure)}
    assert sizes["weights_heatmap"] < 200_000, sizes
    assert max(sizes.values()) < 600_000, sizes
    assert len(json.dumps(portfolio_bundle(wide))) < 3_000_000


def test_module_lists_its_public_functions():
    assert set(portfolio.__all__) >= {"portfolio_figure", "weights_heatmap", "ic_figure",
                                      "quantile_figure", "portfolio_bundle"}
