"""The sweep widget's results: tabs of the sweep's views, and the chart and trades of a chosen row.

A :class:`SweepResults` panel is built once, empty and hidden; :meth:`SweepResults.show`
fills it when a sweep ends (from the sweep's runner thread, by setting traits
only). Each tab is drawn when it is first shown; choosing a row draws that run's
equity, drawdown and trades.
"""

from __future__ import annotations

import html
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from nbbacktest.display.parts import ERROR_STYLE, error_text, show_figure, trades_html
from nbbacktest.display.portfolio import run_figure
from nbbacktest.display.tables import format_params, format_value, plan_columns, rank_rows
from nbbacktest.engine.portfolio_result import PortfolioResult
from nbbacktest.engine.result import Result
from nbbacktest.errors import NbbacktestError, SweepError
from nbbacktest.parallel.rows import row_params
from nbbacktest.parallel.sweep import SweepResult

__all__ = ["TABS", "SweepResults"]

#: The result tabs, in order.
TABS = ("table", "heatmap", "parallel coordinates", "distribution")


class SweepResults(widgets.VBox):
    """A finished sweep's tabs (table, heatmap, parallel coordinates, distribution) and rows.

    Parameters
    ----------
    top : int
        Rows of the table tab and of the row chooser.
    say : callable
        ``say(text, error=False)`` shows a note (a file saved, a save that failed).
    csv_name : str
        The CSV box's starting file name.

    Attributes
    ----------
    tabs : ipywidgets.Tab
        The tabs; ``heatmap_x`` and ``heatmap_y`` choose the heatmap's params.
    rows : ipywidgets.Dropdown
        The best rows; choosing one shows its chart (``detail_output``) and trades.
    figures : dict of str to plotly Figure
        The figures shown: "table", "heatmap", ..., "detail".
    detail_result : Result or None
        The backtest of the chosen row.
    """

    def __init__(self, top: int, say: Callable[..., None], csv_name: str) -> None:
        self.top = top
        self._say = say
        self.table_output = widgets.Output()
        self.heatmap_x = widgets.Dropdown(description="x")
        self.heatmap_y = widgets.Dropdown(description="y")
        self.heatmap_output = widgets.Output()
        self.parallel_output = widgets.Output()
        self.distribution_output = widgets.Output()
        self.tab_notes = {name: widgets.HTML() for name in TABS}
        pages = [
            widgets.VBox([self.tab_notes["table"], self.table_output]),
            widgets.VBox([widgets.HBox([self.heatmap_x, self.heatmap_y]), self.tab_notes["heatmap"],
                          self.heatmap_output]),
            widgets.VBox([self.tab_notes["parallel coordinates"], self.parallel_output]),
            widgets.VBox([self.tab_notes["distribution"], self.distribution_output]),
        ]
        self.tabs = widgets.Tab(children=pages, titles=TABS)
        self.rows = widgets.Dropdown(description="row", layout=widgets.Layout(width="520px"))
        self.csv_path = widgets.Text(value=csv_name, description="CSV", layout=widgets.Layout(width="300px"))
        self.save_button = widgets.Button(description="Save CSV", icon="download", disabled=True)
        self.detail_note = widgets.HTML()
        self.detail_output = widgets.Output()
        self.trades = widgets.HTML()
        super().__init__(
            [self.tabs, widgets.HBox([self.rows, self.csv_path, self.save_button]),
             self.detail_note, self.detail_output, self.trades],
            layout=widgets.Layout(display="none"),
        )
        #: The run shown (the last one started), and the one whose results are filled in.
        self.result: SweepResult | None = None
        self._ended: SweepResult | None = None
        self.detail_result: Result | PortfolioResult | None = None
        self.figures: dict[str, go.Figure] = {}
        self._varying: list[str] = []
        self._filling = False
        self._drawn: set[str] = set()
        self._lock = threading.RLock()
        self.tabs.observe(lambda change: self._draw_tab(TABS[change["new"]]), names="selected_index")
        for box in (self.heatmap_x, self.heatmap_y):
            box.observe(lambda _change: self._redraw("heatmap"), names="value")
        self.rows.observe(self._row_chosen, names="value")

    def start(self, result: SweepResult) -> None:
        """A new run began: hide and forget the last one's results."""
        with self._lock:
            self.result = result
            self._drawn.clear()
            self.figures.clear()
            self.layout.display = "none"

    def show(self, result: SweepResult) -> None:
        """Fill the tabs and the rows from the ended ``result`` and show them."""
        with self._lock:
            self.result = self._ended = result
            frame = result.results
            varying = [c for c in plan_columns(frame) if frame[c].nunique(dropna=False) > 1]
            self._varying = varying
            self._filling = True  # the heatmap is drawn once, below, not per option set
            try:
                if len(varying) >= 2:
                    self.heatmap_x.options, self.heatmap_y.options = varying, varying
                    self.heatmap_x.value, self.heatmap_y.value = varying[0], varying[1]
                else:
                    self.heatmap_x.options, self.heatmap_y.options = [], []
            finally:
                self._filling = False
            self._drawn.clear()
            self._draw_tab(TABS[self.tabs.selected_index or 0])
            ranked = rank_rows(frame[frame["status"] == "done"], result.metric,
                               descending=result.maximize, top=self.top)
            options = [(self._row_label(result, int(row)), int(row)) for row in ranked.index]
            # Emptied first, so that choosing the best row below always shows it afresh.
            self.rows.options = []
            self.rows.options = options
            if options:
                self.rows.value = options[0][1]
            self.layout.display = ""

    def _row_label(self, result: SweepResult, row: int) -> str:
        value = result.results.at[row, result.metric]
        return (f"{row}: {format_params(row_params(result.plan, row))} · "
                f"{result.metric} {format_value(value, result.metric)}")

    # ------------------------------------------------------------ tabs
    def _redraw(self, tab: str) -> None:
        if self._filling:
            return
        self._drawn.discard(tab)
        if self.tabs.selected_index is not None and TABS[self.tabs.selected_index] == tab:
            self._draw_tab(tab)

    def _draw_tab(self, tab: str) -> None:
        """Draw a result tab once per run, when it is first shown."""
        with self._lock:
            result = self.result
            if result is None or self._ended is not result or tab in self._drawn:
                return
            self._drawn.add(tab)
            output = {"table": self.table_output, "heatmap": self.heatmap_output,
                      "parallel coordinates": self.parallel_output,
                      "distribution": self.distribution_output}[tab]
            note = self.tab_notes[tab]
            try:
                fig = self._tab_figure(result, tab)
            except NbbacktestError as error:
                self.figures.pop(tab, None)
                note.value = f"<i>{html.escape(str(error))}</i>"
                show_figure(output, None)
                return
            note.value = ""
            self.figures[tab] = fig
            show_figure(output, fig)

    def _tab_figure(self, result: SweepResult, tab: str) -> go.Figure:
        if tab == "table":
            return result.table(top=self.top)
        if tab == "heatmap":
            varying = self._varying
            if len(varying) < 2:
                named = f" ({', '.join(varying)})" if varying else ""
                raise SweepError(f"the heatmap needs two params that vary; this sweep varies "
                                 f"{len(varying)}{named}: see the distribution")
            return result.heatmap(self.heatmap_x.value, self.heatmap_y.value)
        if tab == "parallel coordinates":
            return result.parallel_coordinates()
        return result.distribution()

    def show_tab(self, tab: str) -> go.Figure | None:
        """Select the result tab ``tab`` (one of :data:`TABS`) and return its figure."""
        if tab not in TABS:
            raise ValueError(f"tab must be one of {', '.join(map(repr, TABS))}, got {tab!r}")
        self.tabs.selected_index = TABS.index(tab)
        self._draw_tab(tab)
        return self.figures.get(tab)

    # ------------------------------------------------------------ rows
    def select(self, row: int) -> Result | PortfolioResult | None:
        """Show row ``row``'s equity, drawdown and trades (as choosing it in ``rows`` does)."""
        result = self.result
        if result is None:
            raise SweepError("select(row) needs a finished run: click Run first")
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)) or not 0 <= row < len(result):
            raise IndexError(f"row must be a row number from 0 to {len(result) - 1}, got {row!r}")
        row = int(row)
        if row not in [value for _, value in self.rows.options]:
            self.rows.options = [*self.rows.options, (self._row_label(result, row), row)]
        if self.rows.value == row:
            self._show_row(row)
        else:
            self.rows.value = row
        return self.detail_result

    def _row_chosen(self, change: Any) -> None:
        if change["new"] is not None:
            self._show_row(change["new"])

    def _show_row(self, row: int) -> None:
        with self._lock:
            result = self.result
            if result is None:
                return
            label = f"row {row}: {format_params(row_params(result.plan, row))}"
            try:
                detail = result.detail(row)
            except Exception as error:  # a strategy that raises for this row
                self.detail_result = None
                self.figures.pop("detail", None)
                self.detail_note.value = (f"<span style='{ERROR_STYLE}'>{html.escape(label)}: "
                                          f"{html.escape(error_text(error))}</span>")
                show_figure(self.detail_output, None)
                self.trades.value = ""
                return
            self.detail_result = detail
            fig = run_figure(detail, title=label)
            self.figures["detail"] = fig
            self.detail_note.value = ""
            show_figure(self.detail_output, fig)
            self.trades.value = trades_html(detail.trades)

    # ------------------------------------------------------------ export
    def save_csv(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Save the last run's rows (every column of ``results``) as CSV; returns the path.

        ``path`` defaults to the CSV box. Problems are said (``say``) and return None.
        """
        result = self.result
        target = Path(os.path.expanduser(str(path if path is not None else self.csv_path.value)))
        if result is None:
            self._say("Nothing to save yet: click Run first", error=True)
            return None
        try:
            result.results.to_csv(target, index_label="row")
        except OSError as error:
            self._say(f"Could not save {target}: {error}", error=True)
            return None
        self._say(f"Saved {len(result):,} rows to {target.resolve()}")
        return target
