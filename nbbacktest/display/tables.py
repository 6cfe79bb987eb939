"""Tables: how values read, and the Plotly tables of a sweep's rows and a backtest's stats.

Every value shown anywhere by the display layer (table cells, the progress line, the widget)
goes through :func:`format_value`, so that a percent, a duration or a param reads the same
everywhere. The table functions are pure: they take a DataFrame or a Series and return a
``go.Figure(go.Table(...))``; tests assert on the figure's data.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"fast": [5, 10, 20], "sharpe": [0.4, 1.2, float("nan")],
...                       "return_pct": [3.5, 12.25, float("nan")]})
>>> fig = results_table(frame, metric="sharpe")
>>> fig.data[0].cells.values[1], fig.data[0].cells.values[2]
(['10', '5', '20'], ['1.20', '0.40', 'n/a'])
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from nbbacktest.engine.formatting import (
    format_duration,
    format_params,
    format_rate,
    format_seconds,
    format_value,
)
from nbbacktest.engine.metrics import ALL_STAT_LABELS
from nbbacktest.errors import SweepError, did_you_mean
from nbbacktest.parallel.ranking import STABILITY_SUFFIX
from nbbacktest.parallel.rows import RUN_COLUMNS

if TYPE_CHECKING:
    from nbbacktest.engine.result import Result
    from nbbacktest.parallel.sweep import SweepResult

__all__ = [
    "DEFAULT_STATS",
    "MetricRange",
    "format_duration",
    "format_params",
    "format_rate",
    "format_seconds",
    "format_value",
    "metric_colors",
    "plan_columns",
    "rank_rows",
    "results_html",
    "results_table",
    "results_text",
    "stats_table",
    "stats_text",
    "table_height",
    "values_code",
]

#: Stats shown after the sweep's metric when ``columns`` is not given.
DEFAULT_STATS = (
    "return_pct", "sharpe", "sortino", "max_drawdown_pct", "cagr_pct", "trades",
    "win_rate_pct", "profit_factor",
)
# Worst to best, light enough to read black text on.
_GOOD_BAD_SCALE = [[0.0, "#f8696b"], [0.5, "#ffeb84"], [1.0, "#63be7b"]]
_NO_VALUE_FILL = "#eeeeee"
_CELL_FILL = "white"
_HEADER_FILL = "#e4ecf7"
# Pixels of a go.Table: plotly's header row, our rows (20 fit a laptop screen, 12 px
# text fits them), spare for a row plotly draws taller (a label with "&" is); past
# 40 rows it scrolls inside itself rather than fill pages. Title margins, bare and
# with a caption line. Characters of padding beside a column's longest text.
HEADER_HEIGHT, ROW_HEIGHT, STATS_ROW_HEIGHT, _TABLE_SLACK, _MAX_ROWS_TALL = 28, 24, 22, 12, 40
_TITLE_MARGIN, _CAPTIONED_TITLE_MARGIN, _COLUMN_PADDING = 50, 80, 2


# ---------------------------------------------------------------------- formatting
def values_code(values: Sequence[Any] | range) -> str:
    """A grid's values as the Python a user would type: ``range(5, 60, 5)``, else a list.

    Evenly spaced ints (three or more, rising) read as a ``range`` whose stop is the last
    value plus the step, as people write it (``range(5, 60, 5)``, not the equal
    ``range(5, 56, 5)``); a step of 1 is left out. Anything else is the list's ``repr``.

    Examples
    --------
    >>> values_code(range(5, 60, 5)), values_code(list(range(5, 56, 5)))
    ('range(5, 60, 5)', 'range(5, 60, 5)')
    >>> values_code([20, 21, 22, 23]), values_code([5, 10]), values_code([0.1, 0.2, 0.3])
    ('range(20, 24)', '[5, 10]', '[0.1, 0.2, 0.3]')
    """
    items = list(values)
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items)
    if ints and len(items) > 2:
        numbers = [int(v) for v in items]
        step = numbers[1] - numbers[0]
        if step > 0 and numbers == list(range(numbers[0], numbers[-1] + 1, step)):
            stop = numbers[-1] + step
            return f"range({numbers[0]}, {stop})" if step == 1 else f"range({numbers[0]}, {stop}, {step})"
    return repr(items)


def format_column(values: Sequence[Any] | pd.Series, name: str) -> list[str]:
    """Every value of a column through :func:`format_value`."""
    return [format_value(v, name) for v in values]


# ---------------------------------------------------------------------- rows
def plan_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of a sweep's results that say which run a row is (params, symbol).

    Examples
    --------
    >>> plan_columns(pd.DataFrame(columns=["fast", "slow", "symbol", "sharpe", "error"]))
    ['fast', 'slow', 'symbol']
    """
    return [c for c in frame.columns if c not in ALL_STAT_LABELS and c not in RUN_COLUMNS
            and not str(c).endswith(STABILITY_SUFFIX)]


def rank_rows(
    frame: pd.DataFrame,
    by: str,
    *,
    descending: bool = True,
    top: int | None = None,
) -> pd.DataFrame:
    """The rows sorted by column ``by`` (missing values last), the first ``top`` of them.

    Examples
    --------
    >>> frame = pd.DataFrame({"sharpe": [0.5, float("nan"), 1.5, 1.0]})
    >>> list(rank_rows(frame, "sharpe", top=3).index)
    [2, 3, 0]
    >>> list(rank_rows(frame, "sharpe", descending=False).index)
    [0, 3, 2, 1]
    """
    ranked = frame.sort_values(by, ascending=not descending, na_position="last", kind="stable")
    if "too_few_trades" in ranked:  # runs below min_trades rank after every counted run
        ranked = ranked.sort_values("too_few_trades", kind="stable")
    return ranked if top is None else ranked.iloc[:top]


class MetricRange(NamedTuple):
    """The lowest and highest finite value of a metric over a sweep's runs, and how many runs have one.

    What the colours of a results table are relative to: the whole sweep, not the
    rows shown, so that a table of the best rows is green where the runs are good.

    Examples
    --------
    >>> MetricRange.of([0.5, float("nan"), 2.0, -1.0])
    MetricRange(low=-1.0, high=2.0, runs=3)
    >>> MetricRange.of([]).runs
    0
    """

    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float] | pd.Series | np.ndarray) -> MetricRange:
        """The range of the finite values among ``values``."""
        numbers = _numbers(values)
        finite = numbers[np.isfinite(numbers)]
        if not finite.size:
            return cls(math.nan, math.nan, 0)
        return cls(float(finite.min()), float(finite.max()), int(finite.size))

    def caption(self, metric: str, total: int, maximize: bool = True) -> str:
        """The colours' legend: ``colour: sharpe across all 200 runs, red worst → green best``."""
        among = (f"all {self.runs:,} runs" if self.runs == total
                 else f"the {self.runs:,} of {total:,} runs with a {metric}")
        order = "" if maximize else " (lower is better)"
        return f"colour: {metric} across {among}, red worst → green best{order}"


def _numbers(values: Sequence[float] | pd.Series | np.ndarray) -> np.ndarray:
    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(float)


def metric_colors(
    values: Sequence[float] | pd.Series,
    maximize: bool = True,
    *,
    within: MetricRange | None = None,
) -> list[str]:
    """A fill colour per value: red for the worst, green for the best, grey if missing.

    Parameters
    ----------
    values : sequence of float
        The values to colour.
    maximize : bool
        Whether a higher value is better.
    within : MetricRange, optional
        The range that runs from red to green (default: that of ``values``): pass
        the whole sweep's so that the colours of a few rows mean the same as in
        the whole table.

    Examples
    --------
    >>> metric_colors([1.0, 3.0, float("nan")])
    ['rgb(248, 105, 107)', 'rgb(99, 190, 123)', '#eeeeee']
    >>> metric_colors([1.0, 3.0], maximize=False)[0]
    'rgb(99, 190, 123)'
    >>> metric_colors([3.0], within=MetricRange(low=-1.0, high=3.0, runs=10))
    ['rgb(99, 190, 123)']
    """
    numbers = _numbers(values)
    shown = MetricRange.of(numbers)
    if within is None or not within.runs:
        within = shown
    elif shown.runs:  # values outside the given range still take its ends
        within = MetricRange(min(within.low, shown.low), max(within.high, shown.high), within.runs)
    if not within.runs:
        return [_NO_VALUE_FILL] * len(numbers)
    low, high = within.low, within.high
    span = high - low
    with np.errstate(invalid="ignore"):
        share = np.clip((numbers - low) / span, 0.0, 1.0) if span > 0 else np.full(len(numbers), 0.5)
    share = np.where(numbers == np.inf, 1.0, np.where(numbers == -np.inf, 0.0, share))
    if not maximize:
        share = 1.0 - share
    present = ~np.isnan(numbers)
    sampled = iter(sample_colorscale(_GOOD_BAD_SCALE, share[present].tolist()) if present.any() else [])
    return [next(sampled) if ok else _NO_VALUE_FILL for ok in present]


def _shown_rows(
    frame: pd.DataFrame,
    metric: str,
    maximize: bool,
    top: int | None,
    sort: str | None,
    columns: Sequence[str] | str | None,
) -> tuple[pd.DataFrame, list[str], list[str], bool]:
    """The rows and columns a results table shows: (rows, params, stats, descending)."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1):
        raise SweepError(f"top must be a positive int or None (every row), got {top!r}")
    params = plan_columns(frame)
    if metric not in frame.columns:
        raise SweepError(_not_a_column("metric", metric, frame.columns))
    by = metric if sort is None else sort
    if not isinstance(by, str) or by not in frame.columns:
        raise SweepError(_not_a_column("sort", by, frame.columns))
    if columns is None:
        stats = [metric] + [s for s in DEFAULT_STATS if s != metric and s in frame.columns]
    else:
        stats = [columns] if isinstance(columns, str) else list(columns)
        for name in stats:
            if name not in frame.columns:
                raise SweepError(_not_a_column("columns", name, frame.columns))
        stats = [s for s in stats if s not in params]
    # Best first for the metric; a param column reads naturally ascending; any
    # other stat is shown highest first.
    descending = maximize if by == metric else by not in params
    rows = rank_rows(frame, by, descending=descending, top=top)
    if columns is None and "error" in rows.columns and rows["error"].notna().any():
        stats.append("error")
    return rows, params, stats, descending


def _not_a_column(argument: str, name: Any, columns: Iterable[Any]) -> str:
    columns = list(columns)
    return (
        f"{argument}={name!r} is not a column of the results.{did_you_mean(name, columns)} "
        f"Columns: {', '.join(map(str, columns))}"
    )


def _title(rows: pd.DataFrame, frame: pd.DataFrame, by: str, metric: str, descending: bool) -> str:
    finished = int(frame[metric].notna().sum()) if metric in frame.columns else len(frame)
    order = "best first" if by == metric else ("highest first" if descending else "lowest first")
    return f"Top {len(rows):,} of {len(frame):,} runs ({finished:,} with a {metric}), by {by}, {order}"


def with_caption(title: str | None, caption: str | None) -> str | None:
    """A figure title with a smaller second line (a legend), either part optional."""
    if not caption:
        return title
    small = f"<sup>{html.escape(caption)}</sup>"
    return f"{title}<br>{small}" if title else small


def table_height(rows: int, row_height: int = ROW_HEIGHT) -> int:
    """The pixels a ``go.Table`` of ``rows`` rows and one header row needs, whole.

    Examples
    --------
    >>> table_height(10), table_height(22, row_height=22)
    (280, 524)
    """
    return HEADER_HEIGHT + rows * row_height + _TABLE_SLACK


def column_widths(names: Sequence[str], values: Sequence[Sequence[str]]) -> list[int]:
    """Relative column widths: each column's longest text, header or cell, in characters.

    Plotly shares the table's width in these proportions, so that a long header
    (``max_drawdown_pct``) gets the room it needs and a short column gives some up.

    Examples
    --------
    >>> column_widths(["row", "max_drawdown_pct"], [["1", "12"], ["-3.50%"]])
    [5, 18]
    """
    return [max([len(name), *map(len, cells)]) + _COLUMN_PADDING for name, cells in zip(names, values)]


# ---------------------------------------------------------------------- tables
def results_cells(
    frame: pd.DataFrame,
    *,
    metric: str,
    maximize: bool = True,
    top: int | None = 20,
    sort: str | None = None,
    columns: Sequence[str] | str | None = None,
) -> go.Table:
    """The ``go.Table`` trace of :func:`results_table` (to place in a larger figure)."""
    rows, params, stats, _ = _shown_rows(frame, metric, maximize, top, sort, columns)
    return _results_trace(rows, params, stats, metric, maximize, MetricRange.of(frame[metric]))


def _results_trace(rows: pd.DataFrame, params: list[str], stats: list[str], metric: str,
                   maximize: bool, within: MetricRange) -> go.Table:
    names = ["row", *params, *stats]
    values = [[str(i) for i in rows.index]] + [format_column(rows[c], c) for c in params + stats]
    fills = [[_CELL_FILL] * len(rows) for _ in names]
    if metric in stats:
        fills[names.index(metric)] = metric_colors(rows[metric], maximize, within=within)
    align = ["right" if c == "row" or _is_numeric(rows[c]) else "left" for c in names]
    return go.Table(
        header=dict(
            values=[f"<b>{c}</b>" if c == metric else c for c in names],
            fill_color=_HEADER_FILL, align=align, height=HEADER_HEIGHT,
        ),
        cells=dict(values=values, fill_color=fills, align=align, height=ROW_HEIGHT),
        columnwidth=column_widths(names, values),
        name="results",
    )


def results_caption(frame: pd.DataFrame, *, metric: str, maximize: bool = True) -> str:
    """The legend of a results table's colours, over the whole of ``frame``.

    Examples
    --------
    >>> results_caption(pd.DataFrame({"sharpe": [0.4, 1.2, float("nan")]}), metric="sharpe")
    'colour: sharpe across the 2 of 3 runs with a sharpe, red worst → green best'
    """
    return MetricRange.of(frame[metric]).caption(metric, len(frame), maximize)


def results_table(
    frame: pd.DataFrame,
    *,
    metric: str,
    maximize: bool = True,
    top: int | None = 20,
    sort: str | None = None,
    columns: Sequence[str] | str | None = None,
) -> go.Figure:
    """The best rows of a sweep's results as a Plotly table.

    Parameters
    ----------
    frame : DataFrame
        ``SweepResult.results`` (or any frame of params then stats; its index is
        the row number shown in the ``row`` column).
    metric : str
        The column that ranks the rows; its cells are coloured red (worst shown)
        to green (best shown).
    maximize : bool
        Whether a higher metric is better.
    top : int or None
        How many rows to show (None: all).
    sort : str, optional
        Sort by this column instead: highest first, but a param sorts ascending.
        Missing values always come last.
    columns : list of str, optional
        The columns shown after the params (default: the metric, then
        :data:`DEFAULT_STATS`, then ``error`` if a shown row failed).

    Returns
    -------
    plotly.graph_objects.Figure
        One ``go.Table`` trace: ``row``, the params, then the chosen columns, all
        formatted with :func:`format_value`.

    Raises
    ------
    SweepError
        ``top`` is not a positive int, or ``metric``, ``sort`` or a ``columns``
        entry is not a column (with a did-you-mean hint).

    Examples
    --------
    >>> frame = pd.DataFrame({"fast": [5, 10], "slow": [30, 60], "sharpe": [0.4, 1.2]})
    >>> fig = results_table(frame, metric="sharpe", columns=["sharpe"])
    >>> fig.data[0].header.values
    ('row', 'fast', 'slow', '<b>sharpe</b>')
    >>> fig.data[0].cells.values[0]
    ['1', '0']
    """
    rows, params, stats, descending = _shown_rows(frame, metric, maximize, top, sort, columns)
    fig = go.Figure(_results_trace(rows, params, stats, metric, maximize, MetricRange.of(frame[metric])))
    caption = results_caption(frame, metric=metric, maximize=maximize) if metric in stats else None
    top_margin = _CAPTIONED_TITLE_MARGIN if caption else _TITLE_MARGIN
    fig.update_layout(
        title=with_caption(_title(rows, frame, sort or metric, metric, descending), caption),
        height=top_margin + table_height(min(len(rows), _MAX_ROWS_TALL)) + 10,
        margin=dict(l=10, r=10, t=top_margin, b=10),
    )
    return fig


def results_html(
    frame: pd.DataFrame,
    *,
    metric: str,
    maximize: bool = True,
    top: int | None = 10,
    sort: str | None = None,
    columns: Sequence[str] | str | None = None,
    within: MetricRange | None = None,
    total: int | None = None,
) -> str:
    """The same rows and cells as :func:`results_table`, as a small HTML table.

    For the live table under the progress bar (an HTML widget redraws fast), and
    as the ``text/html`` fallback of a sweep's rich display. The metric's colours
    run over ``within`` (default: the range over ``frame``), of ``total`` runs
    (default: ``len(frame)``), as the caption under the table says.

    Examples
    --------
    >>> frame = pd.DataFrame({"fast": [5, 10], "sharpe": [0.4, 1.2]})
    >>> text = results_html(frame, metric="sharpe", columns=["sharpe"])
    >>> text.index(">10</td>") < text.index(">5</td>")
    True
    """
    rows, params, stats, _ = _shown_rows(frame, metric, maximize, top, sort, columns)
    within = MetricRange.of(frame[metric]) if within is None else within
    colors = metric_colors(rows[metric], maximize, within=within) if metric in stats else []
    caption = within.caption(metric, len(frame) if total is None else total, maximize)
    names = ["row", *params, *stats]
    cell = "padding:1px 8px;border-bottom:1px solid #ddd"
    head = "".join(f"<th style='{cell};text-align:left;background:{_HEADER_FILL}'>"
                   f"{html.escape(str(c))}</th>" for c in names)
    body = []
    for position, (index, row) in enumerate(rows.iterrows()):
        cells = [f"<td style='{cell};text-align:right'>{index}</td>"]
        for name in params + stats:
            style = f"{cell};text-align:{'right' if _is_numeric(rows[name]) else 'left'}"
            if name == metric and colors:
                style += f";background:{colors[position]}"
            cells.append(f"<td style='{style}'>{html.escape(format_value(row[name], name))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<table class='nbbacktest-results' style='border-collapse:collapse;font-size:12px'>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
        + (f"<caption style='caption-side:bottom;text-align:left;font-size:11px;color:#666'>"
           f"{html.escape(caption)}</caption>" if colors else "")
        + "</table>"
    )


def stats_cells(stats: pd.Series) -> go.Table:
    """The ``go.Table`` trace of :func:`stats_table` (to place in a larger figure)."""
    labels = [ALL_STAT_LABELS.get(str(name), str(name)) for name in stats.index]
    values = [format_value(value, str(name)) for name, value in stats.items()]
    return go.Table(
        header=dict(values=["Metric", "Value"], fill_color=_HEADER_FILL, align=["left", "right"],
                    height=HEADER_HEIGHT),
        cells=dict(values=[labels, values], fill_color=_CELL_FILL, align=["left", "right"],
                   height=STATS_ROW_HEIGHT),
        columnwidth=column_widths(["Metric", "Value"], [labels, values]),
        name="stats",
    )


def stats_table(stats: pd.Series) -> go.Figure:
    """A backtest's stats as a two-column Plotly table: label and formatted value.

    Parameters
    ----------
    stats : Series
        ``Result.stats`` (keys from ``STAT_NAMES``; other keys show as they are).

    Examples
    --------
    >>> stats = pd.Series({"return_pct": 12.345, "trades": 14, "sharpe": 0.91}, dtype=object)
    >>> fig = stats_table(stats)
    >>> fig.data[0].cells.values
    (['Return [%]', '# Trades', 'Sharpe ratio'], ['12.35%', '14', '0.91'])
    """
    fig = go.Figure(stats_cells(stats))
    fig.update_layout(
        title=str(stats.name) if stats.name is not None else None,
        height=_TITLE_MARGIN + table_height(len(stats), STATS_ROW_HEIGHT) + 10,
        margin=dict(l=10, r=10, t=_TITLE_MARGIN, b=10),
    )
    return fig


def results_text(
    frame: pd.DataFrame,
    *,
    metric: str,
    maximize: bool = True,
    top: int | None = 20,
    sort: str | None = None,
    columns: Sequence[str] | str | None = None,
) -> str:
    """The same rows and cells as :func:`results_table`, as aligned plain text.

    For a terminal (``python -m nbbacktest demo``): numbers are right-aligned,
    text left-aligned, every value formatted with :func:`format_value`.

    Raises
    ------
    SweepError
        As :func:`results_table` does.

    Examples
    --------
    >>> frame = pd.DataFrame({"fast": [5, 10], "sharpe": [0.4, 1.2], "return_pct": [3.5, 12.25]})
    >>> print(results_text(frame, metric="sharpe"))
    row  fast  sharpe  return_pct
      1    10    1.20      12.25%
      0     5    0.40       3.50%
    """
    rows, params, stats, _ = _shown_rows(frame, metric, maximize, top, sort, columns)
    names = ["row", *params, *stats]
    table = [[str(i) for i in rows.index]] + [format_column(rows[c], c) for c in params + stats]
    right = [True] + [_is_numeric(rows[c]) for c in params + stats]
    return _aligned(names, table, right)


def stats_text(stats: pd.Series) -> str:
    """A backtest's stats as two aligned columns of text: the labels and values of :func:`stats_table`.

    Examples
    --------
    >>> stats = pd.Series({"duration": pd.Timedelta(days=3499), "equity_final": 18016.654665,
    ...                    "return_pct": 80.166547, "trades": 43}, dtype=object)
    >>> print(stats_text(stats))
    Duration          3,499 days
    Equity Final [$]   18,016.65
    Return [%]            80.17%
    # Trades                  43
    """
    labels = [ALL_STAT_LABELS.get(str(name), str(name)) for name in stats.index]
    values = [format_value(value, str(name)) for name, value in stats.items()]
    return _aligned(None, [labels, values], [False, True])


def _aligned(header: Sequence[str] | None, columns: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Columns of text side by side, two spaces apart, each padded to its widest cell."""
    heads = list(header) if header is not None else [""] * len(columns)
    widths = [max([len(h), *map(len, cells)]) for h, cells in zip(heads, columns)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    lines = [line(heads)] if header is not None else []
    lines += [line(cells) for cells in zip(*columns)]
    return "\n".join(lines)


def _is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) or pd.api.types.is_timedelta64_dtype(column)


# ---------------------------------------------------------------------- views
def sweep_table(
    sweep: SweepResult,
    top: int | None = 20,
    sort: str | None = None,
    columns: Sequence[str] | str | None = None, frame: pd.DataFrame | None = None, metric: str | None = None,
) -> go.Figure:
    """``SweepResult.table``: :func:`results_table` of the rows so far (or ``frame``, by ``metric``)."""
    return results_table(sweep.results if frame is None else frame, metric=metric or sweep.metric,
                         maximize=sweep.maximize, top=top, sort=sort, columns=columns)


def result_stats_table(result: Result) -> go.Figure:
    """``Result.stats_table``: :func:`stats_table` of the result's stats."""
    return stats_table(result.stats)

