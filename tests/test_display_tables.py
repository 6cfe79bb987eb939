"""Tables and rich displays: formatting, sorting, colours, and what a bare sweep or result shows."""

from __future__ import annotations

import re
import time

import pandas as pd
import plotly.io as pio
import pytest
from conftest import Fragile, SmaCross

import nbbacktest as nbb
from nbbacktest.display import tables
from nbbacktest.display.tables import (
    metric_colors,
    results_html,
    results_table,
    stats_table,
)
from nbbacktest.engine.metrics import STAT_LABELS
from nbbacktest.errors import SweepError

GREEN, RED, GREY = "rgb(99, 190, 123)", "rgb(248, 105, 107)", "#eeeeee"
GRID = {"fast": [5, 10, 15, 20], "slow": [30, 60]}  # 8 runs, 2 of them failing


class Sleepy(SmaCross):
    def signals(self, data):
        time.sleep(0.05)
        return super().signals(data)


@pytest.fixture(scope="module")
def fragile(daily):
    return nbb.sweep(Fragile, daily, GRID, progress=False)


@pytest.fixture
def mimetype_renderer(monkeypatch):
    """plotly's renderer in a Jupyter kernel (outside one it has no mime renderer)."""
    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")


def cells(fig) -> dict[str, list[str]]:
    """A table figure's cells by header (bold removed)."""
    table = fig.data[0]
    return {re.sub("</?b>", "", h): list(v) for h, v in zip(table.header.values, table.cells.values)}


def test_metric_colors_run_red_to_green_with_grey_for_missing():
    middle = "rgb(255, 235, 132)"
    assert metric_colors([2.0, 1.0, float("nan"), 3.0]) == [middle, RED, GREY, GREEN]
    assert metric_colors([2.0, 1.0, 3.0], maximize=False)[1:] == [GREEN, RED]
    assert metric_colors([float("inf"), 1.0, 2.0])[0] == GREEN
    assert metric_colors([float("nan")]) == [GREY]


# ---------------------------------------------------------------------- sweep table
def test_sweep_table_lists_params_then_metrics_best_first(fragile):
    fig = fragile.table(top=None)
    shown = cells(fig)
    assert list(shown)[:4] == ["row", "fast", "slow", "sharpe"]
    assert list(shown)[4:] == [*[s for s in tables.DEFAULT_STATS if s != "sharpe"], "error"]
    results = fragile.results
    done = results[results.status == "done"].sort_values("sharpe", ascending=False)
    failed = results[results.status == "failed"]
    assert shown["row"] == [str(i) for i in [*done.index, *failed.index]]  # failed (NaN) last
    assert shown["fast"] == [str(results.fast[int(i)]) for i in shown["row"]]
    assert shown["sharpe"][:6] == [f"{v:.2f}" for v in done.sharpe]
    assert shown["sharpe"][6:] == ["n/a", "n/a"]
    assert shown["return_pct"][:6] == [f"{v:,.2f}%" for v in done.return_pct]
    assert shown["trades"][:6] == [str(int(v)) for v in done.trades]
    assert shown["error"][:6] == ["n/a"] * 6
    assert shown["error"][6].startswith("ValueError: fast=10 is not allowed")
    title, caption = fig.layout.title.text.split("<br>")
    assert title == "Top 8 of 8 runs (6 with a sharpe), by sharpe, best first"
    assert caption == ("<sup>colour: sharpe across the 6 of 8 runs with a sharpe,"
                       " red worst → green best</sup>")


def test_sweep_table_colours_the_metric_column_only(fragile):
    table = fragile.table(top=None).data[0]
    fills = table.cells.fill.color
    metric = fills[3]
    assert metric[0] == GREEN and metric[5] == RED and list(metric[6:]) == [GREY, GREY]
    assert all(set(column) == {"white"} for i, column in enumerate(fills) if i != 3)


def test_minimized_metric_sorts_ascending_and_colours_the_lowest_green(daily):
    sweep = nbb.sweep(SmaCross, daily, GRID, metric="volatility_ann_pct", maximize=False,
                      progress=False)
    fig = sweep.table(top=3)
    expected = sweep.results.sort_values("volatility_ann_pct").index[:3]
    assert cells(fig)["row"] == [str(i) for i in expected]
    assert fig.data[0].cells.fill.color[3][0] == GREEN


def test_sort_columns_and_top(fragile):
    by_trades = cells(fragile.table(top=3, sort="trades", columns=["trades", "sharpe"]))
    assert list(by_trades) == ["row", "fast", "slow", "trades", "sharpe"]
    trades = fragile.results.trades.dropna().sort_values(ascending=False, kind="stable")
    assert by_trades["trades"] == [str(int(v)) for v in trades.iloc[:3]]
    by_param = cells(fragile.table(top=None, sort="fast", columns="sharpe"))
    assert by_param["fast"] == sorted(by_param["fast"], key=int)  # a param reads ascending
    assert list(by_param) == ["row", "fast", "slow", "sharpe"]


def test_bad_table_arguments_name_the_argument(fragile):
    with pytest.raises(SweepError, match=r"top must be a positive int or None \(every row\), got 0"):
        fragile.table(top=0)
    with pytest.raises(SweepError, match="sort='sharp' is not a column.*Did you mean: sharpe\\?"):
        fragile.table(sort="sharp")
    with pytest.raises(SweepError, match="columns='tardes' is not a column.*Did you mean: trades\\?"):
        fragile.table(columns=["sharpe", "tardes"])


def test_results_html_shows_the_same_rows_in_the_same_order(fragile):
    text = results_html(fragile.results, metric="sharpe", top=4)
    figure_rows = cells(results_table(fragile.results, metric="sharpe", top=4))["row"]
    assert re.findall(r"<tr><td[^>]*>(\d+)</td>", text) == figure_rows
    assert f"background:{GREEN}" in text and "<th" in text
    assert "&lt;" in results_html(pd.DataFrame({"kind": ["<b>"], "sharpe": [1.0]}), metric="sharpe")


def test_trades_table_shows_formatted_money_units_and_blank_tags(daily):
    from nbbacktest.display.sweep_widget import trades_html

    trades = nbb.backtest(SmaCross(), daily, commission=0.002).trades
    cells_shown = re.findall(r"<td[^>]*>([^<]*)</td>", trades_html(trades.head(1)))
    first = trades.iloc[0]
    assert cells_shown[2:7] == [f"{first.entry_price:,.2f}", f"{first.exit_price:,.2f}",
                                f"{first['size']:,.4f}", f"{first.pnl:,.2f}", f"{first.return_pct:.2f}%"]
    assert cells_shown[8] == "" and "None" not in cells_shown and "n/a" not in cells_shown


@pytest.mark.parametrize(("values", "code"), [
    (range(5, 60, 5), "range(5, 60, 5)"),
    (list(range(5, 56, 5)), "range(5, 60, 5)"),  # was range(5, 56, 5): not what anyone types
    ([5, 10, 15, 20, 25, 30], "range(5, 35, 5)"),
    (range(20, 40), "range(20, 40)"),
    ([5, 10], "[5, 10]"),
    ([5, 10, 20], "[5, 10, 20]"),
    ([0.1, 0.2, 0.3], "[0.1, 0.2, 0.3]"),
    ([True, False, True], "[True, False, True]"),
])
def test_values_code_prints_ranges_as_typed(values, code):
    assert tables.values_code(values) == code
    assert list(eval(code)) == list(values)  # our own text


def test_table_title_counts_have_thousands_separators():
    frame = pd.DataFrame({"fast": range(1234), "sharpe": [0.5] * 1234})
    assert results_table(frame, metric="sharpe", top=3).layout.title.text.startswith(
        "Top 3 of 1,234 runs (1,234 with a sharpe)")


# ---------------------------------------------------------------------- stats table
def test_stats_table_has_every_label_and_formatted_value(daily):
    result = nbb.backtest(SmaCross(), daily)
    fig = result.stats_table()
    labels, values = fig.data[0].cells.values
    assert list(labels) == list(STAT_LABELS.values())
    shown = dict(zip(labels, values))
    stats = result.stats
    assert shown["Return [%]"] == f"{stats['return_pct']:,.2f}%"
    assert shown["Sharpe ratio"] == f"{stats['sharpe']:.2f}"
    assert shown["# Trades"] == str(stats["trades"])
    assert shown["Start"] == stats["start"].strftime("%Y-%m-%d")
    assert shown["Max. Drawdown Duration"] == f"{stats['max_drawdown_duration'].days} days"
    assert fig.layout.title.text == "SmaCross(fast=10, slow=30)"
    assert stats_table(pd.Series({"custom": 1.5})).data[0].cells.values[0] == ["custom"]


# ---------------------------------------------------------------------- rich display
def test_result_display_is_plotly_chart_and_table_with_text_fallbacks(daily, mimetype_renderer):
    result = nbb.backtest(SmaCross(), daily)
    bundle = result._repr_mimebundle_()
    assert bundle["text/plain"] == repr(result)
    assert bundle["text/html"] == result._repr_html_()  # plotly's renderer added no HTML
    figure = bundle["application/vnd.plotly.v1+json"]
    assert [t["type"] for t in figure["data"]] == ["scatter", "scatter", "scatter", "scatter", "table"]
    assert figure["data"][0]["name"] == "equity"


def test_display_without_a_mime_renderer_keeps_text_and_html(daily, monkeypatch):
    monkeypatch.setattr(pio.renderers, "default", "")  # a terminal: plotly opens nothing
    result = nbb.backtest(SmaCross(), daily)
    assert set(result._repr_mimebundle_()) == {"text/plain", "text/html"}


def test_sweep_display_is_table_and_heatmap(fragile, mimetype_renderer):
    bundle = fragile._repr_mimebundle_()
    assert bundle["text/plain"] == repr(fragile)
    figure = bundle["application/vnd.plotly.v1+json"]
    assert [t["type"] for t in figure["data"]] == ["table", "heatmap"]
    title, caption = figure["layout"]["title"]["text"].split("<br>")
    assert title == "Fragile: complete, 8/8 runs, 2 failed"
    assert "colour: sharpe across the 6 of 8 runs with a sharpe" in caption
    assert re.findall(r"<tr><td[^>]*>(\d+)</td>", bundle["text/html"])[0] == str(fragile.best_index)


def test_mixed_run_many_display_shows_the_distribution(daily, mimetype_renderer):
    class Other(SmaCross):
        pass

    runs = nbb.run_many([SmaCross(5, 30), Other(10, 60), SmaCross(20, 60)], daily, progress=False)
    figure = runs._repr_mimebundle_()["application/vnd.plotly.v1+json"]
    assert [t["type"] for t in figure["data"]] == ["table", "histogram"]


def test_a_running_sweep_shows_what_is_there_so_far(daily, mimetype_renderer):
    sweep = nbb.sweep(Sleepy, daily, {"fast": list(range(5, 45))}, progress=False, block=False)
    try:
        deadline = time.monotonic() + 30
        while sweep.progress < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        bundle = sweep._repr_mimebundle_()
    finally:
        sweep.cancel()
        sweep.wait()
    figure = bundle["application/vnd.plotly.v1+json"]
    assert ": running, " in figure["layout"]["title"]["text"]
    row_cells = figure["data"][0]["cells"]["values"][0]
    assert 2 <= len(row_cells) <= 10
    assert "n/a" not in figure["data"][0]["cells"]["values"][3]  # only runs that finished
