"""Views of a walk-forward analysis: the fold table, stitched equity, chosen params.

Pure functions from a :class:`~nbbacktest.parallel.walk_forward.WalkForwardResult`
to a Plotly figure (or a mime bundle), registered as views by
:mod:`nbbacktest.display` so that the result's ``table()``, ``plot()``,
``params_chart()`` and rich display find them.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nbbacktest.display.charts import figure_bundle
from nbbacktest.display.tables import format_value

if TYPE_CHECKING:
    from nbbacktest.parallel.walk_forward import WalkForwardResult

__all__ = ["walk_forward_bundle", "walk_forward_equity", "walk_forward_params", "walk_forward_table"]


def walk_forward_table(wf: WalkForwardResult) -> go.Figure:
    """The fold table as a ``go.Table``: one row per fold, dates as days.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> wf = nbb.walk_forward(SmaCross, nbb.load_sample("daily"), {"fast": [5, 10], "slow": [40]},
    ...                       train="4Y", test="2Y", progress=False)
    >>> fig = walk_forward_table(wf)
    >>> list(fig.data[0].cells.values[0])
    ['1', '2']
    """
    folds = wf.folds
    cells = [[_text(v) for v in folds[column]] for column in folds.columns]
    return go.Figure(go.Table(header={"values": list(folds.columns)}, cells={"values": cells}))


def walk_forward_equity(wf: WalkForwardResult) -> go.Figure:
    """Stitched out-of-sample equity against buy and hold, a dotted line at each fold's test start.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> wf = nbb.walk_forward(SmaCross, nbb.load_sample("daily"), {"fast": [5, 10], "slow": [40]},
    ...                       train="4Y", test="2Y", progress=False)
    >>> fig = walk_forward_equity(wf)
    >>> [trace.name for trace in fig.data], len(fig.layout.shapes)
    (['out of sample', 'buy & hold'], 2)
    """
    equity, hold = wf.equity, wf.buy_and_hold
    fig = go.Figure([
        go.Scatter(x=equity.index, y=equity.to_numpy(), name="out of sample", mode="lines"),
        go.Scatter(x=hold.index, y=hold.to_numpy(), name="buy & hold", mode="lines",
                   line={"dash": "dot"}),
    ])
    for start in wf.folds["test_start"]:
        fig.add_vline(x=start, line={"width": 1, "dash": "dot", "color": "grey"})
    fig.update_layout(title=f"Walk-forward: {wf.summary()}", yaxis_title="equity",
                      title_font_size=13, height=420, margin={"t": 60, "b": 40})
    return fig


def walk_forward_params(wf: WalkForwardResult) -> go.Figure:
    """The chosen value of each param across folds: one panel per param, a step line.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> wf = nbb.walk_forward(SmaCross, nbb.load_sample("daily"), {"fast": [5, 10], "slow": [40]},
    ...                       train="4Y", test="2Y", progress=False)
    >>> [trace.name for trace in walk_forward_params(wf).data]
    ['fast', 'slow']
    """
    folds = wf.folds
    names = list(wf.sweep.plan.names)
    fig = make_subplots(rows=max(len(names), 1), cols=1, shared_xaxes=True,
                        subplot_titles=names or None, vertical_spacing=0.08)
    for row, name in enumerate(names, start=1):
        fig.add_trace(go.Scatter(x=folds["fold"], y=folds[name], name=name, mode="lines+markers",
                                 line={"shape": "hv"}), row=row, col=1)
    fig.update_xaxes(title_text="fold", dtick=1, row=max(len(names), 1), col=1)
    fig.update_layout(title="Chosen params per fold", showlegend=False,
                      height=160 + 140 * max(len(names), 1), margin={"t": 60, "b": 40})
    return fig


def walk_forward_bundle(wf: WalkForwardResult) -> dict[str, Any]:
    """``WalkForwardResult._repr_mimebundle_``: the equity chart, and the fold table as HTML."""
    bundle = figure_bundle(walk_forward_equity(wf))
    table = wf.folds.to_html(index=False, float_format=lambda v: f"{v:.4g}")
    page = f"<div><b>{html.escape(wf.summary())}</b>{table}</div>"
    if "text/html" in bundle:
        bundle["text/html"] = page + bundle["text/html"]
    else:
        bundle["text/html"] = page
    return bundle


def _text(value: Any) -> str:
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M")).removesuffix(" 00:00")
    return format_value(value)
