"""Parts the display widgets share: a figure put in an Output, a trades table, error text.

:class:`~nbbacktest.display.sweep_widget.SweepWidget`, its results panel and
:class:`~nbbacktest.display.explorer.Explorer` draw with these, so that an error
or a trade reads the same in each. Everything here sets traits only, which is
safe from a sweep's runner thread or a debounce timer.
"""

from __future__ import annotations

import html
import math

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from nbbacktest.display.charts import figure_bundle
from nbbacktest.display.tables import format_value
from nbbacktest.errors import NbbacktestError

__all__ = ["ERROR_STYLE", "NEEDS_JUPYTER", "describe_estimate", "error_html", "error_text", "show_figure",
           "trades_html"]

#: How the widgets colour an error.
ERROR_STYLE = "color:#c0392b"
#: What a widget's text says outside Jupyter; ``name`` and ``hint`` are filled in.
NEEDS_JUPYTER = (
    "{name} is an interactive widget: it needs Jupyter (a notebook or JupyterLab kernel "
    "with ipywidgets). In a script, run {hint}"
)


def trades_html(trades: pd.DataFrame, *, limit: int = 200) -> str:
    """A backtest's trades as a small HTML table (the last ``limit`` of them), values formatted.

    Examples
    --------
    >>> trades = pd.DataFrame({"size": [2.0], "pnl": [10.5], "return_pct": [1.25]})
    >>> "1.25%" in trades_html(trades)
    True
    >>> trades_html(trades.iloc[:0])
    '<i>No trades.</i>'
    """
    if trades.empty:
        return "<i>No trades.</i>"
    shown = trades.iloc[-limit:]
    cell = "padding:1px 8px;border-bottom:1px solid #ddd"
    head = "".join(f"<th style='{cell};text-align:left'>{html.escape(str(c))}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='{cell}'>{html.escape(format_value(v, str(c)))}</td>"
                         for c, v in row.items()) + "</tr>"
        for _, row in shown.iterrows()
    )
    caption = (f"<b>{len(trades)} trades</b>" if len(trades) <= limit
               else f"<b>{len(trades)} trades</b> (the last {limit} shown)")
    return (f"<div style='max-height:320px;overflow:auto'>{caption}<table style='border-collapse:collapse;"
            f"font-size:12px'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def show_figure(output: widgets.Output, fig: go.Figure | None) -> None:
    """Put ``fig`` in ``output`` (None empties it), by setting its ``outputs`` trait only.

    Safe from any thread (unlike ``with output:``): the widgets use it to redraw
    from a sweep's runner thread or a debounce timer. Plotly's own mime bundle
    is shown (see :func:`~nbbacktest.display.charts.figure_bundle`), or a text
    line where plotly has no renderer.

    Examples
    --------
    >>> output = widgets.Output()
    >>> show_figure(output, go.Figure(go.Bar(y=[1, 2]), layout=dict(title="bars")))
    >>> len(output.outputs)
    1
    >>> show_figure(output, None)
    >>> output.outputs
    ()
    """
    if fig is None:
        output.outputs = ()
        return
    bundle = figure_bundle(fig) or {"text/plain": f"<plotly figure: {fig.layout.title.text or ''}>"}
    output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)


def error_text(error: BaseException) -> str:
    """How a widget words an error: our own errors as they are, others with their type.

    Examples
    --------
    >>> from nbbacktest.errors import SweepError
    >>> error_text(SweepError("top must be a positive int")), error_text(KeyError("x"))
    ('top must be a positive int', "KeyError: 'x'")
    """
    text = str(error)
    return text if isinstance(error, NbbacktestError) else f"{type(error).__name__}: {text}"


def error_html(text: str) -> str:
    """``text`` escaped and coloured as an error, for an ``HTML`` widget.

    Examples
    --------
    >>> error_html("fast < 2")
    "<span style='color:#c0392b'>fast &lt; 2</span>"
    """
    return f"<span style='{ERROR_STYLE}'>{html.escape(text)}</span>"


def describe_estimate(runs: int, point_seconds: float, engines: int, *, points: int | None = None,
                      symbols: int = 0, approximate: bool = False) -> str:
    """How many runs the controls make and about how long they should take.

    The time is the measured cost of one run × runs / engines; ``engines=0``
    runs in this process (as ``SweepResult.engines`` says). NaN cost: no time.

    Examples
    --------
    >>> describe_estimate(132, 0.06, 2)
    '132 runs, about 4 s on 2 engines'
    >>> describe_estimate(40, 0.002, 0)
    '40 runs, under 1 s in this process'
    >>> describe_estimate(30, float("nan"), 0, points=10, symbols=3)
    '10 points × 3 symbols = 30 runs'
    """
    count = f"{runs:,} run{'' if runs == 1 else 's'}"
    if approximate:
        count = f"up to {count} (where is applied when the sweep starts)"
    if symbols:
        count = f"{points:,} point{'' if points == 1 else 's'} × {symbols} symbols = {count}"
    if not math.isfinite(point_seconds):
        return count
    seconds = runs * point_seconds / max(engines, 1)
    where = "in this process" if engines < 1 else f"on {engines} engine{'' if engines == 1 else 's'}"
    return f"{count}, {_duration(seconds)} {where}"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 60:
        return f"about {round(seconds)} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"
