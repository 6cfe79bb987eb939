"""The credibility panel: is a sweep's best run real, or the luckiest of many tries?

``SweepResult.credibility()`` measures it (the deflated Sharpe ratio, the
probability of backtest overfitting by CSCV, the SPA and Reality Check p-values,
and plain-language flags); this module draws it:

- :func:`credibility_panel`: one Plotly figure: the numbers as a table, the
  histogram of the PBO logits (the 0 line splits "the in-sample best ended in
  the bottom half out of sample" from the rest), and the out-of-sample against
  in-sample performance of the CSCV splits with the degradation line.
- :func:`credibility_html`: the numbers, the flags and the notes as HTML.
- :func:`sweep_bundle`: a sweep's rich display, with the panel under the
  results once a sweep of at least :data:`PANEL_MIN_RUNS` runs is complete.

Every function reads the credibility through :class:`CredibilityLike`, the
fields of ``nbbacktest.parallel.credibility.Credibility``.

Examples
--------
>>> import numpy as np
>>> from nbbacktest.engine.overfitting import probability_of_backtest_overfitting
>>> returns = np.random.default_rng(0).normal(0.0, 0.01, size=(400, 30))
>>> pbo = probability_of_backtest_overfitting(returns, blocks=8)
>>> fig = pbo_figure(pbo)
>>> [trace.type for trace in fig.data], len(fig.data[0].x), len(fig.data[1].x)
(['histogram', 'scatter', 'scatter'], 70, 70)
"""

from __future__ import annotations

import html
import math
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nbbacktest.display import charts
from nbbacktest.engine.overfitting import BacktestOverfitting, DeflatedSharpe, SpaPValues
from nbbacktest.parallel.credibility import PBO_METRICS

if TYPE_CHECKING:
    from nbbacktest.parallel.sweep import SweepResult

__all__ = ["PANEL_MIN_RUNS", "CredibilityLike", "credibility_bundle", "credibility_html",
           "credibility_panel", "credibility_rows", "pbo_figure", "shown_credibility", "sweep_bundle",
           "sweep_credibility"]

#: A sweep's display shows the panel from this many runs: with fewer, a run's
#: out-of-sample rank moves in steps of 1/(runs + 1), so PBO's logits take a
#: handful of values, and the best of a few tries needs little deflating.
PANEL_MIN_RUNS = 20
#: The usual bar of the deflated Sharpe ratio (a 95 % probability of skill).
DSR_BAR = 0.95
#: The p-value under which SPA and the Reality Check say some run beats the benchmark.
SPA_BAR = 0.05

# Pixels: the numbers table's header, a row of one line and each wrapped line more
# (a reading wraps at about _LINE_CHARACTERS), the charts.
_HEADER = 30
_ROW = 26
_WRAPPED_LINE = 17
_LINE_CHARACTERS = 85
_CHARTS = 360
_GAP = 70
_TOP = 70
_BOTTOM = 60
_OVERFIT = "#d62728"
_FIT = "#1f77b4"
_LINE = "#ff7f0e"
_FLAG_FILL = "#fff3cd"
_FILL = "#f7f7f7"
_HEAD_FILL = "#e4ecf7"


class CredibilityLike(Protocol):
    """What the panel reads from a credibility (``SweepResult.credibility()``'s result)."""

    @property
    def metric(self) -> str: ...
    @property
    def runs(self) -> int: ...
    @property
    def finished(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def cancelled(self) -> int: ...
    @property
    def kept(self) -> int: ...
    @property
    def periods(self) -> int: ...
    @property
    def bars_per_period(self) -> int: ...
    @property
    def best_index(self) -> int | None: ...
    @property
    def best_trades(self) -> int | None: ...
    @property
    def min_trades(self) -> int: ...
    @property
    def dsr(self) -> DeflatedSharpe | None: ...
    @property
    def pbo(self) -> BacktestOverfitting | None: ...
    @property
    def spa(self) -> SpaPValues | None: ...
    @property
    def notes(self) -> tuple[str, ...]: ...
    @property
    def flags(self) -> tuple[str, ...]: ...
    def summary(self) -> str: ...


# ---------------------------------------------------------------------- the numbers
def credibility_rows(credibility: CredibilityLike) -> list[tuple[str, str, str]]:
    """The panel's numbers as (measure, value, what it says) rows, flags excluded.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> bare = SimpleNamespace(metric="sharpe", runs=40, finished=40, failed=0, cancelled=0,
    ...                        kept=40, periods=250, bars_per_period=5, best_index=7,
    ...                        best_trades=12, min_trades=0, dsr=None, pbo=None, spa=None)
    >>> [name for name, value, _ in credibility_rows(bare) if value == "not computed"]
    ['Deflated Sharpe ratio', 'PBO (CSCV)', "Hansen's SPA p-value"]
    """
    c = credibility
    rows: list[tuple[str, str, str]] = []
    d = c.dsr
    if d is None:
        rows.append(("Deflated Sharpe ratio", "not computed", "see the notes"))
    else:
        verdict = "clears" if d.dsr >= DSR_BAR else "is below"
        rows.append(("Deflated Sharpe ratio", f"{d.dsr:.2f}",
                     f"a {d.dsr:.0%} probability that the best run's true Sharpe ratio beats SR0 = "
                     f"{d.sr0:.3f}, what the best of {d.trials:,} skill-less trials shows by chance "
                     f"(best: {d.sharpe:.3f}, per period, over {d.observations:,} periods); "
                     f"{verdict} the usual {DSR_BAR:.2f} bar"))
    p = c.pbo
    if p is None:
        rows.append(("PBO (CSCV)", "not computed", "see the notes"))
    else:
        slope = "n/a" if math.isnan(p.slope) else f"{p.slope:.2f}"
        rows.append(("PBO (CSCV)", f"{p.pbo:.0%}",
                     f"in {p.pbo:.0%} of the {len(p.logits):,} splits of {p.blocks} blocks the "
                     "in-sample best ranks in the bottom half out of sample (about 50 % for noise, "
                     f"near 0 for a real edge); it loses out of sample in {p.probability_of_loss:.0%}; "
                     f"degradation slope {slope}"))
    s = c.spa
    if s is None:
        rows.append(("Hansen's SPA p-value", "not computed", "see the notes"))
    else:
        beats = "some run beats" if s.consistent <= SPA_BAR else "no run is shown to beat"
        rows.append(("Hansen's SPA p-value", f"{s.consistent:.3f}",
                     f"consistent p-value: {beats} buy and hold at the {SPA_BAR:.0%} level, once the "
                     f"search over the runs is accounted for (lower p-value {s.lower:.3f})"))
        rows.append(("White's Reality Check p-value", f"{s.upper:.3f}",
                     "SPA's upper p-value: re-centres every run, as White's Reality Check does; "
                     "the most conservative of the three"))
    rows.append(("Runs", f"{c.runs:,}",
                 f"tried (every one counts as a trial): {c.finished:,} finished, {c.failed:,} failed, "
                 f"{c.cancelled:,} cancelled; the returns of {c.kept:,} were used"))
    bars = "1 bar" if c.bars_per_period == 1 else f"{c.bars_per_period:,} bars compounded"
    rows.append(("Periods", f"{c.periods:,}", f"each run's returns over periods of {bars}"))
    if c.best_index is None:
        rows.append(("Best run", "none", f"no run has a {c.metric}"))
    else:
        trades = "" if c.best_trades is None else f", {c.best_trades:,} trades"
        floor = f" (min_trades={c.min_trades:,})" if c.min_trades else ""
        rows.append(("Best run", f"row {c.best_index}", f"by {c.metric}{trades}{floor}"))
    return rows


def credibility_html(credibility: CredibilityLike) -> str:
    """The numbers as an HTML block: DSR, PBO, SPA and the Reality Check, counts, flags, notes.

    The flags (plain-language warnings) are a highlighted list; every text is
    escaped. Styles are inline, so the block reads the same in a notebook and in
    the HTML report.

    Parameters
    ----------
    credibility : CredibilityLike
        ``SweepResult.credibility()``'s result.

    Returns
    -------
    str

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> bare = SimpleNamespace(metric="sharpe", runs=40, finished=40, failed=0, cancelled=0,
    ...                        kept=40, periods=250, bars_per_period=1, best_index=7,
    ...                        best_trades=3, min_trades=0, dsr=None, pbo=None, spa=None,
    ...                        notes=("arch is not installed",), flags=("the best run has 3 trades",),
    ...                        summary=lambda: "")
    >>> page = credibility_html(bare)
    >>> "PBO (CSCV)" in page, "<li>the best run has 3 trades</li>" in page
    (True, True)
    """
    c = credibility
    cell = "padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top"
    body = "".join(
        f"<tr><th style='{cell};white-space:nowrap'>{_esc(name)}</th>"
        f"<td style='{cell};text-align:right;font-variant-numeric:tabular-nums'><b>{_esc(value)}</b></td>"
        f"<td style='{cell}'>{_esc(reading)}</td></tr>" for name, value, reading in credibility_rows(c))
    parts = [f"<div class='credibility'><p><b>Is the best run real?</b> {_esc(_headline(c))}</p>",
             f"<table style='border-collapse:collapse;font-size:12px'>{body}</table>"]
    if c.flags:
        items = "".join(f"<li>{_esc(flag)}</li>" for flag in c.flags)
        parts.append(f"<div class='flags' style='background:{_FLAG_FILL};border-left:4px solid #e0a800;"
                     f"padding:4px 10px;margin:8px 0'><b>&#9888; Warnings</b><ul style='margin:4px 0'>"
                     f"{items}</ul></div>")
    if c.notes:
        items = "".join(f"<li>{_esc(note)}</li>" for note in c.notes)
        parts.append(f"<div class='notes' style='color:#555;font-size:12px'>Notes<ul style='margin:2px 0'>"
                     f"{items}</ul></div>")
    return "".join(parts) + "</div>"


def _headline(c: CredibilityLike) -> str:
    """One line: how many runs, and the verdicts in short."""
    bits = [f"{c.runs:,} runs tried, best by {c.metric}"]
    if c.dsr is not None:
        bits.append(f"DSR {c.dsr.dsr:.2f}")
    if c.pbo is not None:
        bits.append(f"PBO {c.pbo.pbo:.0%}")
    if c.spa is not None:
        bits.append(f"SPA p {c.spa.consistent:.3f}")
    if c.flags:
        bits.append(f"{len(c.flags)} warning{'s' if len(c.flags) > 1 else ''}")
    return "; ".join(bits)


# ---------------------------------------------------------------------- the figure
def credibility_panel(credibility: CredibilityLike) -> go.Figure:
    """The credibility of a sweep's best run as one figure: the numbers, and PBO's two charts.

    On top, a table of the numbers (:func:`credibility_rows`) and the flags,
    highlighted. Under it, side by side: the histogram of the CSCV logits with the
    0 line (PBO, the share at or left of it, is in its title), and each split's
    out-of-sample performance of the in-sample best against its in-sample
    performance, with the least-squares degradation line and the share of splits
    that lose out of sample. Without a PBO (too few periods, say) the charts are
    replaced by a line saying why.

    Parameters
    ----------
    credibility : CredibilityLike
        ``SweepResult.credibility()``'s result.

    Returns
    -------
    plotly.graph_objects.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> from nbbacktest.engine.overfitting import probability_of_backtest_overfitting
    >>> returns = np.random.default_rng(0).normal(0.0, 0.01, size=(400, 30))
    >>> c = SimpleNamespace(metric="sharpe", runs=30, finished=30, failed=0, cancelled=0, kept=30,
    ...                     periods=400, bars_per_period=1, best_index=4, best_trades=20,
    ...                     min_trades=0, dsr=None, spa=None, notes=(), flags=("noise",),
    ...                     pbo=probability_of_backtest_overfitting(returns, blocks=8),
    ...                     summary=lambda: "")
    >>> fig = credibility_panel(c)
    >>> [trace.type for trace in fig.data]
    ['table', 'histogram', 'scatter', 'scatter']
    """
    c = credibility
    rows = credibility_rows(c)
    shown = [("\u26a0 warning", "", flag) for flag in c.flags] + rows
    fills = [_FLAG_FILL] * len(c.flags) + [_FILL] * len(rows)
    table_px = _HEADER + sum(_ROW + _WRAPPED_LINE * ((len(r[2]) - 1) // _LINE_CHARACTERS) for r in shown)
    title = f"Is the best run real? {_headline(c)}"
    table = go.Table(
        columnwidth=[1.6, 0.9, 6.0],
        header=dict(values=["<b>measure</b>", "<b>value</b>", "<b>what it says</b>"], fill_color=_HEAD_FILL,
                    align="left", height=_HEADER),
        cells=dict(values=[list(col) for col in zip(*shown)], fill_color=[fills],
                   align=["left", "right", "left"],
                   height=_ROW))
    if c.pbo is None:
        fig = go.Figure(table)
        why = next((n for n in c.notes if "pbo" in n.lower() or "cscv" in n.lower()), "not computed")
        fig.add_annotation(text=f"No PBO charts: {html.escape(why)}", xref="paper", yref="paper", x=0.0,
                           y=0.0, xanchor="left", yanchor="top", showarrow=False)
        fig.update_layout(title=title, height=_TOP + table_px + _BOTTOM,
                          margin=dict(l=10, r=10, t=_TOP, b=_BOTTOM))
        return fig
    plot = table_px + _GAP + _CHARTS
    fig = make_subplots(rows=2, cols=2, specs=[[{"type": "table", "colspan": 2}, None], [{}, {}]],
                        row_heights=[table_px, _CHARTS], vertical_spacing=_GAP / plot,
                        horizontal_spacing=0.08,
                        subplot_titles=["", *_pbo_titles(c.pbo)])
    fig.add_trace(table, row=1, col=1)
    _add_pbo(fig, c.pbo, row=2, measure=_measure(c.metric))
    fig.update_layout(title=title, height=_TOP + plot + _BOTTOM, showlegend=False,
                      margin=dict(l=10, r=10, t=_TOP, b=_BOTTOM))
    return fig


def pbo_figure(pbo: BacktestOverfitting, metric: str = "sharpe") -> go.Figure:
    """PBO's two charts alone: the logits' histogram and the degradation scatter.

    See :func:`credibility_panel`, which puts them under the numbers. ``metric``
    is the sweep's: it says what PBO ranked the runs by (the scatter's axes).
    """
    fig = make_subplots(rows=1, cols=2, subplot_titles=_pbo_titles(pbo), horizontal_spacing=0.08)
    _add_pbo(fig, pbo, row=1, measure=_measure(metric))
    fig.update_layout(height=_TOP + _CHARTS + _BOTTOM, showlegend=False,
                      margin=dict(l=10, r=10, t=_TOP, b=_BOTTOM))
    return fig


def _pbo_titles(pbo: BacktestOverfitting) -> list[str]:
    splits = len(pbo.logits)
    return [f"PBO {pbo.pbo:.0%}: logits \u2264 0 in {splits:,} splits",
            f"Out of sample vs in sample: {pbo.probability_of_loss:.0%} of splits lose"]


def _measure(metric: str) -> str:
    """What PBO ranked the runs by, for a sweep's ``metric``."""
    ranked = PBO_METRICS.get(metric)
    return {"sharpe": "Sharpe ratio (per period)", "mean": "mean period return"}.get(ranked or "", metric)


def _add_pbo(fig: go.Figure, pbo: BacktestOverfitting, row: int, measure: str) -> None:
    """The logits' histogram in column 1, the degradation scatter in column 2, of ``row``."""
    logits = np.asarray(pbo.logits, dtype=float)
    fig.add_trace(go.Histogram(x=logits, marker_color=_FIT, opacity=0.85, name="logit",
                               hovertemplate="logit %{x}<br>%{y} splits<extra></extra>"), row=row, col=1)
    low = min(float(logits.min()), 0.0) if len(logits) else 0.0
    fig.add_vrect(x0=low - 0.5, x1=0.0, fillcolor=_OVERFIT, opacity=0.08, line_width=0, row=row, col=1,
                  exclude_empty_subplots=False)
    fig.add_vline(x=0.0, line=dict(color=_OVERFIT, width=2), row=row, col=1, exclude_empty_subplots=False)
    fig.update_xaxes(title_text="logit of the in-sample best's out-of-sample rank (\u2264 0: bottom half)",
                     row=row, col=1)
    fig.update_yaxes(title_text="splits", row=row, col=1)

    x = np.asarray(pbo.is_performance, dtype=float)
    y = np.asarray(pbo.oos_performance, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    loses = np.where(y[ok] < 0.0, _OVERFIT, _FIT)
    fig.add_trace(go.Scatter(x=x[ok], y=y[ok], mode="markers", name="split",
                             marker=dict(color=loses, size=5, opacity=0.4),
                             hovertemplate="in sample %{x:.4g}<br>out of sample %{y:.4g}<extra></extra>"),
                  row=row, col=2)
    if ok.any() and math.isfinite(pbo.slope):
        ends = np.array([x[ok].min(), x[ok].max()])
        fig.add_trace(go.Scatter(x=ends, y=pbo.intercept + pbo.slope * ends, mode="lines",
                                 line=dict(color=_LINE, width=2), name="degradation",
                                 hovertemplate=(f"out of sample = {pbo.intercept:.3g} + {pbo.slope:.3g}"
                                                " \u00d7 in sample<extra></extra>")),
                      row=row, col=2)
        fig.add_annotation(text=f"slope {pbo.slope:.2f}", xref="x domain", yref="y domain", x=0.98,
                           y=0.98, xanchor="right", yanchor="top", showarrow=False,
                           font=dict(color=_LINE), row=row, col=2)
    fig.add_hline(y=0.0, line=dict(color="#888", width=1, dash="dot"), row=row, col=2,
                  exclude_empty_subplots=False)
    fig.update_xaxes(title_text=f"in sample: {measure} of the in-sample best", row=row, col=2)
    fig.update_yaxes(title_text=f"out of sample: {measure}", row=row, col=2)
    fig.update_traces(showlegend=False, row=row)


# ---------------------------------------------------------------------- the sweep
#: Each complete sweep's credibility, computed once for its display (a complete
#: sweep no longer changes); None when it could not be had.
_SHOWN: weakref.WeakKeyDictionary[Any, CredibilityLike | None] = weakref.WeakKeyDictionary()


def shown_credibility(sweep: SweepResult) -> CredibilityLike | None:
    """The credibility a sweep's display and report show: None unless it can be had.

    It is shown for a sweep that is complete and has at least
    :data:`PANEL_MIN_RUNS` runs, when ``sweep.credibility()`` exists and returns.
    Anything it raises (no returns to use, a missing optional package) and any
    warning it gives are kept out of the display: ``sweep.credibility()`` called
    directly says them.
    """
    try:
        if sweep.status != "complete" or len(sweep) < PANEL_MIN_RUNS:
            return None
        if sweep in _SHOWN:
            return _SHOWN[sweep]
        measure = getattr(sweep, "credibility", None)
        found: CredibilityLike | None = None
        if callable(measure):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found = measure()
            except Exception:
                found = None
        _SHOWN[sweep] = found
        return found
    except Exception:  # never break a display
        return None


def sweep_bundle(sweep: SweepResult) -> dict[str, Any]:
    """``SweepResult._repr_mimebundle_``: the results, and the credibility panel under them.

    :func:`nbbacktest.display.charts.sweep_bundle`, with the panel stacked under
    its chart (and its numbers after the HTML table) when :func:`shown_credibility`
    has one; without, or if drawing it fails, the results alone.
    """
    found = shown_credibility(sweep)
    if found is not None:
        try:
            bundle = charts.sweep_bundle(sweep, below=credibility_panel(found))
            if "text/html" in bundle:
                bundle["text/html"] += credibility_html(found)
            return bundle
        except Exception:  # never break a display: show the results alone
            pass
    return charts.sweep_bundle(sweep)


def sweep_credibility(source: Any, **options: Any) -> go.Figure:
    """The panel of a sweep (``sweep.credibility(**options)``) or of a credibility.

    The view named "sweep_credibility".

    Parameters
    ----------
    source : SweepResult or CredibilityLike
        A sweep (its ``credibility`` is measured with ``options``), or a credibility.
    **options
        ``blocks``, ``reps``, ``seed``: passed to ``sweep.credibility``.
    """
    measure = getattr(source, "credibility", None)
    return credibility_panel(measure(**options) if callable(measure) else source)


def credibility_bundle(credibility: CredibilityLike) -> dict[str, Any]:
    """A credibility's rich display: the panel, and its numbers as HTML for other front ends."""
    bundle = charts.figure_bundle(credibility_panel(credibility))
    bundle.setdefault("text/html", credibility_html(credibility))
    return bundle


def _esc(value: Any) -> str:
    return html.escape(str(value))
