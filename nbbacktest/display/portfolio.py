"""Charts of a portfolio backtest: equity with its legs, weights over time, IC and score quantiles.

Pure functions from a :class:`~nbbacktest.engine.portfolio_result.PortfolioResult`
to a plain ``go.Figure``, drawn like :mod:`nbbacktest.display.charts` draws a
single-instrument result. ``nbbacktest.display`` registers :func:`portfolio_figure`
as ``PortfolioResult.plot()`` and :func:`portfolio_bundle` as its rich display.

Each figure stays small for a long, wide universe (50 symbols x 2,500 daily bars
make a bundle of about 1 MB): daily times travel as dates, not timestamps, and
the weights heatmap keeps every k-th bar only, saying so in its title.

Examples
--------
>>> import nbbacktest as nbb
>>> class Momentum(nbb.PortfolioStrategy):
...     def scores(self, universe):
...         return universe.close.pct_change(60, fill_method=None)
>>> result = nbb.backtest(Momentum(long=0.3, short=0.3, rebalance="M"), nbb.load_sample("universe"))
>>> [trace.name for trace in portfolio_figure(result).data]
['equity', 'long leg', 'short leg', 'drawdown', 'turnover']
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from nbbacktest.display.charts import figure_bundle, result_figure
from nbbacktest.display.stacking import stack_figures
from nbbacktest.display.tables import STATS_ROW_HEIGHT, format_value, stats_cells, table_height

if TYPE_CHECKING:
    from nbbacktest.engine.portfolio_result import PortfolioResult
    from nbbacktest.engine.result import Result

__all__ = [
    "MAX_HEATMAP_COLUMNS",
    "ic_figure",
    "portfolio_bundle",
    "portfolio_figure",
    "portfolio_overview",
    "quantile_figure",
    "sampled_bars",
    "weights_heatmap",
]

#: Time columns of :func:`weights_heatmap` at most: a screen shows about as many
#: pixels across, and 50 symbols x 500 columns of float32 is ~130 kB of JSON.
MAX_HEATMAP_COLUMNS = 500
# The colours of charts.py (plotly's defaults), plus one for each leg and turnover.
_EQUITY = "#1f77b4"
_DRAWDOWN = "#d62728"
_GAIN = "#2ca02c"
_LOSS = "#d62728"
_LONG = "#2ca02c"
_SHORT = "#9467bd"
_TURNOVER = "#7f7f7f"
_MEAN = "#000000"
# Short (red) to long (blue) weights, white at 0; q1 (lowest scores) red through grey
# to q5 blue, so that the middle quantile's bar and line stay visible.
_DIVERGING = "RdBu"
_QUANTILE_SCALE = [[0.0, "#b2182b"], [0.5, "#7f7f7f"], [1.0, "#2166ac"]]
# Pixels, as charts.py sizes a result's chart: the chart, its margins above (title,
# legend) and below (the x axis's ticks), and the smaller figures under it.
_PORTFOLIO_HEIGHT = 620
_TOP_MARGIN = 60
_BOTTOM_MARGIN = 60
_HEATMAP_MIN_HEIGHT = 360
_HEATMAP_ROW = 14
_IC_HEIGHT = 380
_QUANTILE_HEIGHT = 400


def _times(index: pd.DatetimeIndex) -> pd.DatetimeIndex | np.ndarray:
    """Times for a trace's x: ``'2024-01-05'`` strings where every time is a midnight.

    Plotly writes a timestamp as ``"2024-01-05T00:00:00.000000"``: a date alone is
    less than half of that, and a shared time axis of five traces repeats it five
    times. Intraday or time-zone-aware times are left for plotly to write.
    """
    if index.tz is None and len(index) and (index == index.normalize()).all():
        return np.asarray(index.strftime("%Y-%m-%d"), dtype=object)
    return index


# ---------------------------------------------------------------------- equity and legs
def portfolio_figure(
    result: PortfolioResult,
    *,
    stats: bool = False,
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """Equity with its long and short legs, drawdown underneath and turnover per bar (shared time axis).

    Parameters
    ----------
    result : PortfolioResult
        The portfolio backtest to draw.
    stats : bool
        Put the stats table beside the chart.
    title, height
        Layout title (default: the strategy) and height in pixels (default: 620,
        or taller where the stats table needs it to show every stat).

    Returns
    -------
    plotly.graph_objects.Figure
        Traces "equity", "long leg", "short leg" (each leg's growth of 1 times the
        starting cash, so that the legs share the equity's axis), "drawdown"
        (percent), "turnover" (percent of equity traded per bar), then the stats
        table when asked.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Hold(nbb.PortfolioStrategy):
    ...     def weights(self, universe):
    ...         return universe.close * 0 + 0.1
    >>> result = nbb.backtest(Hold(), nbb.load_sample("universe"))
    >>> fig = portfolio_figure(result)
    >>> [trace.name for trace in fig.data]
    ['equity', 'long leg', 'short leg', 'drawdown', 'turnover']
    >>> float(fig.data[0].y[-1]) == float(result.equity.iloc[-1])
    True
    """
    x = _times(pd.DatetimeIndex(result.equity.index))
    legs = result.leg_equity * result.settings.cash
    specs: list[list[dict[str, Any] | None]]
    if stats:
        specs = [[{"type": "xy"}, {"type": "table", "rowspan": 3}], [{"type": "xy"}, None],
                 [{"type": "xy"}, None]]
    else:
        specs = [[{"type": "xy"}], [{"type": "xy"}], [{"type": "xy"}]]
    fig = make_subplots(
        rows=3, cols=len(specs[0]), specs=specs, shared_xaxes=True, vertical_spacing=0.04,
        row_heights=[0.6, 0.22, 0.18], column_widths=[0.68, 0.32] if stats else None,
        horizontal_spacing=0.03,
    )
    fig.add_trace(go.Scatter(x=x, y=result.equity.to_numpy(), name="equity", mode="lines",
                             line=dict(color=_EQUITY, width=1.5),
                             hovertemplate="%{y:,.2f}<extra>equity</extra>"), row=1, col=1)
    for leg, label, color in (("long", "long leg", _LONG), ("short", "short leg", _SHORT)):
        fig.add_trace(go.Scatter(x=x, y=legs[leg].to_numpy(), name=label, mode="lines",
                                 line=dict(color=color, width=1),
                                 hovertemplate=f"%{{y:,.2f}}<extra>{label}</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=(result.drawdown * 100.0).to_numpy(), name="drawdown", mode="lines",
                             fill="tozeroy", line=dict(color=_DRAWDOWN, width=1),
                             hovertemplate="%{y:.2f}%<extra>drawdown</extra>"), row=2, col=1)
    fig.add_trace(go.Bar(x=x, y=(result.turnover * 100.0).to_numpy(), name="turnover",
                         marker=dict(color=_TURNOVER, line=dict(width=0)),
                         hovertemplate="%{y:.2f}%<extra>turnover</extra>"), row=3, col=1)
    if stats:
        fig.add_trace(stats_cells(result.stats), row=1, col=2)
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", ticksuffix="%", row=2, col=1)
    fig.update_yaxes(title_text="turnover", ticksuffix="%", row=3, col=1)
    fig.update_layout(
        title=title if title is not None else repr(result.strategy),
        height=height or _portfolio_height(len(result.stats) if stats else 0),
        hovermode="x unified", bargap=0, margin=dict(l=10, r=10, t=_TOP_MARGIN, b=_BOTTOM_MARGIN),
        legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"),
    )
    return fig


def _portfolio_height(stats: int) -> int:
    """The default height of :func:`portfolio_figure`: tall enough for ``stats`` rows whole."""
    needed = _TOP_MARGIN + table_height(stats, STATS_ROW_HEIGHT) + _BOTTOM_MARGIN
    return max(_PORTFOLIO_HEIGHT, needed)


# ---------------------------------------------------------------------- weights
def sampled_bars(bars: int, columns: int = MAX_HEATMAP_COLUMNS) -> np.ndarray:
    """Positions of every k-th bar, the last one included, so that at most ``columns`` remain.

    Examples
    --------
    >>> sampled_bars(5, columns=10).tolist()
    [0, 1, 2, 3, 4]
    >>> sampled_bars(10, columns=4).tolist()
    [0, 3, 6, 9]
    """
    if bars <= columns:
        return np.arange(bars)
    step = math.ceil(bars / columns)
    return np.arange(bars - 1, -1, -step)[::-1]


def weights_heatmap(result: PortfolioResult, max_symbols: int = 60) -> go.Figure:
    """The weight of each symbol over time as a heatmap: long blue, short red, white at 0.

    Parameters
    ----------
    result : PortfolioResult
        The portfolio backtest to draw.
    max_symbols : int
        Rows at most: past that, the symbols with the largest mean absolute weight
        are kept (in the universe's order) and the title says so.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``go.Heatmap`` named "weights": ``z[i][j]`` is the weight of symbol
        ``y[i]`` at the close of ``x[j]`` (float32). A result of more than
        :data:`MAX_HEATMAP_COLUMNS` bars shows every k-th bar only, the last bar
        included (:func:`sampled_bars`), and the title says so.

    Raises
    ------
    ValueError
        ``max_symbols`` is not a positive int.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Hold(nbb.PortfolioStrategy):
    ...     def weights(self, universe):
    ...         return universe.close * 0 + 0.1
    >>> fig = weights_heatmap(nbb.backtest(Hold(), nbb.load_sample("universe")))
    >>> fig.data[0].z.shape, fig.layout.title.text
    ((10, 500), 'Weights of 10 symbols at every 5th bar (500 of 2,500 bars)')
    """
    if isinstance(max_symbols, bool) or not isinstance(max_symbols, (int, np.integer)) or max_symbols < 1:
        raise ValueError(f"max_symbols must be a positive int, got {max_symbols!r}")
    weights = result.weights
    total = weights.shape[1]
    who = f"{total:,} symbols"
    if total > max_symbols:
        held = weights.abs().mean().to_numpy()
        kept = np.sort(np.argsort(-held, kind="stable")[:max_symbols])
        weights = weights.iloc[:, kept]
        who = f"the {max_symbols:,} most held of {total:,} symbols"
    rows = sampled_bars(len(weights))
    shown = weights.iloc[rows]
    when = ""
    if len(rows) < len(weights):
        step = int(rows[1] - rows[0])
        when = f" at every {_ordinal(step)} bar ({len(rows):,} of {len(weights):,} bars)"
    fig = go.Figure(go.Heatmap(
        z=shown.to_numpy(dtype=np.float32).T,
        x=_times(pd.DatetimeIndex(shown.index)),
        y=[str(s) for s in shown.columns],
        colorscale=_DIVERGING, zmid=0.0, name="weights",
        colorbar=dict(title=dict(text="weight"), tickformat=".0%"),
        hovertemplate="%{y} %{x}: %{z:.2%}<extra></extra>",
    ))
    plot = _HEATMAP_ROW * len(shown.columns)
    fig.update_layout(title=f"Weights of {who}{when}",
                      height=max(_HEATMAP_MIN_HEIGHT, _TOP_MARGIN + plot + _BOTTOM_MARGIN),
                      margin=dict(l=10, r=10, t=_TOP_MARGIN, b=_BOTTOM_MARGIN))
    _anchor(fig)
    fig.update_yaxes(type="category", autorange="reversed")
    return fig


def _anchor(fig: go.Figure) -> None:
    """Tie a one-plot figure's axes to each other, as make_subplots does.

    An axis without an anchor is drawn at the first counter axis: once
    :func:`~nbbacktest.display.stacking.stack_figures` puts the figure under
    another, its time labels would land on the top figure's first plot.
    """
    fig.update_xaxes(anchor="y")
    fig.update_yaxes(anchor="x")


def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``22nd``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ---------------------------------------------------------------------- signal quality
def _no_scores(result: PortfolioResult, what: str, height: int) -> go.Figure:
    """The figure of a ``weights`` strategy: no scores, so no IC and no quantiles."""
    name = type(result.strategy).__name__
    fig = go.Figure()
    fig.add_annotation(text=f"No {what} without scores: {html.escape(name)} decides weights() directly",
                       xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False, font=dict(size=14))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=f"{what} of {html.escape(name)}", height=height,
                      margin=dict(l=10, r=10, t=_TOP_MARGIN, b=_BOTTOM_MARGIN))
    return fig


def _number(value: Any, digits: int) -> str:
    """A stat for a title, ``n/a`` when missing or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return format_value(value)
    return f"{number:.{digits}f}" if math.isfinite(number) else "n/a"


def ic_figure(result: PortfolioResult) -> go.Figure:
    """The information coefficient per period as bars, its running mean as a line.

    Parameters
    ----------
    result : PortfolioResult
        A portfolio backtest; a ``weights`` strategy has no scores, so its figure
        is an annotation saying so.

    Returns
    -------
    plotly.graph_objects.Figure
        A ``go.Bar`` "IC" (green positive, red negative) and a ``go.Scatter``
        "running mean" (the expanding mean); the title gives the IC mean and IR of
        ``result.stats``.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Momentum(nbb.PortfolioStrategy):
    ...     def scores(self, universe):
    ...         return universe.close.pct_change(60, fill_method=None)
    >>> fig = ic_figure(nbb.backtest(Momentum(rebalance="M"), nbb.load_sample("universe")))
    >>> [trace.name for trace in fig.data], fig.layout.title.text
    (['IC', 'running mean'], 'IC per period (115 periods): mean 0.100, IR 0.32')
    """
    ic = result.ic
    if ic.empty:
        return _no_scores(result, "IC", _IC_HEIGHT)
    values = ic.to_numpy(dtype=float)
    x = _times(pd.DatetimeIndex(ic.index))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=values, name="IC",
                         marker=dict(color=np.where(values < 0, _LOSS, _GAIN).tolist(), line=dict(width=0)),
                         hovertemplate="%{y:.3f}<extra>IC</extra>"))
    fig.add_trace(go.Scatter(x=x, y=ic.expanding().mean().to_numpy(), name="running mean", mode="lines",
                             line=dict(color=_MEAN, width=1.5),
                             hovertemplate="%{y:.3f}<extra>running mean</extra>"))
    stats = result.stats
    fig.update_layout(
        title=(f"IC per period ({len(ic):,} periods): mean {_number(stats.get('ic_mean'), 3)}, "
               f"IR {_number(stats.get('ic_ir'), 2)}"),
        height=_IC_HEIGHT, hovermode="x unified", bargap=0.1,
        margin=dict(l=10, r=10, t=_TOP_MARGIN, b=_BOTTOM_MARGIN),
        legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"),
    )
    _anchor(fig)
    fig.update_yaxes(title_text="IC", zeroline=True)
    return fig


def quantile_figure(result: PortfolioResult) -> go.Figure:
    """Mean return per period of each score quantile as bars; each quantile's growth of 1 beside it.

    Parameters
    ----------
    result : PortfolioResult
        A portfolio backtest; a ``weights`` strategy has no scores, so its figure
        is an annotation saying so.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``go.Bar`` "mean return" (x ``q1`` … ``q5``, y percent per period) on
        the left, then one line per quantile on the right: its per-period returns
        compounded (a period without a return counts as 0).

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Momentum(nbb.PortfolioStrategy):
    ...     def scores(self, universe):
    ...         return universe.close.pct_change(60, fill_method=None)
    >>> fig = quantile_figure(nbb.backtest(Momentum(rebalance="M"), nbb.load_sample("universe")))
    >>> [trace.name for trace in fig.data]
    ['mean return', 'q1', 'q2', 'q3', 'q4', 'q5']
    """
    returns = result.quantile_returns
    if returns.empty:
        return _no_scores(result, "score quantiles", _QUANTILE_HEIGHT)
    names = [str(c) for c in returns.columns]
    colors = sample_colorscale(_QUANTILE_SCALE, np.linspace(0.0, 1.0, len(names)).tolist())
    fig = make_subplots(rows=1, cols=2, column_widths=[0.3, 0.7], horizontal_spacing=0.08,
                        subplot_titles=["mean return per period", "growth of 1"])
    fig.add_trace(go.Bar(x=names, y=(returns.mean() * 100.0).to_numpy(), name="mean return",
                         marker=dict(color=colors), showlegend=False,
                         hovertemplate="%{x}: %{y:.3f}%<extra>mean return</extra>"), row=1, col=1)
    growth = (1.0 + returns.fillna(0.0)).cumprod()
    x = _times(pd.DatetimeIndex(returns.index))
    for name, color in zip(names, colors):
        fig.add_trace(go.Scatter(x=x, y=growth[name].to_numpy(), name=name, mode="lines",
                                 line=dict(color=color, width=1.5),
                                 hovertemplate=f"%{{y:.3f}}<extra>{name}</extra>"), row=1, col=2)
    spread = _number(result.stats.get("quantile_spread_pct"), 2)
    fig.update_yaxes(title_text="return", ticksuffix="%", row=1, col=1)
    fig.update_yaxes(title_text="growth of 1", row=1, col=2)
    fig.update_layout(
        title=(f"Returns by score quantile ({len(returns):,} periods, q1 lowest scores): "
               f"top - bottom {spread}% per period"),
        height=_QUANTILE_HEIGHT, margin=dict(l=10, r=10, t=_TOP_MARGIN + 20, b=_BOTTOM_MARGIN),
        legend=dict(orientation="h", x=1.0, xanchor="right", y=1.0, yanchor="bottom"),
    )
    return fig


# ---------------------------------------------------------------------- rich display
def portfolio_overview(result: PortfolioResult) -> go.Figure:
    """Every chart of a portfolio backtest as one figure: a notebook output shows one figure only.

    :func:`portfolio_figure` with the stats table beside it, then
    :func:`weights_heatmap`, then (for a ``scores`` strategy) :func:`ic_figure`
    and :func:`quantile_figure` under it, each keeping its height in pixels.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Hold(nbb.PortfolioStrategy):
    ...     def weights(self, universe):
    ...         return universe.close * 0 + 0.1
    >>> fig = portfolio_overview(nbb.backtest(Hold(), nbb.load_sample("universe")))
    >>> [trace.type for trace in fig.data]
    ['scatter', 'scatter', 'scatter', 'scatter', 'bar', 'table', 'heatmap']
    """
    fig = stack_figures(portfolio_figure(result, stats=True), weights_heatmap(result))
    if not result.ic.empty:
        fig = stack_figures(fig, ic_figure(result))
        fig = stack_figures(fig, quantile_figure(result))
    return fig


def portfolio_bundle(result: PortfolioResult) -> dict[str, Any]:
    """``PortfolioResult._repr_mimebundle_``: plotly's bundle of :func:`portfolio_overview`.

    As ``result_bundle`` does for a single-instrument result: the figure goes through
    :func:`~nbbacktest.display.charts.figure_bundle`, so plotly's default renderer
    decides the MIME types (and whether ``text/html`` with plotly.js comes too).

    Examples
    --------
    >>> import plotly.io as pio
    >>> import nbbacktest as nbb
    >>> class Hold(nbb.PortfolioStrategy):
    ...     def weights(self, universe):
    ...         return universe.close * 0 + 0.1
    >>> saved, pio.renderers.default = pio.renderers.default, "plotly_mimetype"
    >>> sorted(portfolio_bundle(nbb.backtest(Hold(), nbb.load_sample("universe"))))
    ['application/vnd.plotly.v1+json']
    >>> pio.renderers.default = saved
    """
    return figure_bundle(portfolio_overview(result))


def run_figure(result: Result | PortfolioResult, *, title: str | None = None) -> go.Figure:
    """The equity chart of either kind of run: :func:`portfolio_figure` or ``result_figure``.

    What a sweep's detail view and report draw for a row, whatever its strategy's kind.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> run_figure(nbb.backtest(SmaCross(), nbb.load_sample("daily"))).data[0].name
    'equity'
    """
    from nbbacktest.engine.portfolio_result import PortfolioResult

    if isinstance(result, PortfolioResult):
        return portfolio_figure(result, title=title)
    return result_figure(result, title=title)
