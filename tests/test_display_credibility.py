"""The credibility panel: its figure, its numbers as HTML, and where it shows (display, report)."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.display import credibility as panel
from nbbacktest.display.stacking import stack_figures
from nbbacktest.engine import views
from nbbacktest.engine.overfitting import (
    BacktestOverfitting,
    DeflatedSharpe,
    SpaPValues,
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
    superior_predictive_ability,
)

PLOTLY = "application/vnd.plotly.v1+json"
#: 20 runs: the fewest that the sweep's display shows the panel for.
GRID_20 = {"fast": [5, 10, 15, 20, 25], "slow": [30, 60, 90, 120]}


@dataclass(frozen=True)
class StandIn:
    """The fields of ``Credibility`` the panel reads, built from synthetic returns."""

    metric: str
    runs: int
    finished: int
    failed: int
    cancelled: int
    kept: int
    periods: int
    bars_per_period: int
    best_index: int | None
    best_trades: int | None
    min_trades: int
    dsr: DeflatedSharpe | None
    pbo: BacktestOverfitting | None
    spa: SpaPValues | None
    notes: tuple[str, ...]
    flags: tuple[str, ...]

    def summary(self) -> str:
        return f"{self.runs} runs\nflags: {len(self.flags)}"


@pytest.fixture(scope="module")
def noise() -> StandIn:
    """30 skill-less runs of 400 periods: PBO in 8 blocks (70 splits), DSR, SPA."""
    rng = np.random.default_rng(3)
    returns = rng.normal(0.0, 0.01, size=(400, 30))
    sharpes = returns.mean(axis=0) / returns.std(axis=0, ddof=1)
    best = int(sharpes.argmax())
    return StandIn(
        metric="sharpe", runs=30, finished=29, failed=1, cancelled=0, kept=29, periods=400,
        bars_per_period=1, best_index=best, best_trades=12, min_trades=0,
        dsr=deflated_sharpe_ratio(returns[:, best], trials=30, sharpe_variance=float(np.var(sharpes, ddof=1))),
        pbo=probability_of_backtest_overfitting(returns, blocks=8),
        spa=superior_predictive_ability(np.zeros(400), returns, reps=100),
        notes=("SPA's benchmark is no trading (zero returns)",),
        flags=("PBO is 50 %: the in-sample best is a coin toss out of sample", "<b>not bold</b>"),
    )


# ---------------------------------------------------------------------- the figure
def test_the_panel_draws_every_logit_and_every_split(noise):
    fig = panel.credibility_panel(noise)
    types = [trace.type for trace in fig.data]
    assert types == ["table", "histogram", "scatter", "scatter"]
    histogram, splits, line = fig.data[1:]
    assert len(noise.pbo.logits) == 70
    np.testing.assert_array_equal(histogram.x, noise.pbo.logits)
    assert len(splits.x) == len(splits.y) == 70  # one point per split
    np.testing.assert_array_equal(splits.y, noise.pbo.oos_performance)
    # The degradation line: intercept + slope * in-sample, across the points.
    np.testing.assert_allclose(line.y, noise.pbo.intercept + noise.pbo.slope * np.asarray(line.x))
    assert line.x[0] == min(splits.x) and line.x[1] == max(splits.x)
    titles = [a.text for a in fig.layout.annotations]
    assert f"PBO {noise.pbo.pbo:.0%}: logits \u2264 0 in 70 splits" in titles
    loss = f"{noise.pbo.probability_of_loss:.0%} of splits lose"
    assert any(loss in text for text in titles)
    # The 0 line on the histogram's axis; the out-of-sample 0 on the scatter's.
    assert any(s.type == "line" and s.x0 == 0 and s.x1 == 0 and s.xref == "x" for s in fig.layout.shapes)
    assert any(s.type == "line" and s.y0 == 0 and s.y1 == 0 and s.yref == "y2" for s in fig.layout.shapes)
    # The numbers table names the three statistics; a flag is highlighted, first.
    measures, readings = list(fig.data[0].cells.values[0]), list(fig.data[0].cells.values[2])
    assert measures[:2] == ["\u26a0 warning"] * 2 and readings[:2] == list(noise.flags)
    assert list(fig.data[0].cells.fill.color[0][:3]) == [panel._FLAG_FILL] * 2 + [panel._FILL]
    assert {"Deflated Sharpe ratio", "PBO (CSCV)", "Hansen's SPA p-value",
            "White's Reality Check p-value"} <= set(measures)
    assert "PBO" in fig.layout.title.text and "DSR" in fig.layout.title.text


def test_a_missing_pbo_leaves_the_numbers_and_says_why(noise):
    without = replace(noise, pbo=None, notes=("PBO needs at least 4 periods per block",))
    fig = panel.credibility_panel(without)
    assert [trace.type for trace in fig.data] == ["table"]
    assert "PBO needs at least 4 periods per block" in fig.layout.annotations[0].text
    assert "not computed" in fig.data[0].cells.values[1]
    empty = replace(noise, pbo=None, dsr=None, spa=None, best_index=None, best_trades=None, notes=())
    assert [trace.type for trace in panel.credibility_panel(empty).data] == ["table"]
    fig.to_json()  # draws


def test_a_pbo_without_a_degradation_line_draws_the_points_alone(noise):
    flat = replace(noise, pbo=replace(noise.pbo, slope=float("nan"), intercept=float("nan")))
    fig = panel.credibility_panel(flat)
    assert [trace.type for trace in fig.data] == ["table", "histogram", "scatter"]


# ---------------------------------------------------------------------- the numbers
def test_the_html_names_dsr_pbo_spa_and_lists_the_flags(noise):
    page = panel.credibility_html(noise)
    for name in ("Deflated Sharpe ratio", "PBO (CSCV)", "Hansen's SPA p-value",
                 "White's Reality Check p-value", "SR0 = ", "30 skill-less trials"):
        assert name.replace("'", "&#x27;") in page, name
    assert f"<b>{noise.dsr.dsr:.2f}</b>" in page and f"<b>{noise.pbo.pbo:.0%}</b>" in page
    assert f"<b>{noise.spa.consistent:.3f}</b>" in page and f"<b>{noise.spa.upper:.3f}</b>" in page
    flags = re.search(r"<div class='flags'[^>]*>(.*?)</div>", page, re.S).group(1)
    assert "background:#fff3cd" in page
    assert re.findall(r"<li>(.*?)</li>", flags) == [
        "PBO is 50 %: the in-sample best is a coin toss out of sample", "&lt;b&gt;not bold&lt;/b&gt;"]
    assert "SPA&#x27;s benchmark is no trading" in page  # the notes
    assert "29 finished, 1 failed, 0 cancelled; the returns of 29 were used" in page
    assert f"row {noise.best_index}" in page and "12 trades" in page


def test_no_flags_no_warning_box(noise):
    assert "class='flags'" not in panel.credibility_html(replace(noise, flags=()))


# ---------------------------------------------------------------------- stacking
def test_a_stacked_figure_keeps_both_figures_plots_and_heights(noise):
    top = go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]), layout=dict(height=500, margin=dict(t=60, b=40)))
    bottom = panel.credibility_panel(noise)
    both = stack_figures(top, bottom)
    assert len(both.data) == 1 + len(bottom.data)
    above = 500 - 60 - 40
    below = bottom.layout.height - bottom.layout.margin.t - bottom.layout.margin.b
    total = above + 40 + bottom.layout.margin.t + below
    assert both.layout.height == 60 + total + bottom.layout.margin.b
    # The top's plot keeps its pixel height; the bottom's axes follow, renumbered.
    low, high = both.layout.yaxis.domain
    assert (high - low) * total == pytest.approx(above)
    assert [t.xaxis for t in both.data[2:]] == ["x2", "x3", "x3"]
    histogram_domain = both.layout.yaxis2.domain
    assert histogram_domain[1] < low
    assert both.data[1].domain.y[0] > histogram_domain[1]  # the numbers above the charts
    # The heatmap's colour bar stays beside the heatmap.
    assert low <= both.data[0].colorbar.y <= high
    # Bottom's title and subplot titles come along; the 0 line follows its axis.
    texts = [a.text for a in both.layout.annotations]
    assert bottom.layout.title.text in texts and any(t.startswith("PBO") for t in texts)
    assert any(s.xref == "x2" and s.x0 == 0 for s in both.layout.shapes)


# ---------------------------------------------------------------------- the sweep display
@pytest.fixture(scope="module")
def daily():
    return nbb.load_sample("daily")


@pytest.fixture(scope="module")
def twenty(daily):
    return nbb.sweep(SmaCross, daily, grid=GRID_20, progress=False)


@pytest.fixture
def mimetype():
    saved, pio.renderers.default = pio.renderers.default, "plotly_mimetype"
    yield
    pio.renderers.default = saved


def array(values) -> np.ndarray:
    """A figure JSON's array: a list, or plotly's typed array (base64 ``bdata``)."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
    return np.asarray(values)


def figure_types(bundle: dict) -> list[str]:
    return [trace.get("type", "scatter") for trace in bundle[PLOTLY]["data"]]


def test_the_sweep_display_shows_the_panel_from_20_runs(twenty, mimetype):
    assert len(twenty) == 20 and twenty.status == "complete"
    bundle = twenty._repr_mimebundle_()
    types = figure_types(bundle)
    assert types[:2] == ["table", "heatmap"] and "histogram" in types
    found = twenty.credibility()
    histogram = bundle[PLOTLY]["data"][types.index("histogram")]
    np.testing.assert_array_equal(array(histogram["x"]), found.pbo.logits)
    assert "Is the best run real?" in json.dumps(bundle[PLOTLY]["layout"])
    assert "Deflated Sharpe ratio" in bundle["text/html"]


def test_fewer_than_20_runs_show_no_panel(daily, mimetype):
    nineteen = nbb.sweep(SmaCross, daily, grid=GRID_20, where=lambda p: (p.fast, p.slow) != (25, 120),
                         progress=False)
    assert len(nineteen) == 19
    bundle = nineteen._repr_mimebundle_()
    assert "histogram" not in figure_types(bundle)
    assert "Deflated Sharpe" not in bundle["text/html"]


def test_a_credibility_that_raises_never_breaks_the_display(daily, mimetype):
    sweep = nbb.sweep(SmaCross, daily, grid=GRID_20, progress=False)

    def broken(*args, **kwargs):
        raise RuntimeError("no returns")

    sweep.credibility = broken  # an instance attribute: this sweep only
    assert panel.shown_credibility(sweep) is None
    bundle = sweep._repr_mimebundle_()
    assert figure_types(bundle)[:2] == ["table", "heatmap"] and "histogram" not in figure_types(bundle)


def test_a_running_sweep_shows_no_panel(daily):
    sweep = nbb.sweep(SmaCross, daily, grid=GRID_20, progress=False)
    sweep.status = "running"  # as seen while it runs
    assert panel.shown_credibility(sweep) is None


def test_the_view_draws_a_sweeps_or_a_credibilitys_panel(twenty, noise):
    assert [t.type for t in views.view("sweep_credibility")(noise).data][:2] == ["table", "histogram"]
    fig = views.view("sweep_credibility")(twenty, blocks=4, reps=50)
    assert len(fig.data[1].x) == 6  # C(4, 2) splits
    bundle = views.view("sweep_credibility_bundle")(noise)
    assert "Deflated Sharpe ratio" in bundle["text/html"] or PLOTLY in bundle


# ---------------------------------------------------------------------- the report
def test_the_report_holds_the_panel_when_the_sweep_has_one(twenty, daily, tmp_path):
    page = twenty.report(tmp_path / "twenty.html").read_text(encoding="utf-8")
    assert "<section id='credibility'><h2>Is the best run real?</h2>" in page
    figure = re.search(r"<script type='application/json' data-figure='figure-credibility'>(.*?)</script>",
                       page, re.S)
    assert figure, "no credibility figure in the report"
    # The numbers as HTML (not again as a table in the figure), then PBO's charts.
    types = [trace["type"] for trace in json.loads(figure.group(1))["data"]]
    assert types == ["histogram", "scatter", "scatter"]
    section = page.split("<section id='credibility'>", 1)[1]
    assert section.index("Deflated Sharpe ratio") < section.index("figure-credibility")
    assert "White&#x27;s Reality Check" in section and "class='flags'" in section
    small = nbb.sweep(SmaCross, daily, grid={"fast": [5, 10], "slow": [30, 60]}, progress=False)
    assert "id='credibility'" not in small.report(tmp_path / "small.html").read_text(encoding="utf-8")
