"""Tables sized to their content, colours against the whole sweep, and charts that say
how many runs they draw (issue 16, items 5, 6 and 10)."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import Fragile, SmaCross

import nbbacktest as nbb
from nbbacktest.display import charts, tables
from nbbacktest.display.tables import (
    HEADER_HEIGHT,
    ROW_HEIGHT,
    STATS_ROW_HEIGHT,
    MetricRange,
    metric_colors,
    results_html,
    results_table,
    stats_table,
    table_height,
)

GREEN, RED = "rgb(99, 190, 123)", "rgb(248, 105, 107)"


@pytest.fixture(scope="module")
def wide(daily):
    """A 60-run sweep: enough rows that a top-10 table is a small part of it."""
    grid = {"fast": list(range(5, 35, 5)), "slow": list(range(20, 120, 10))}
    return nbb.sweep(SmaCross, daily, grid, progress=False)


def plot_height(fig) -> float:
    margin = fig.layout.margin
    return fig.layout.height - margin.t - margin.b


def test_the_stats_table_is_as_tall_as_its_stats_however_many(daily):
    stats = nbb.backtest(SmaCross(), daily).stats
    for extra in (0, 9, 30):  # sized from the data: more stats make it taller
        more = pd.concat([stats, pd.Series({f"new_{i}": 1.0 for i in range(extra)})])
        fig = stats_table(more)
        assert plot_height(fig) >= HEADER_HEIGHT + len(more) * STATS_ROW_HEIGHT
        assert fig.data[0].cells.height == STATS_ROW_HEIGHT


def test_the_result_display_shows_every_stat_beside_its_chart(daily):
    result = nbb.backtest(SmaCross(), daily)
    fig = result.plot(stats=True)
    needed = HEADER_HEIGHT + len(result.stats) * STATS_ROW_HEIGHT
    assert plot_height(fig) >= needed
    assert fig.layout.height >= 560  # the chart keeps its height
    more = pd.concat([result.stats, pd.Series({f"new_{i}": 1.0 for i in range(20)})])
    result_with_more = type("WithMore", (), {"stats": more, "equity": result.equity,
                                             "drawdown": result.drawdown, "trades": result.trades,
                                             "strategy": result.strategy})()
    taller = charts.result_figure(result_with_more, stats=True)  # type: ignore[arg-type]
    assert plot_height(taller) >= HEADER_HEIGHT + len(more) * STATS_ROW_HEIGHT


def test_a_results_table_shows_its_last_row_whole_and_gives_long_headers_room(wide):
    fig = wide.table(top=10)
    assert plot_height(fig) >= table_height(10) >= HEADER_HEIGHT + 10 * ROW_HEIGHT
    table = fig.data[0]
    widths = dict(zip([h.replace("<b>", "").replace("</b>", "") for h in table.header.values],
                      table.columnwidth))
    assert widths["max_drawdown_pct"] >= len("max_drawdown_pct")
    assert widths["row"] < widths["max_drawdown_pct"] and widths["fast"] < widths["win_rate_pct"]


def test_the_sweep_display_sizes_its_table_in_pixels(wide, monkeypatch):
    fig = charts.sweep_overview(wide.results, metric="sharpe", top=10, title="t")
    table_domain = fig.data[0].domain.y
    table_pixels = (table_domain[1] - table_domain[0]) * plot_height(fig)
    assert table_pixels >= table_height(10) - 1


def test_top_rows_are_coloured_against_the_whole_sweep(wide):
    fig = results_table(wide.results, metric="sharpe", top=3)
    shown = wide.results.sort_values("sharpe", ascending=False).sharpe.iloc[:3]
    whole = MetricRange.of(wide.results.sharpe)
    colours = list(fig.data[0].cells.fill.color[3])
    assert colours == metric_colors(shown, within=whole)
    assert colours[0] == GREEN and RED not in colours  # the best runs look good
    among = f"the {whole.runs} of 60 runs with a sharpe" if whole.runs < 60 else "all 60 runs"
    assert f"colour: sharpe across {among}, red worst → green best" in fig.layout.title.text
    text = results_html(wide.results, metric="sharpe", top=3)
    assert f"colour: sharpe across {among}" in text and RED not in text


def test_a_live_table_takes_the_range_and_count_it_is_given():
    frame = pd.DataFrame({"fast": [5, 10], "sharpe": [0.9, 1.0]})
    text = results_html(frame, metric="sharpe", within=MetricRange(-2.0, 1.0, 50), total=80)
    assert RED not in text and "across the 50 of 80 runs with a sharpe" in text


def test_parallel_coordinates_say_why_runs_are_missing(daily):
    frame = pd.DataFrame({"a": [1, 2, 3, 4], "b": [4, 5, 6, 7], "kind": ["x", "y", "y", "x"],
                          "sharpe": [0.1, float("nan"), 0.3, float("nan")],
                          "status": ["done", "failed", "done", "done"]})
    title = charts.parallel_coordinates(frame, metric="sharpe").layout.title.text
    assert title.endswith("(2 of 4 runs; 1 failed, 1 without a finite sharpe)")
    whole = charts.parallel_coordinates(frame.iloc[[0, 2]], metric="sharpe").layout.title.text
    assert whole.endswith("(2 runs)")


def test_a_failed_run_is_named_in_the_sweep_table_caption(daily):
    sweep = nbb.sweep(Fragile, daily, {"fast": [5, 10, 15], "slow": [30]}, progress=False)
    assert "across the 2 of 3 runs with a sharpe" in sweep.table().layout.title.text
    assert tables.results_caption(sweep.results, metric="sharpe", maximize=False).endswith(
        "(lower is better)")
