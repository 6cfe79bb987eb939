"""Charts: a backtest's equity and drawdown; a sweep's heatmap, parallel coordinates,
distribution and best equity curves; and the rich display of both.

The chart functions are pure: they take a Result, a DataFrame or Series and return
a plain ``go.Figure``, which renders in JupyterLab 4, Notebook 7 and VS Code
without any widget extension. The ``sweep_*`` functions adapt a
:class:`~nbbacktest.parallel.sweep.SweepResult` to them; ``nbbacktest.display``
registers them as the views that ``Result.plot()``, ``SweepResult.heatmap()`` and
the others call.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"fast": [5, 5, 10, 10], "slow": [20, 40, 20, 40],
...                       "sharpe": [0.1, 0.4, 0.9, float("nan")]})
>>> fig = heatmap(frame, "fast", "slow", metric="sharpe")
>>> fig.data[0].z.tolist()
[[0.1, 0.9], [0.4, nan]]
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nbbacktest.display.stacking import stack_figures
from nbbacktest.display.tables import (
    STATS_ROW_HEIGHT,
    format_params,
    format_value,
    plan_columns,
    rank_rows,
    results_caption,
    results_cells,
    results_html,
    stats_cells,
    table_height,
    with_caption,
)
from nbbacktest.engine.metrics import NUMERIC_STATS
from nbbacktest.errors import SweepError, did_you_mean
from nbbacktest.parallel.rows import row_params

if TYPE_CHECKING:
    from nbbacktest.engine.result import Result
    from nbbacktest.parallel.sweep import SweepResult

__all__ = [
    "AGGREGATIONS",
    "distribution",
    "equity_overlay",
    "figure_bundle",
    "heatmap",
    "heatmap_grid",
    "parallel_coordinates",
    "result_figure",
    "sweep_overview",
]

#: How :func:`heatmap` folds the runs that share an (x, y) cell.
AGGREGATIONS = ("max", "min", "mean", "median")
_EQUITY = "#1f77b4"
_DRAWDOWN = "#d62728"
_GAIN = "#2ca02c"
_LOSS = "#d62728"
_BEST = "#d62728"
# Cell labels on a heatmap only while they stay legible.
_MAX_LABELLED_CELLS = 400
# Pixels: a result's chart when its stats fit beside it; the chart under a sweep's
# table and the gap between them; the margins above (title, legend) and below (room
# for the x axis's ticks and title: plotly would otherwise grow the margin, shrinking
# the plot and so the table in it).
_RESULT_HEIGHT = 560
_OVERVIEW_CHART = 380
_OVERVIEW_GAP = 40
_TOP_MARGIN = 60
_CAPTIONED_TOP_MARGIN = 90
_BOTTOM_MARGIN = 60


def figure_bundle(fig: go.Figure) -> dict[str, Any]:
    """Plotly's own mime bundle for ``fig``, from its default renderer.

    In a kernel that is ``application/vnd.plotly.v1+json``, which JupyterLab,
    Notebook 7 and VS Code draw (with ``text/html`` too when the renderer includes
    "notebook"); a renderer the user picked (``pio.renderers.default = "png"``) is
    honoured. Empty where plotly has no mime renderer (a terminal, a script).

    Examples
    --------
    >>> import plotly.io as pio
    >>> saved, pio.renderers.default = pio.renderers.default, "plotly_mimetype"
    >>> sorted(figure_bundle(go.Figure(go.Bar(y=[1, 2]))))
    ['application/vnd.plotly.v1+json']
    >>> pio.renderers.default = saved
    """
    return dict(fig._repr_mimebundle_())


# ---------------------------------------------------------------------- one backtest
def result_figure(
    result: Result,
    *,
    trades: bool = True,
    stats: bool = False,
    title: str | None = None,
    height: int | None = None,
) -> go.Figure:
    """Equity with drawdown underneath (shared time axis) and trade entry/exit markers.

    Parameters
    ----------
    result : Result
        The backtest to draw.
    trades : bool
        Mark entries (triangles: up long, down short) and exits (crosses: green
        win, red loss) on the equity curve.
    stats : bool
        Put the stats table beside the chart.
    title, height
        Layout title (default: the strategy) and height in pixels (default: 560,
        or taller where the stats table needs it to show every stat).

    Returns
    -------
    plotly.graph_objects.Figure
        Traces "equity", "drawdown" (percent), then "entry" and "exit" markers,
        then the stats table when asked.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> fig = result_figure(nbb.backtest(SmaCross(), nbb.load_sample("daily")))
    >>> [trace.name for trace in fig.data]
    ['equity', 'drawdown', 'entry', 'exit']
    """
    equity = result.equity
    drawdown = result.drawdown * 100.0
    specs: list[list[dict[str, Any] | None]]
    if stats:
        specs = [[{"type": "xy"}, {"type": "table", "rowspan": 2}], [{"type": "xy"}, None]]
    else:
        specs = [[{"type": "xy"}], [{"type": "xy"}]]
    fig = make_subplots(
        rows=2, cols=len(specs[0]), specs=specs, shared_xaxes=True, vertical_spacing=0.04,
        row_heights=[0.72, 0.28], column_widths=[0.68, 0.32] if stats else None,
        horizontal_spacing=0.03,
    )
    fig.add_trace(go.Scatter(x=equity.index, y=equity.to_numpy(), name="equity", mode="lines",
                             line=dict(color=_EQUITY, width=1.5),
                             hovertemplate="%{y:,.2f}<extra>equity</extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=drawdown.index, y=drawdown.to_numpy(), name="drawdown", mode="lines",
                             fill="tozeroy", line=dict(color=_DRAWDOWN, width=1),
                             hovertemplate="%{y:.2f}%<extra>drawdown</extra>"), row=2, col=1)
    if trades:
        for trace in _trade_markers(result.trades, equity):
            fig.add_trace(trace, row=1, col=1)
    if stats:
        fig.add_trace(stats_cells(result.stats), row=1, col=2)
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", ticksuffix="%", row=2, col=1)
    fig.update_layout(
        title=title if title is not None else repr(result.strategy),
        height=height or _result_height(len(result.stats) if stats else 0),
        hovermode="x unified", margin=dict(l=10, r=10, t=_TOP_MARGIN, b=_BOTTOM_MARGIN),
        legend=dict(orientation="h", x=0, y=1.0, yanchor="bottom"),
    )
    return fig


def _result_height(stats: int) -> int:
    """The default height of :func:`result_figure`: tall enough for ``stats`` rows whole."""
    needed = _TOP_MARGIN + table_height(stats, STATS_ROW_HEIGHT) + _BOTTOM_MARGIN
    return max(_RESULT_HEIGHT, needed)


def _trade_markers(trades: pd.DataFrame, equity: pd.Series) -> list[go.Scatter]:
    if trades.empty:
        return []
    long = (trades["size"] > 0).to_numpy()
    won = (trades["pnl"] > 0).to_numpy()
    entry = go.Scatter(
        x=trades["entry_time"], y=equity.reindex(trades["entry_time"]).to_numpy(),
        name="entry", mode="markers",
        marker=dict(symbol=np.where(long, "triangle-up", "triangle-down").tolist(), color=_GAIN, size=9),
        customdata=np.column_stack([trades["entry_price"], trades["size"]]),
        hovertemplate="entry at %{customdata[0]:,.2f}, size %{customdata[1]:.4g}<extra></extra>",
    )
    exit_ = go.Scatter(
        x=trades["exit_time"], y=equity.reindex(trades["exit_time"]).to_numpy(),
        name="exit", mode="markers",
        marker=dict(symbol="x", color=np.where(won, _GAIN, _LOSS).tolist(), size=8),
        customdata=np.column_stack([trades["exit_price"], trades["return_pct"]]),
        hovertemplate="exit at %{customdata[0]:,.2f}, %{customdata[1]:+.2f}%<extra></extra>",
    )
    return [entry, exit_]


def equity_overlay(curves: Mapping[str, pd.Series], *, title: str | None = None) -> go.Figure:
    """Several equity curves on one chart, one line per label.

    Examples
    --------
    >>> index = pd.date_range("2024-01-01", periods=3)
    >>> fig = equity_overlay({"a": pd.Series([1.0, 2.0, 3.0], index), "b": pd.Series([1.0, 1.5, 1.0], index)})
    >>> [trace.name for trace in fig.data]
    ['a', 'b']
    """
    fig = go.Figure([go.Scatter(x=curve.index, y=curve.to_numpy(), name=label, mode="lines")
                     for label, curve in curves.items()])
    fig.update_layout(title=title, yaxis_title="equity", hovermode="x unified", height=480,
                      margin=dict(l=10, r=10, t=60, b=10),
                      legend=dict(orientation="h", x=0, y=-0.12, yanchor="top"))
    return fig


# ---------------------------------------------------------------------- sweeps
def heatmap_grid(frame: pd.DataFrame, x: str, y: str, *, metric: str, agg: str = "max") -> pd.DataFrame:
    """The metric folded with ``agg`` per (y, x) pair: rows are ``y`` values, columns ``x``.

    Checks the arguments (see :func:`heatmap`). Missing pairs are NaN.

    Examples
    --------
    >>> frame = pd.DataFrame({"a": [1, 1, 2], "b": [3, 3, 4], "c": [0, 1, 0], "sharpe": [0.5, 0.7, 0.2]})
    >>> heatmap_grid(frame, "a", "b", metric="sharpe").to_numpy().tolist()
    [[0.7, nan], [nan, 0.2]]
    """
    params = plan_columns(frame)
    for argument, name in (("x", x), ("y", y)):
        if name not in params:
            raise SweepError(_not_a_param(argument, name, params))
    if x == y:
        raise SweepError(f"x and y must be two different params, got x=y={x!r}")
    if agg not in AGGREGATIONS:
        raise SweepError(f"agg must be one of {', '.join(map(repr, AGGREGATIONS))}, got {agg!r}")
    values = _metric_values(frame, metric)
    return values.groupby([frame[y], frame[x]]).agg(agg).unstack(x)


def _heatmap_trace(grid: pd.DataFrame, x: str, y: str, metric: str, maximize: bool) -> go.Heatmap:
    z = grid.to_numpy(dtype=float)
    labelled = z.size <= _MAX_LABELLED_CELLS
    return go.Heatmap(
        z=z,
        x=[format_value(v, x) for v in grid.columns],
        y=[format_value(v, y) for v in grid.index],
        colorscale="Viridis", reversescale=not maximize,
        colorbar=dict(title=dict(text=metric)),
        texttemplate="%{z:.2f}" if labelled else None,
        hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric}=%{{z:.4g}}<extra></extra>",
        name=metric,
    )


def heatmap(
    frame: pd.DataFrame,
    x: str,
    y: str,
    *,
    metric: str,
    agg: str = "max",
    maximize: bool = True,
) -> go.Figure:
    """The metric over two params as a Plotly heatmap.

    Parameters
    ----------
    frame : DataFrame
        A sweep's results (params, then stats).
    x, y : str
        Two different params (or ``symbol``) for the columns and rows.
    metric : str
        A numeric column.
    agg : {"max", "min", "mean", "median"}
        How the runs that share a cell (other params, symbols) are folded.
    maximize : bool
        Whether a higher metric is better: the best cells are bright either way.

    Returns
    -------
    plotly.graph_objects.Figure
        One ``go.Heatmap``: ``z[i][j]`` is the folded metric at ``y[i]``, ``x[j]``
        (values sorted ascending; NaN where no run finished).

    Raises
    ------
    SweepError
        ``x`` or ``y`` is not a param, they are equal, ``metric`` is not a numeric
        column, or ``agg`` is unknown.

    Examples
    --------
    >>> frame = pd.DataFrame({"fast": [5, 10], "slow": [20, 20], "sharpe": [0.1, 0.9]})
    >>> fig = heatmap(frame, "fast", "slow", metric="sharpe")
    >>> fig.data[0].x, fig.data[0].y
    (('5', '10'), ('20',))
    """
    grid = heatmap_grid(frame, x, y, metric=metric, agg=agg)
    fig = go.Figure(_heatmap_trace(grid, x, y, metric, maximize))
    folded = [p for p in _varying(frame) if p not in (x, y)]
    how = f" ({agg} over {', '.join(folded)})" if folded else ""
    fig.update_layout(title=f"{metric} by {x} and {y}{how}", height=520,
                      margin=dict(l=10, r=10, t=60, b=10))
    fig.update_xaxes(title_text=x, type="category")
    fig.update_yaxes(title_text=y, type="category")
    return fig


def parallel_coordinates(frame: pd.DataFrame, *, metric: str, maximize: bool = True) -> go.Figure:
    """One line per run across every varying param and the metric, coloured by the metric.

    Parameters
    ----------
    frame : DataFrame
        A sweep's results; params that take one value only are left out.
    metric : str
        A numeric column: the last axis and the line colour. Runs without a
        finite value are left out.
    maximize : bool
        Whether a higher metric is better (the best lines are bright either way).

    Raises
    ------
    SweepError
        Fewer than three params vary (use :func:`heatmap` or :func:`distribution`),
        or ``metric`` is not a numeric column.

    Examples
    --------
    >>> frame = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6], "kind": ["x", "y", "x"],
    ...                       "sharpe": [0.1, 0.2, 0.3]})
    >>> fig = parallel_coordinates(frame, metric="sharpe")
    >>> [d.label for d in fig.data[0].dimensions]
    ['a', 'b', 'kind', 'sharpe']
    >>> fig.data[0].dimensions[2].ticktext
    ('x', 'y')
    """
    params = _varying(frame)
    if len(params) < 3:
        named = f" ({', '.join(params)})" if params else ""
        raise SweepError(
            f"parallel_coordinates needs three or more params that vary; this sweep has "
            f"{len(params)}{named}: use heatmap(x, y) for two, distribution() for one"
        )
    values = _metric_values(frame, metric)
    kept = np.isfinite(values.to_numpy(dtype=float))
    rows, values = frame[kept], values[kept]
    dimensions = [_dimension(rows[p], p) for p in params]
    dimensions.append(dict(label=metric, values=values.to_numpy(dtype=float)))
    fig = go.Figure(go.Parcoords(
        dimensions=dimensions,
        line=dict(color=values.to_numpy(dtype=float), colorscale="Viridis", reversescale=not maximize,
                  showscale=True, colorbar=dict(title=dict(text=metric))),
    ))
    fig.update_layout(title=f"{metric} across {', '.join(params)} ({_shown_runs(frame, values, metric)})",
                      height=480,
                      margin=dict(l=60, r=40, t=80, b=30))
    return fig


def _shown_runs(frame: pd.DataFrame, shown: pd.Series, metric: str) -> str:
    """``292 of 300 runs; 8 failed``: how many runs a chart draws, and why not all."""
    total, drawn = len(frame), len(shown)
    if drawn == total:
        return f"{total:,} run{'' if total == 1 else 's'}"
    failed = int((frame["status"] == "failed").sum()) if "status" in frame.columns else 0
    if "error" in frame.columns and not failed:
        failed = int(frame["error"].notna().sum())
    reasons = [f"{failed:,} failed"] if failed else []
    if total - drawn - failed > 0:
        reasons.append(f"{total - drawn - failed:,} without a finite {metric}")
    return f"{drawn:,} of {total:,} runs; {', '.join(reasons)}"


def _dimension(column: pd.Series, name: str) -> dict[str, Any]:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return dict(label=name, values=column.to_numpy(dtype=float))
    # Choices (strings, bools): one tick per value.
    labels = sorted({format_value(v, name) for v in column})
    codes = {label: i for i, label in enumerate(labels)}
    return dict(label=name, values=[codes[format_value(v, name)] for v in column],
                tickvals=list(range(len(labels))), ticktext=labels)


def distribution(
    values: pd.Series,
    *,
    metric: str | None = None,
    best: float | None = None,
) -> go.Figure:
    """Histogram of a metric over the runs, the best value marked: is the best an outlier?

    Parameters
    ----------
    values : Series
        The metric of each run; missing and infinite values are left out.
    metric : str, optional
        Its name (default: the Series name).
    best : float, optional
        The value to mark with a vertical line.

    Examples
    --------
    >>> fig = distribution(pd.Series([0.1, 0.5, 0.5, float("nan")], name="sharpe"), best=0.5)
    >>> fig.data[0].x.tolist(), fig.layout.shapes[0].x0
    ([0.1, 0.5, 0.5], 0.5)
    """
    fig = go.Figure()
    _add_distribution(fig, values, metric or str(values.name), best)
    return fig


def _add_distribution(
    fig: go.Figure, values: pd.Series, metric: str, best: float | None, **where: int
) -> None:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    numbers = numbers[np.isfinite(numbers)]
    fig.add_trace(go.Histogram(x=numbers, name=metric, marker_color=_EQUITY, showlegend=False,
                               hovertemplate=f"{metric} %{{x}}<br>%{{y}} runs<extra></extra>"), **where)
    if best is not None and math.isfinite(best):
        # A shape on the subplot's own axes: add_vline(row=, col=) trips over a table
        # trace in the same figure.
        axes = fig.get_subplot(**where) if where else None
        x = axes.xaxis.plotly_name.replace("axis", "") if axes else "x"
        y = axes.yaxis.plotly_name.replace("axis", "") if axes else "y"
        fig.add_shape(type="line", xref=x, yref=f"{y} domain", x0=best, x1=best, y0=0, y1=1,
                      line=dict(color=_BEST, dash="dash", width=2))
        fig.add_annotation(x=best, y=1, xref=x, yref=f"{y} domain", showarrow=False,
                           text=f"best {format_value(best, metric)}", xanchor="left", yanchor="bottom",
                           font=dict(color=_BEST))
    fig.update_xaxes(title_text=metric, **where)
    fig.update_yaxes(title_text="runs", **where)
    if not where:
        fig.update_layout(title=f"{metric} over {len(numbers)} runs", height=420, bargap=0.05,
                          margin=dict(l=10, r=10, t=60, b=10))


def sweep_overview(
    frame: pd.DataFrame,
    *,
    metric: str,
    maximize: bool = True,
    top: int = 10,
    title: str | None = None,
    chart: str | None = None,
) -> go.Figure:
    """The best rows as a table above a chart: the heatmap for two varying params, else the distribution.

    ``chart`` forces "heatmap" or "distribution".

    Examples
    --------
    >>> frame = pd.DataFrame({"fast": [5, 5, 10], "slow": [20, 40, 20], "sharpe": [0.1, 0.4, 0.9]})
    >>> [trace.type for trace in sweep_overview(frame, metric="sharpe").data]
    ['table', 'heatmap']
    """
    varying = _varying(frame)
    # Sized in pixels: the table shows every row whole, the chart keeps its height.
    table = table_height(min(top, len(frame)))
    plot = table + _OVERVIEW_GAP + _OVERVIEW_CHART
    fig = make_subplots(rows=2, cols=1, specs=[[{"type": "table"}], [{"type": "xy"}]],
                        row_heights=[table, _OVERVIEW_CHART], vertical_spacing=_OVERVIEW_GAP / plot)
    fig.add_trace(results_cells(frame, metric=metric, maximize=maximize, top=top), row=1, col=1)
    if chart not in (None, "heatmap", "distribution"):
        raise SweepError(f"chart must be 'heatmap', 'distribution' or None, got {chart!r}")
    if chart == "heatmap" and len(varying) < 2:
        raise SweepError(f"chart='heatmap' needs two params that vary; the runs have {len(varying)}")
    if chart == "heatmap" or (chart is None and len(varying) == 2):
        x, y = varying[:2]
        trace = _heatmap_trace(heatmap_grid(frame, x, y, metric=metric), x, y, metric, maximize)
        trace.colorbar.update(len=0.5, y=0.0, yanchor="bottom")
        fig.add_trace(trace, row=2, col=1)
        fig.update_xaxes(title_text=x, type="category", row=2, col=1)
        fig.update_yaxes(title_text=y, type="category", row=2, col=1)
    else:
        values = _metric_values(frame, metric)
        best = rank_rows(frame.assign(_metric=values), "_metric", descending=maximize, top=1)["_metric"]
        _add_distribution(fig, values, metric, float(best.iloc[0]) if len(best) else None, row=2, col=1)
    caption = results_caption(frame, metric=metric, maximize=maximize)
    top_margin = _CAPTIONED_TOP_MARGIN if title else _TOP_MARGIN
    fig.update_layout(title=with_caption(title, caption), height=top_margin + plot + _BOTTOM_MARGIN,
                      margin=dict(l=10, r=10, t=top_margin, b=_BOTTOM_MARGIN))
    return fig


def _varying(frame: pd.DataFrame) -> list[str]:
    """The plan columns that take more than one value."""
    return [c for c in plan_columns(frame) if frame[c].nunique(dropna=False) > 1]


def _metric_values(frame: pd.DataFrame, metric: Any) -> pd.Series:
    if not isinstance(metric, str) or metric not in frame.columns:
        candidates = [c for c in frame.columns if c in NUMERIC_STATS] or list(map(str, frame.columns))
        hint = did_you_mean(metric, candidates)
        raise SweepError(f"metric={metric!r} is not a column of the results.{hint} "
                         f"Numeric stats: {', '.join(candidates)}")
    values = frame[metric]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(float)
    converted = pd.to_numeric(values, errors="coerce")
    if converted.isna().all() and values.notna().any():
        raise SweepError(f"metric={metric!r} is not numeric (dtype {values.dtype}); "
                         f"pick one of {', '.join(NUMERIC_STATS)}")
    return converted.astype(float)


def _not_a_param(argument: str, name: Any, params: Sequence[str]) -> str:
    hint = did_you_mean(name, params)
    return f"{argument}={name!r} is not a param of the sweep.{hint} Params: {', '.join(params)}"


# ---------------------------------------------------------------------- views
def _finished(sweep: SweepResult) -> pd.DataFrame:
    """The sweep's rows that ran (done or failed), in grid order."""
    frame = sweep.results
    return frame[frame["status"].isin(("done", "failed"))]


def _single_class(sweep: SweepResult, view: str) -> None:
    classes = sweep.plan.classes
    if len(classes) > 1:
        names = ", ".join(c.__name__ for c in classes)
        raise SweepError(f"{view} needs runs of one strategy class with common params; "
                         f"these runs mix {names}")


def sweep_heatmap(
    sweep: SweepResult, x: str, y: str, metric: str | None = None, agg: str = "max"
) -> go.Figure:
    """``SweepResult.heatmap``: :func:`heatmap` of the finished rows."""
    _single_class(sweep, "heatmap")
    return heatmap(_finished(sweep), x, y, metric=metric or sweep.metric, agg=agg,
                   maximize=sweep.maximize)


def sweep_parallel_coordinates(sweep: SweepResult, metric: str | None = None) -> go.Figure:
    """``SweepResult.parallel_coordinates``: :func:`parallel_coordinates` of the finished rows."""
    _single_class(sweep, "parallel_coordinates")
    return parallel_coordinates(_finished(sweep), metric=metric or sweep.metric,
                                maximize=sweep.maximize)


def sweep_distribution(sweep: SweepResult, metric: str | None = None) -> go.Figure:
    """``SweepResult.distribution``: the metric's histogram, the best run marked."""
    metric = metric or sweep.metric
    frame = _finished(sweep)
    values = _metric_values(frame, metric)
    maximize = sweep.maximize if metric == sweep.metric else True
    best = rank_rows(frame.assign(_metric=values), "_metric", descending=maximize, top=1)["_metric"]
    return distribution(values, metric=metric, best=float(best.iloc[0]) if len(best) else None)


def sweep_compare(sweep: SweepResult, top: int = 5) -> go.Figure:
    """``SweepResult.compare``: equity curves of the ``top`` best runs, re-run with ``detail``."""
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise SweepError(f"top must be a positive int, got {top!r}")
    frame = _finished(sweep)
    values = _metric_values(frame, sweep.metric)
    ranked = rank_rows(frame.assign(_metric=values), "_metric", descending=sweep.maximize, top=top)
    ranked = ranked[ranked["_metric"].notna()]
    if ranked.empty:
        raise SweepError(f"compare needs a finished run with a {sweep.metric}; none has one yet")
    curves = {}
    for row, value in zip(ranked.index.tolist(), ranked["_metric"]):
        label = (f"row {row}: {format_params(row_params(sweep.plan, row))} "
                 f"({sweep.metric} {format_value(value, sweep.metric)})")
        curves[label] = sweep.detail(row).equity
    return equity_overlay(curves, title=f"Equity of the {len(curves)} best runs by {sweep.metric}")


def result_bundle(result: Result) -> dict[str, Any]:
    """``Result._repr_mimebundle_``: the chart with the stats table beside it."""
    return figure_bundle(result_figure(result, stats=True))


def sweep_bundle(sweep: SweepResult, below: go.Figure | None = None) -> dict[str, Any]:
    """``SweepResult._repr_mimebundle_``: the best rows and a chart of the rows so far, ``below`` under it.

    Plotly's bundle of :func:`sweep_overview`, plus an HTML table of the best rows
    for front ends that cannot draw a Plotly figure.
    """
    frame = _finished(sweep)
    names = sorted({c.__name__ for c in sweep.plan.classes})
    title = (f"{', '.join(names)}: {sweep.status}, {sweep.progress}/{len(sweep)} runs, "
             f"{sweep.failed} failed")
    chart = "distribution" if sweep.plan.is_mixed else None
    fig = sweep_overview(frame, metric=sweep.metric, maximize=sweep.maximize, title=title, chart=chart)
    bundle = figure_bundle(fig if below is None else stack_figures(fig, below))
    bundle.setdefault("text/html", f"<div><b>{html.escape(title)}</b>"
                      f"{results_html(frame, metric=sweep.metric, maximize=sweep.maximize)}</div>")
    return bundle
