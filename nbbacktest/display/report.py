"""A sweep as one HTML file that opens from disk, offline: ``SweepResult.report(path)``.

The file holds everything it shows: plotly.js once, each figure as JSON drawn by
``Plotly.newPlot``, the results as JSON turned into a sortable table by a few
lines of inline script, and a Content-Security-Policy that lets the page load
nothing from anywhere. In order: the title and a one-line summary, the run card
(``sweep.card``, when the sweep has one), every row of the results, a chart of
the metric over the grid, the best run's equity and drawdown, the failures, and
the credibility panel (deflated Sharpe, PBO, SPA) of a complete sweep of 20 runs or more.

Every text is escaped with :func:`html.escape`; JSON inside a ``<script>`` has its
``<``, ``>`` and ``&`` written as ``\\u003c`` and the like, so no string can close
the script.

Examples
--------
>>> script_json({"note": "</script>"})
'{"note":"\\\\u003c/script\\\\u003e"}'
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from nbbacktest.display.charts import (
    sweep_distribution,
    sweep_heatmap,
    sweep_parallel_coordinates,
)
from nbbacktest.display.credibility import credibility_html as numbers_html
from nbbacktest.display.credibility import pbo_figure, shown_credibility
from nbbacktest.display.portfolio import run_figure
from nbbacktest.display.tables import (
    DEFAULT_STATS,
    MetricRange,
    format_column,
    format_params,
    format_value,
    metric_colors,
    plan_columns,
    rank_rows,
)
from nbbacktest.errors import NbbacktestError, ReportPathError
from nbbacktest.parallel.rows import row_params

if TYPE_CHECKING:
    from nbbacktest.parallel.sweep import SweepResult

__all__ = ["ReportPathError", "card_html", "credibility_html", "script_json", "write_report"]

#: Characters of an error message the results table shows (the failures list has all).
TABLE_ERROR_CHARACTERS = 300
#: Failed runs listed in the failures section; the results table has every one.
FAILURES_LISTED = 200
#: A card value longer than this (or of several lines) folds into a <details> block.
CARD_TEXT_CHARACTERS = 160
#: Significant digits of the numbers the table sorts by: more than any cell shows,
#: few enough that a 10,000-run report stays small.
SORT_DIGITS = 10
#: Nested dicts deeper than this in the card show as text.
CARD_DEPTH = 4

# Nothing may leave the page: scripts and styles are inline only; plotly's
# parallel coordinates (WebGL, regl) compile code at run time; images are data: or
# blob: (plotly's download-as-PNG button).
_POLICY = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; "
           "style-src 'unsafe-inline'; img-src data: blob:; font-src data:")
_PLOT_CONFIG = {"responsive": True, "displaylogo": False}

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1200px;padding:0 16px;color:#222}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd}
.summary{color:#444;margin:0}.note{color:#666;font-size:12px}
table{border-collapse:collapse;font-size:12px}
th,td{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:left;vertical-align:top}
.card th{background:#f4f6fa;white-space:nowrap}.card table th{background:#fafbfd}
.scroll{max-height:560px;overflow:auto;border:1px solid #ddd}
#results-table thead th{position:sticky;top:0;background:#e4ecf7;cursor:pointer;user-select:none;
white-space:nowrap}
#results-table thead th[aria-sort=ascending]::after{content:" \\25B2"}
#results-table thead th[aria-sort=descending]::after{content:" \\25BC"}
#results-table td.num{text-align:right;font-variant-numeric:tabular-nums}
#results-table tr.best td{font-weight:600;background:#fff7d6}
#results-table tr.best td.metric{outline:2px solid #d62728;outline-offset:-2px}
.error{color:#b00020}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
.figure{min-height:420px}
"""

# Builds the results table from its JSON and sorts it on a header click: numbers
# numerically, missing values last either way, ties in the order shown before.
_TABLE_SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById("results-data").textContent);
  const table = document.getElementById("results-table");
  const body = table.tBodies[0];
  const cols = data.columns;
  const n = data.rows.length;
  const special = {"inf": Infinity, "-inf": -Infinity};
  for (const c of cols) {
    if (c.values) c.values = c.values.map(v => (typeof v === "string" ? special[v] : v));
  }
  const esc = s => s.replace(/[&<>"']/g, ch => ({"&": "&amp;", "<": "&lt;", ">": "&gt;",
    '"': "&quot;", "'": "&#39;"})[ch]);
  const text = (c, i) => {
    const t = c.text ? c.text[i] : c.values[i];
    return t === null || t === undefined ? "" : String(t);
  };
  let order = Array.from({length: n}, (_, i) => i);
  function render() {
    const out = [];
    for (const i of order) {
      const best = data.rows[i] === data.best;
      out.push(best ? '<tr class="best" title="best run">' : "<tr>");
      for (const c of cols) {
        let cell = esc(text(c, i));
        if (c.name === "row" && best) cell = "\\u2605 " + cell;
        const fill = c.colors ? ' style="background:' + c.colors[i] + '"' : "";
        out.push('<td class="' + c.kind + (c.metric ? " metric" : "") + '"' + fill + ">" + cell + "</td>");
      }
      out.push("</tr>");
    }
    body.innerHTML = out.join("");
  }
  function key(c, i) {
    if (c.values) { const v = c.values[i]; return v === null || Number.isNaN(v) ? null : v; }
    const t = c.text[i]; return t === null || t === "" ? null : t;
  }
  function sortBy(k, descending) {
    const c = cols[k];
    const position = new Map(order.map((i, p) => [i, p]));
    order.sort((a, b) => {
      const x = key(c, a), y = key(c, b);
      if (x === null || y === null) {
        if (x === null && y === null) return position.get(a) - position.get(b);
        return x === null ? 1 : -1;
      }
      let d = c.values ? (x < y ? -1 : x > y ? 1 : 0)
                       : String(x).localeCompare(String(y), undefined, {numeric: true});
      if (descending) d = -d;
      return d || position.get(a) - position.get(b);
    });
    Array.from(table.tHead.rows[0].cells).forEach((th, j) => {
      if (j === k) th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      else th.removeAttribute("aria-sort");
    });
    render();
  }
  Array.from(table.tHead.rows[0].cells).forEach((th, k) => {
    th.addEventListener("click", () => {
      const now = th.getAttribute("aria-sort");
      sortBy(k, now ? now === "ascending" : cols[k].descending);
    });
  });
  render();
})();
"""

_FIGURES_SCRIPT = """
document.querySelectorAll('script[type="application/json"][data-figure]').forEach(s => {
  const fig = JSON.parse(s.textContent);
  Plotly.newPlot(document.getElementById(s.dataset.figure), fig.data, fig.layout, CONFIG);
});
"""


# ---------------------------------------------------------------------- the file
def write_report(sweep: SweepResult, path: str | os.PathLike[str]) -> Path:
    """Write ``sweep`` as one self-contained HTML file that opens offline in any browser.

    The file holds plotly.js (about 4.8 MB) once and asks for nothing over the
    network. It shows, in order: a title and summary (strategy, status, runs
    done, failed and cancelled, the metric and its best value), the run card
    (``sweep.card``, when set), every row of the results (sortable by clicking
    a header, the best row marked), the metric over the grid (a heatmap for two
    params, parallel coordinates for three or more, the metric against the param
    for one, else its distribution), the best run's equity and drawdown, and the
    failed runs with the first traceback. A sweep still running is reported as
    far as it got, its status "running".

    Parameters
    ----------
    sweep : SweepResult
        The sweep, finished or not.
    path : str or os.PathLike
        The HTML file to write (replaced if it exists); its folder must exist.

    Returns
    -------
    pathlib.Path
        ``path``, as a Path.

    Raises
    ------
    TypeError
        ``path`` is not a str or os.PathLike.
    ReportPathError
        ``path``'s folder does not exist, ``path`` is a folder, or it cannot be written.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from pathlib import Path
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
    ...                   grid={"fast": [5, 10], "slow": [20, 40]}, progress=False)
    >>> folder = tempfile.mkdtemp()
    >>> path = write_report(sweep, Path(folder) / "sweep.html")
    >>> path.name, path.read_text(encoding="utf-8").count("Plotly.newPlot(")
    ('sweep.html', 1)
    >>> shutil.rmtree(folder)
    """
    target = _target(path)
    page = report_html(sweep)
    temporary = None
    try:
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=target.parent, prefix=".report-",
                                         suffix=".html", delete=False) as out:
            temporary = Path(out.name)
            out.write(page)
        os.replace(temporary, target)
    except OSError as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        raise ReportPathError(f"could not write the report to {str(target)!r}: {error}") from error
    return target


def _target(path: Any) -> Path:
    """``path`` as a Path to a file in an existing folder, or the error that says why not."""
    raw = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(raw, str):
        raise TypeError(f"path must be a str or os.PathLike naming the HTML file to write, "
                        f"got {type(path).__name__}: {path!r}")
    target = Path(raw).expanduser()
    if target.is_dir():
        raise ReportPathError(f"path {raw!r} is a folder: name the file to write, "
                              f"e.g. {str(target / 'report.html')!r}")
    if not target.parent.is_dir():
        raise ReportPathError(f"cannot write the report to {raw!r}: the folder "
                              f"{str(target.parent)!r} does not exist (create it first)")
    return target


def report_html(sweep: SweepResult) -> str:
    """The report's whole HTML text (see :func:`write_report`)."""
    frame = sweep.results  # one snapshot: a running sweep's rows keep changing
    best = _best_row(sweep, frame)
    strategy = ", ".join(sorted({c.__name__ for c in sweep.plan.classes}))
    title = f"Sweep of {strategy}"
    card = getattr(sweep, "card", None)
    sections = [
        f"<header><h1>{_esc(title)}</h1><p class='summary' id='summary'>"
        f"{_esc(summary_line(sweep, frame, best))}</p></header>",
        "" if card is None else f"<section id='card'><h2>Run card</h2>{card_html(card)}</section>",
        _results_section(sweep, frame, best),
        _chart_section(sweep, frame),
        _best_section(sweep, frame, best),
        _failures_section(frame),
        credibility_html(sweep),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_POLICY}\">"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(s for s in sections if s)
        + f"\n<script>{get_plotlyjs()}</script>\n"
        + f"<script>const CONFIG = {script_json(_PLOT_CONFIG)};{_FIGURES_SCRIPT}{_TABLE_SCRIPT}</script>"
        + "\n</body></html>\n"
    )


def summary_line(sweep: SweepResult, frame: pd.DataFrame, best: int | None) -> str:
    """One line: strategy, status, runs done, failed and cancelled, the metric and its best.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"), grid={"fast": [5, 10]},
    ...                   metric="trades", progress=False)
    >>> print(summary_line(sweep, sweep.results, sweep.best_index).replace("; ", ";\\n"))
    SmaCross: complete;
    2 of 2 runs done, 0 failed, 0 cancelled;
    metric trades (higher is better), best 51 at row 0 (fast=5, slow=30)
    """
    counts = frame["status"].value_counts()
    done, failed, cancelled, pending = (int(counts.get(s, 0)) for s in ("done", "failed", "cancelled",
                                                                        "pending"))
    strategy = ", ".join(sorted({c.__name__ for c in sweep.plan.classes}))
    status = sweep.status + (f" ({sweep.reason})" if sweep.reason else "")
    runs = f"{done:,} of {len(frame):,} runs done, {failed:,} failed, {cancelled:,} cancelled"
    if pending:
        runs += f", {pending:,} not finished yet"
    order = "higher" if sweep.maximize else "lower"
    if best is None:
        found = "no best run yet" if pending else "no run has a value"
    else:
        value = format_value(frame.at[best, sweep.metric], sweep.metric)
        found = f"best {value} at row {best} ({format_params(row_params(sweep.plan, best))})"
    return f"{strategy}: {status}; {runs}; metric {sweep.metric} ({order} is better), {found}"


def _best_row(sweep: SweepResult, frame: pd.DataFrame) -> int | None:
    """The best row of the snapshot ``frame`` (the sweep's own best, when it is in it)."""
    best = sweep.best_index
    if best is not None and frame.at[best, "status"] == "done":
        return int(best)
    done = frame[frame["status"] == "done"]
    ranked = rank_rows(done, sweep.metric, descending=sweep.maximize, top=1)
    ranked = ranked[ranked[sweep.metric].notna()]
    return None if ranked.empty else int(ranked.index[0])


# ---------------------------------------------------------------------- the card
def card_html(card: Mapping[str, Any]) -> str:
    """A run card as a two-column table: each key, and its value readable.

    Nested dicts become nested tables, lists read as comma-separated values, and
    long or multi-line text (a strategy's source) folds into a ``<details>`` block.

    Examples
    --------
    >>> print(card_html({"seed": 0, "grid": {"fast": [5, 10]}}).replace("</tr>", "</tr>\\n"))
    <table class='card'><tr><th>seed</th><td>0</td></tr>
    <tr><th>grid</th><td><table><tr><th>fast</th><td>5, 10</td></tr>
    </table></td></tr>
    </table>
    """
    return _mapping_table(card, 0, "card")


def _mapping_table(mapping: Mapping[Any, Any], depth: int, css: str = "") -> str:
    rows = "".join(f"<tr><th>{_esc(key)}</th><td>{_card_value(key, value, depth + 1)}</td></tr>"
                   for key, value in mapping.items())
    attribute = f" class='{css}'" if css else ""
    return f"<table{attribute}>{rows}</table>"


def _card_value(key: Any, value: Any, depth: int) -> str:
    if isinstance(value, Mapping):
        if not value:
            return "<i>none</i>"
        if depth < CARD_DEPTH:
            return _mapping_table(value, depth)
        return _long_text(key, json.dumps(value, default=str, indent=1))
    if isinstance(value, (list, tuple, set, frozenset, range, np.ndarray, pd.Index)):
        items = list(value)
        if not items:
            return "<i>none</i>"
        if any(isinstance(item, Mapping) for item in items):
            return "".join(_card_value(key, item, depth) for item in items) or "<i>none</i>"
        value = ", ".join(map(_plain, items))
    text = _plain(value)
    if len(text) > CARD_TEXT_CHARACTERS or "\n" in text:
        return _long_text(key, text)
    return _esc(text)


def _plain(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, float):
        return repr(value)
    return str(value.item() if isinstance(value, np.generic) else value)


def _long_text(key: Any, text: str) -> str:
    lines = text.count("\n") + 1
    size = f"{lines:,} lines" if lines > 1 else f"{len(text):,} characters"
    return f"<details><summary>{_esc(key)} ({size})</summary><pre>{_esc(text)}</pre></details>"


# ---------------------------------------------------------------------- the results
def _results_section(sweep: SweepResult, frame: pd.DataFrame, best: int | None) -> str:
    metric, maximize = sweep.metric, sweep.maximize
    ranked = rank_rows(frame, metric, descending=maximize)
    params = plan_columns(frame)
    stats = [metric] + [s for s in DEFAULT_STATS if s != metric and s in frame.columns]
    columns: list[dict[str, Any]] = [_table_column("row", pd.Series(ranked.index, index=ranked.index),
                                                   descending=False)]
    columns += [_table_column(name, ranked[name], descending=False) for name in params]
    columns += [_table_column(name, ranked[name], descending=maximize if name == metric else True)
                for name in stats]
    errors = ranked["error"].map(lambda e: None if e is None or e != e else _clip(str(e)))
    columns += [_table_column("status", ranked["status"], descending=False),
                _table_column("error", errors, descending=False)]
    within = MetricRange.of(frame[metric])
    metric_column = columns[1 + len(params)]
    metric_column["metric"] = True
    metric_column["colors"] = metric_colors(ranked[metric], maximize, within=within)
    data = {"rows": ranked.index.tolist(), "best": best, "columns": columns}
    # The metric's header says the order the rows start in.
    head = "".join(f"<th title='sort by {_esc(c['name'])}'"
                   + (f" aria-sort='{'descending' if maximize else 'ascending'}'" if c.get("metric") else "")
                   + f">{_esc(c['name'])}</th>" for c in columns)
    caption = within.caption(metric, len(frame), maximize)
    return (
        f"<section id='results'><h2>Results: all {len(frame):,} runs</h2>"
        f"<p class='note'>Best first by {_esc(metric)}; click a header to sort by it (again to reverse). "
        f"&#9733; marks the best run. {_esc(caption)}.</p>"
        f"<div class='scroll'><table id='results-table'><thead><tr>{head}</tr></thead>"
        "<tbody></tbody></table></div>"
        f"<script type='application/json' id='results-data'>{script_json(data)}</script></section>"
    )


def _table_column(name: str, column: pd.Series, *, descending: bool) -> dict[str, Any]:
    """One column of the table's JSON: formatted ``text`` and, for numbers, ``values`` to sort by."""
    numeric = (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column))
    out: dict[str, Any] = {"name": name, "kind": "num" if numeric else "text", "descending": descending}
    if numeric:
        numbers = column.to_numpy(dtype=float)
        out["values"] = [_sort_number(v) for v in numbers.tolist()]
        integral = pd.api.types.is_integer_dtype(column) or name == "row"
        if not integral:  # an int column reads as its numbers: no text needed
            out["text"] = format_column(column, name)
    else:
        out["text"] = [None if v is None or (isinstance(v, float) and math.isnan(v))
                       else format_value(v, name) for v in column.tolist()]
    return out


def _sort_number(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == int(value) and abs(value) < 2**53:
        return int(value)
    return float(f"{value:.{SORT_DIGITS}g}")


def _clip(text: str) -> str:
    return text if len(text) <= TABLE_ERROR_CHARACTERS else text[: TABLE_ERROR_CHARACTERS - 1] + "…"


# ---------------------------------------------------------------------- the charts
def _chart_section(sweep: SweepResult, frame: pd.DataFrame) -> str:
    finished = frame[frame["status"].isin(("done", "failed"))]
    varying = [c for c in plan_columns(finished) if c != "symbol" and finished[c].nunique(dropna=False) > 1]
    try:
        if sweep.plan.is_mixed or not varying:
            heading, fig = f"Distribution of {sweep.metric}", sweep_distribution(sweep)
        elif len(varying) == 2:
            heading, fig = f"{sweep.metric} by {varying[0]} and {varying[1]}", sweep_heatmap(sweep, *varying)
        elif len(varying) >= 3:
            heading, fig = f"{sweep.metric} across the params", sweep_parallel_coordinates(sweep)
        else:
            heading = f"{sweep.metric} by {varying[0]}"
            fig = metric_by_param(finished, varying[0], metric=sweep.metric, maximize=sweep.maximize)
    except NbbacktestError as error:
        return (f"<section id='chart'><h2>Chart</h2><p class='note'>No chart: "
                f"{_esc(str(error))}</p></section>")
    return f"<section id='chart'><h2>{_esc(heading)}</h2>{_figure_html('figure-sweep', fig)}</section>"


def metric_by_param(frame: pd.DataFrame, param: str, *, metric: str, maximize: bool = True) -> go.Figure:
    """The metric of each finished run against the one param that varies, the best marked.

    Examples
    --------
    >>> frame = pd.DataFrame({"fast": [10, 5, 20], "sharpe": [0.4, 0.9, float("nan")]})
    >>> fig = metric_by_param(frame, "fast", metric="sharpe")
    >>> fig.data[0].x.tolist(), fig.data[0].y.tolist(), fig.data[1].x.tolist()
    ([5, 10, 20], [0.9, 0.4, nan], [5])
    """
    runs = frame.sort_values(param, kind="stable")
    values = pd.to_numeric(runs[metric], errors="coerce").astype(float)
    x = runs[param] if pd.api.types.is_numeric_dtype(runs[param]) else format_column(runs[param], param)
    one_per_value = runs[param].is_unique
    fig = go.Figure(go.Scatter(x=x, y=values.to_numpy(), name=metric,
                               mode="lines+markers" if one_per_value else "markers",
                               hovertemplate=f"{param}=%{{x}}<br>{metric}=%{{y:.4g}}<extra></extra>"))
    ranked = rank_rows(runs.assign(_metric=values), "_metric", descending=maximize, top=1)
    if len(ranked) and ranked["_metric"].notna().all():
        fig.add_trace(go.Scatter(x=ranked[param], y=ranked["_metric"].to_numpy(), name="best",
                                 mode="markers", marker=dict(color="#d62728", size=12, symbol="star")))
    fig.update_layout(title=f"{metric} by {param}", height=420, margin=dict(l=10, r=10, t=60, b=10),
                      xaxis_title=param, yaxis_title=metric, showlegend=False)
    return fig


def _best_section(sweep: SweepResult, frame: pd.DataFrame, best: int | None) -> str:
    heading = "<h2>Best run: equity and drawdown</h2>"
    if best is None:
        why = ("no run has finished with a value yet" if (frame["status"] == "pending").any()
               else f"no run finished with a {sweep.metric}")
        return f"<section id='best'>{heading}<p class='note'>No best run to show: {_esc(why)}.</p></section>"
    label = (f"row {best}: {format_params(row_params(sweep.plan, best))} "
             f"({sweep.metric} {format_value(frame.at[best, sweep.metric], sweep.metric)})")
    try:
        fig = run_figure(sweep.detail(best), title=label)
    except Exception as error:  # the strategy raised when re-run here
        return (f"<section id='best'>{heading}<p class='error'>Re-running {_esc(label)} raised "
                f"{_esc(type(error).__name__)}: {_esc(str(error))}</p></section>")
    return f"<section id='best'>{heading}{_figure_html('figure-best', fig)}</section>"


def _failures_section(frame: pd.DataFrame) -> str:
    failed = frame[frame["status"] == "failed"]
    if failed.empty:
        return ""
    params = plan_columns(frame)
    shown = failed.iloc[:FAILURES_LISTED]
    head = "".join(f"<th>{_esc(c)}</th>" for c in ["row", *params, "error"])
    body = "".join(
        f"<tr><td>{row}</td>"
        + "".join(f"<td>{_esc(format_value(failed.at[row, c], c))}</td>" for c in params)
        + f"<td class='error'>{_esc(failed.at[row, 'error'])}</td></tr>"
        for row in shown.index.tolist())
    more = (f"<p class='note'>and {len(failed) - len(shown):,} more: the results table lists every one"
            " (sort by status).</p>" if len(failed) > len(shown) else "")
    first = int(failed.index[0])
    trace = failed.at[first, "traceback"] or failed.at[first, "error"]
    return (
        f"<section id='failures'><h2>Failures: {len(failed):,} runs</h2>"
        f"<table class='failures'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"
        f"<details><summary>Traceback of row {first}</summary><pre>{_esc(trace)}</pre></details>"
        "</section>"
    )


def credibility_html(sweep: SweepResult) -> str:
    """The credibility section (deflated Sharpe, PBO, SPA, flags), after the failures, or "".

    Shown when :func:`~nbbacktest.display.credibility.shown_credibility` has one (a
    complete sweep of 20 runs or more): its numbers, flags and notes, then PBO's charts.

    Examples
    --------
    >>> credibility_html(None)
    ''
    """
    found = shown_credibility(sweep)
    if found is None:
        return ""
    pbo = found.pbo
    charts = "" if pbo is None else _figure_html("figure-credibility", pbo_figure(pbo, found.metric))
    return f"<section id='credibility'><h2>Is the best run real?</h2>{numbers_html(found)}{charts}</section>"


# ---------------------------------------------------------------------- helpers
def _figure_html(target: str, fig: go.Figure) -> str:
    return (f"<div class='figure' id='{target}'></div>"
            f"<script type='application/json' data-figure='{target}'>{_safe(fig.to_json())}</script>")


def script_json(value: Any) -> str:
    """``value`` as compact JSON that is safe inside a ``<script>`` element.

    ``<``, ``>``, ``&`` and the two JavaScript line separators are escaped (JSON
    reads them back the same), so a string holding ``</script>`` cannot end the
    script. NaN and infinities are refused: the caller writes them as it means them.
    """
    return _safe(json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False))


def _safe(text: str) -> str:
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _esc(value: Any) -> str:
    return html.escape(str(value))
