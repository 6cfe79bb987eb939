"""The sweep widget: set up a parameter sweep from controls, run it, and explore its rows.

:class:`SweepWidget` builds one control per strategy Param (an int range slider
and a step, a float range slider and a step, both/True/False for a bool, a
multiple selection for choices, a comma-separated list for free text), a
``where`` box checked as you type, the metric, maximize or minimize, and the
engines. Under them: how many runs the controls make and how long they should
take, Run and Cancel, the :class:`~nbbacktest.display.widget.ProgressWidget`
with its live table, and, once the sweep ends, tabs (table, heatmap, parallel
coordinates, distribution) and the chart and trades of a chosen row.

The widget holds no sweep or chart logic: its controls
(:mod:`nbbacktest.display.controls`) turn into a grid through the grid-range
grammar the magics use (:mod:`nbbacktest.parallel.ranges`), the grid is checked
by :func:`~nbbacktest.parallel.grid.plan_sweep` and
:func:`~nbbacktest.parallel.grid.compile_where`, Run calls
:func:`~nbbacktest.parallel.sweep.sweep` with ``block=False`` (the kernel stays
responsive), and the results panel (:mod:`nbbacktest.display.sweep_results`)
shows the sweep's own views.

Threads: a sweep ends on its runner thread, which then fills the tabs and the
chosen row's chart by setting traits only. Figures go into ``Output`` widgets
created once, through their ``outputs`` trait, so nothing is built or captured
from that thread.
"""

from __future__ import annotations

import html
import math
import os
import statistics
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from nbbacktest.display.controls import (
    ParamControl,
    SliderRange,
    param_control,
    slider_range,
    starting_values,
)
from nbbacktest.display.parts import (
    NEEDS_JUPYTER,
    describe_estimate,
    error_html,
    error_text,
    show_figure,
    trades_html,
)
from nbbacktest.display.progress import in_kernel
from nbbacktest.display.sweep_results import TABS, SweepResults
from nbbacktest.display.tables import values_code
from nbbacktest.display.widget import ProgressWidget
from nbbacktest.engine.backtest import Settings, backtest
from nbbacktest.engine.data import validate_data
from nbbacktest.engine.metrics import ALL_STAT_LABELS, NUMERIC_STATS
from nbbacktest.engine.portfolio import is_portfolio
from nbbacktest.engine.portfolio_result import PortfolioResult
from nbbacktest.engine.result import Result
from nbbacktest.engine.strategy import Strategy, resolve_strategy
from nbbacktest.engine.universe import Universe
from nbbacktest.errors import NbbacktestError, SweepError
from nbbacktest.parallel.cluster import Cluster, resolve_engine_count
from nbbacktest.parallel.events import Finished, SweepEvent
from nbbacktest.parallel.grid import MAX_RUNS, compile_where, plan_sweep
from nbbacktest.parallel.launch import portfolio_universe, sweep, universe_symbols
from nbbacktest.parallel.progress import ProgressState
from nbbacktest.parallel.ranges import MAX_RANGE_VALUES, range_of, range_values
from nbbacktest.parallel.rows import StatSchema
from nbbacktest.parallel.schedule import measure_point_cost
from nbbacktest.parallel.spec import check_metric, check_min_trades
from nbbacktest.parallel.sweep import SweepResult

__all__ = [
    "MAX_RUNS",
    "MAX_VALUES",
    "ParamControl",
    "SliderRange",
    "SweepWidget",
    "TABS",
    "describe_estimate",
    "error_text",
    "param_control",
    "range_of",
    "range_values",
    "show_figure",
    "slider_range",
    "trades_html",
]

#: Most values one control may give: the grid-range grammar's one cap.
MAX_VALUES = MAX_RANGE_VALUES
#: Grids up to this size are planned in full as you type (with ``where`` applied);
#: a larger one is counted before ``where``, whose expression is still checked.
PREVIEW_LIMIT = 50_000
#: Seconds the first estimate of a run's cost may spend repeating the run.
COST_BUDGET = 0.2
#: Seconds a sweep on engines costs beyond its runs: once (the job shipped, the first
#: and last chunks), and per run (its row sent back, its events). On the daily sample,
#: 2 engines: 179 runs of 0.65 ms took 0.19-0.28 s, 600 took 0.65-0.79 s.
SWEEP_OVERHEAD, RUN_OVERHEAD = 0.05, 0.0015


# ---------------------------------------------------------------------- the widget
class SweepWidget(widgets.VBox):
    """A parameter sweep set up from controls, run, watched and explored, in a notebook.

    Parameters
    ----------
    strategy : Strategy subclass or instance
        What to sweep. An instance's values (or, when ``grid`` is given, the
        defaults) are where the params outside ``grid`` start; with a class and
        no grid, every param starts at its whole range.
    data : DataFrame or {symbol: DataFrame}
        As for :func:`nbbacktest.sweep`: a universe runs every point on every symbol.
    grid : dict, optional
        Starting values of some params, ``{name: values}``.
    where : str, optional
        Starting ``where`` expression (``"fast < slow"``).
    metric, maximize
        Starting metric and direction.
    engines : int, -1 or "auto", optional
        Starting engine count (default: the cluster's engines, else 1, which runs
        in this process).
    cluster : Cluster, optional
        Run on this cluster (default: the current one, started when needed).
    symbols : list of str, optional
        The symbols of a universe to run on.
    seed : int
        The sweep's seed.
    top : int
        Rows of the live table and of the row chooser.
    cash, commission, slippage, fill, fractional, leverage, close_at_end
        Simulation settings, as for :func:`nbbacktest.backtest`.

    Attributes
    ----------
    controls : dict of str to ParamControl
        One per param; ``controls["fast"].slider``, ``.step``, ...
    where_box, metric_box, maximize_box, engines_box : ipywidgets
        The sweep's options.
    run_button, cancel_button, save_button : ipywidgets.Button
    estimate, message : ipywidgets.HTML
        Runs and expected time; what is wrong with the controls, or how the last
        run went.
    progress : ProgressWidget or None
        The progress of the last run.
    tabs : ipywidgets.Tab
        table, heatmap (``heatmap_x``, ``heatmap_y``), parallel coordinates, distribution.
    rows : ipywidgets.Dropdown
        The best rows; choosing one shows its chart (``detail_output``) and trades.
    result : SweepResult or None
        The last run: ``widget.result.result(timeout=...)`` waits for it.
    figures : dict of str to plotly Figure
        The figures shown: "table", "heatmap", ..., "detail".

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> widget = SweepWidget(SmaCross, nbb.load_sample("daily"), grid={"fast": [5, 10], "slow": [20, 40]})
    >>> widget.grid()
    {'fast': [5, 10], 'slow': [20, 40]}
    >>> widget.run_button.click()
    >>> widget.result.result(timeout=60)["fast"].tolist()
    [5, 5, 10, 10]
    """

    def __init__(
        self,
        strategy: type[Strategy] | Strategy,
        data: pd.DataFrame | Mapping[str, pd.DataFrame],
        *,
        grid: Mapping[str, Any] | None = None,
        where: str | None = None,
        metric: str = "sharpe",
        maximize: bool = True,
        engines: int | str | None = None,
        cluster: Cluster | None = None,
        symbols: Sequence[str] | None = None,
        seed: int = 0,
        top: int = 20,
        min_trades: int = 0,
        **settings: Any,
    ) -> None:
        self.strategy_class, instance = resolve_strategy(strategy, "SweepWidget's strategy")
        #: What was passed: a class sweeps from its defaults (or its whole ranges).
        self.strategy: type[Strategy] | Strategy = strategy if isinstance(strategy, type) else instance
        self._instance = instance
        portfolio = is_portfolio(self.strategy)  # then each point runs over the whole universe
        self.data: Any = portfolio_universe(data, symbols) if portfolio else validate_data(data, name="data")
        self.symbols = None if portfolio else universe_symbols(self.data, symbols)
        self.settings = Settings.from_options(settings, "SweepWidget")
        self.seed = seed
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise SweepError(f"top must be a positive int, got {top!r}")
        self.top = top
        if cluster is not None and not isinstance(cluster, Cluster):
            raise TypeError(f"cluster must be an nbbacktest.Cluster, got {type(cluster).__name__}")
        self.cluster = cluster
        check_metric(metric, maximize, StatSchema.portfolio() if portfolio else None)
        check_min_trades(min_trades)
        if where is not None and not isinstance(where, str):
            raise TypeError(f"where must be a str expression ('fast < slow'), got {type(where).__name__}")
        params = self.strategy_class.params()
        starting = starting_values(self.strategy, params, grid)

        self.controls = {name: param_control(name, param, starting.get(name))
                         for name, param in params.items()}
        self.where_box = widgets.Text(value=where or "", description="where",
                                      placeholder="e.g. fast < slow",
                                      layout=widgets.Layout(width="360px"))
        metrics = StatSchema.portfolio().numeric if portfolio else NUMERIC_STATS  # IC, turnover, legs
        self.metric_box = widgets.Dropdown(options=[(ALL_STAT_LABELS[n], n) for n in metrics],
                                           value=metric, description="metric")
        self.maximize_box = widgets.ToggleButtons(options=[("maximize", True), ("minimize", False)],
                                                  value=bool(maximize),
                                                  style={"button_width": "92px"})
        self.min_trades_box = widgets.BoundedIntText(
            value=min_trades, min=0, max=1_000_000, description="min trades",
            tooltip="runs with fewer trades stay in the table but are never the best",
            layout=widgets.Layout(width="160px"))
        count, most = self._engine_choice(engines)
        self.engines_box = widgets.BoundedIntText(
            value=count, min=1, max=most, description="engines",
            tooltip="1 runs in this process; more run on the cluster's engines",
            layout=widgets.Layout(width="160px"),
        )
        self.run_button = widgets.Button(description="Run", icon="play", button_style="primary")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                            disabled=True)
        self.estimate = widgets.HTML()
        self.message = widgets.HTML()
        self.progress_area = widgets.VBox()
        self.progress: ProgressWidget | None = None

        # What a finished run shows: built here, filled later by setting traits.
        self.results_area = SweepResults(top, self._say, f"{self.strategy_class.__name__}_sweep.csv")
        panel = self.results_area
        self.tabs, self.tab_notes, self.rows = panel.tabs, panel.tab_notes, panel.rows
        self.heatmap_x, self.heatmap_y = panel.heatmap_x, panel.heatmap_y
        self.table_output, self.heatmap_output = panel.table_output, panel.heatmap_output
        self.parallel_output, self.distribution_output = panel.parallel_output, panel.distribution_output
        self.csv_path, self.save_button = panel.csv_path, panel.save_button
        self.detail_note, self.detail_output = panel.detail_note, panel.detail_output
        self.trades = panel.trades
        self.figures: dict[str, go.Figure] = panel.figures

        self.result: SweepResult | None = None
        self._ended: SweepResult | None = None
        self.runs = 0  # how many runs the controls make now (0 while they are invalid)
        self._grid: dict[str, list[Any]] | None = None
        self._errors: list[str] = []
        self._note = ""
        self._lock = threading.RLock()
        self._point_seconds, self._cost_note = self._first_cost()

        options = widgets.HBox([self.where_box, self.metric_box, self.maximize_box, self.min_trades_box,
                                self.engines_box])
        actions = widgets.HBox([self.run_button, self.cancel_button, self.estimate])
        super().__init__(children=[
            widgets.HTML(f"<b>Sweep {html.escape(self.strategy_class.__name__)}</b>"),
            widgets.VBox([c.widget for c in self.controls.values()]),
            options, actions, self.message, self.progress_area, self.results_area,
        ])

        for control in self.controls.values():
            control.observe(self._changed)
        for box in (self.where_box, self.engines_box):
            box.observe(self._changed, names="value")
        self.run_button.on_click(lambda _button: self.run())
        self.cancel_button.on_click(lambda _button: self.cancel())
        self.save_button.on_click(lambda _button: self.save_csv())
        self.refresh()

    @property
    def detail_result(self) -> Result | PortfolioResult | None:
        """The backtest of the chosen row (see :meth:`select`)."""
        return self.results_area.detail_result

    # ------------------------------------------------------------ set-up
    def _engine_choice(self, engines: Any) -> tuple[int, int]:
        """(starting engine count, most engines the box allows)."""
        if self.cluster is not None:
            size = max(len(self.cluster.ids), 1)
            wanted = size if engines in (None, -1, "auto") else resolve_engine_count(engines)
            if wanted > size:
                raise SweepError(f"engines={engines!r} but the cluster has {size} engine(s)")
            return wanted, size
        current = Cluster.current()
        running = len(current.ids) if current is not None else 0
        if engines is None:
            wanted = running or 1
        else:
            wanted = resolve_engine_count(engines)
        return wanted, max(os.cpu_count() or 1, running, wanted)

    def _first_cost(self) -> tuple[float, str]:
        data = self.data
        frame = data if isinstance(data, (pd.DataFrame, Universe)) else data[(self.symbols or list(data))[0]]
        instance, options = self._instance, asdict(self.settings)
        try:
            return measure_point_cost(lambda: backtest(instance, frame, **options), COST_BUDGET)[1], ""
        except Exception as error:  # the sweep reports a failing strategy row by row
            return math.nan, f"{instance!r} raised {type(error).__name__}: {error}"

    # ------------------------------------------------------------ controls -> grid
    def grid(self) -> dict[str, list[Any]]:
        """The grid the controls make, ``{name: values}``; SweepError when a control makes none."""
        return {name: control.values() for name, control in self.controls.items()}

    def where(self) -> str | None:
        """The ``where`` expression, or None when the box is empty."""
        return self.where_box.value.strip() or None

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`nbbacktest.sweep` that the controls and options make."""
        options: dict[str, Any] = dict(
            where=self.where(), metric=self.metric_box.value, maximize=self.maximize_box.value,
            seed=self.seed, symbols=self.symbols, min_trades=self.min_trades_box.value,
            **asdict(self.settings),
        )
        engines = self.engines_box.value
        if self.cluster is not None:
            options.update(cluster=self.cluster, engines=engines)
        elif engines > 1:
            options["engines"] = engines
        return options

    def _changed(self, _change: Any = None) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Check the controls: show the runs and time they make, or what is wrong (Run waits for a fix)."""
        with self._lock:
            errors: list[str] = []
            grid: dict[str, list[Any]] = {}
            for name, control in self.controls.items():
                try:
                    grid[name] = control.values()
                except (NbbacktestError, ValueError, TypeError) as error:
                    errors.append(str(error))
            runs, approximate = 0, False
            where = self.where()
            if where is not None:
                try:
                    compile_where(where, self.controls)  # as you type, whatever the grid
                except (NbbacktestError, ValueError, TypeError) as error:
                    errors.append(str(error))
            if not errors:
                try:
                    runs, approximate = self._count(grid, where)
                except (NbbacktestError, ValueError, TypeError) as error:
                    errors.append(str(error))
            self._errors = errors
            self._grid = None if errors else grid
            self.runs = runs
            if errors:
                self.message.value = "<br>".join(error_html(e) for e in errors)
                self.estimate.value = ""
            else:
                self.message.value = self._note
                self.estimate.value = html.escape(self.estimate_text(runs, approximate))
            self._update_buttons()

    def _say(self, text: str, error: bool = False) -> None:
        """Show a note (how a run went, a file saved) under the controls, unless they are invalid."""
        self._note = error_html(text) if error else html.escape(text)
        if not self._errors:
            self.message.value = self._note

    def _count(self, grid: dict[str, list[Any]], where: str | None) -> tuple[int, bool]:
        """(runs, approximate): the planned runs, or the grid's size when too big to plan as you type."""
        symbols = len(self.symbols) if self.symbols else 1
        size = math.prod(len(v) for v in grid.values()) * symbols
        if size > MAX_RUNS:
            raise SweepError(f"the controls make {size:,} runs; at most {MAX_RUNS:,}: "
                             "narrow a range or raise a step")
        if size > PREVIEW_LIMIT:
            return size, where is not None
        plan = plan_sweep(self.strategy, grid, where=where, seed=self.seed, symbols=self.symbols)
        return len(plan), False

    def estimate_text(self, runs: int | None = None, approximate: bool = False) -> str:
        """``'132 runs, about 4 s on 2 engines'`` for the controls as they are."""
        runs = self.runs if runs is None else runs
        engines = self.engines_box.value
        in_process = self.cluster is None and engines <= 1
        symbols = len(self.symbols) if self.symbols else 0
        cost = self._point_seconds
        if not in_process and runs:  # plus what the sweep costs beyond its runs
            cost += RUN_OVERHEAD + SWEEP_OVERHEAD * max(engines, 1) / runs
        text = describe_estimate(runs, cost, 0 if in_process else engines,
                                 points=runs // symbols if symbols else None, symbols=symbols,
                                 approximate=approximate)
        if not in_process and self.cluster is None and Cluster.current() is None:
            text += ", once a local cluster has started (a few seconds)"
        if self._cost_note:
            text += f" ({self._cost_note})"
        return text

    def _update_buttons(self) -> None:
        running = self.running
        self.run_button.disabled = running or bool(self._errors)
        self.cancel_button.disabled = not running
        self.save_button.disabled = self.result is None or running

    @property
    def running(self) -> bool:
        """True while the last run goes on."""
        return self.result is not None and self._ended is not self.result

    # ------------------------------------------------------------ run
    def run(self) -> SweepResult | None:
        """What Run does: start the sweep (``block=False``) and show its progress.

        Returns the new SweepResult, or None when the controls are invalid or the
        sweep could not start (the message says why).
        """
        with self._lock:
            if self.running:
                return None
            self.refresh()
            if self._errors or self._grid is None:
                return None
            grid = self._grid
            options = self.options()
            starts_cluster = "engines" in options and "cluster" not in options and Cluster.current() is None
            if starts_cluster:  # shown at once; starting one takes a few seconds
                self._say(f"Starting a local cluster of {options['engines']} engines…")
            launched = threading.Event()
            started: list[SweepResult] = []

            def on_event(event: SweepEvent) -> None:
                # Subscribed before the sweep starts, so its end is never missed; handled
                # before the sweep's Future completes, so result() returns a filled widget.
                if isinstance(event, Finished):
                    launched.wait(timeout=60)  # a short sweep may end before sweep() returns
                    if started:
                        self._finished(started[0], event)

            try:
                result = sweep(self.strategy, self.data, grid, progress=False, block=False,
                               on_result=on_event, **options)
            except Exception as error:  # shown in the widget, never as a traceback
                self._say(error_text(error), error=True)
                return None
            started.append(result)
            self._say("")
            try:
                self.result = result
                self.results_area.start(result)
                if self.progress is not None:
                    self.progress.close()
                self.progress = ProgressWidget(result, top=min(self.top, 10))
                # The widget's own Cancel, next to Run, does the same: show one.
                self.progress.cancel_button.layout.display = "none"
                self.progress_area.children = (self.progress,)
                self._update_buttons()
            finally:
                launched.set()
        return result

    def cancel(self) -> bool:
        """What Cancel does: stop the running sweep, keeping its finished rows."""
        result = self.result
        if result is None or not result.cancel():
            return False
        self.cancel_button.disabled = True
        self._say("Cancelling…")
        return True

    def _finished(self, result: SweepResult, event: Finished) -> None:
        """The sweep ended (on its runner thread): fill the results, setting traits only."""
        with self._lock:
            if result is not self.result:
                return
            self._ended = result
            try:
                progress = self.progress
                if progress is not None:
                    # It may have subscribed too late to get this event (a sweep of one
                    # point); taking it twice is harmless.
                    progress.tracker.update(event)
                    progress.draw()
                tracker = progress.tracker if progress is not None else None
                self._learn_cost(result, tracker)
                self._say(*self._outcome(result, tracker))
                self.refresh()
                self.results_area.show(result)
            except Exception as error:  # never leave the widget looking busy
                self._say(f"the results could not be shown: {error_text(error)}", error=True)
            finally:
                self._update_buttons()

    def _learn_cost(self, result: SweepResult, tracker: ProgressState | None) -> None:
        """The next estimate's cost of a run: this sweep's time from its first work on, less
        the overheads that :meth:`estimate_text` adds (at least a run's median seconds)."""
        seconds = result.results.loc[result.results["status"] == "done", "seconds"]
        if not len(seconds):
            return
        cost = float(statistics.median(seconds))
        if tracker is not None and tracker.ended is not None and result.status == "complete":
            ran, working = max(tracker.done - tracker.restored, 1), tracker.ended - tracker.started
            if result.engines:
                working = (working - SWEEP_OVERHEAD) * result.engines - RUN_OVERHEAD * ran
            cost = max(cost, working / ran)
        self._point_seconds, self._cost_note = cost, ""

    @staticmethod
    def _outcome(result: SweepResult, tracker: ProgressState | None = None) -> tuple[str, bool]:
        seconds, starting = result.seconds, ""
        if tracker is not None and tracker.ended is not None:
            # From the sweep's first work on: the cluster's start and the data's
            # shipping are said apart.
            before = tracker.started - result.started
            if before >= 0.05:
                seconds = tracker.ended - tracker.started
                starting = f" (after {before:.1f} s starting the cluster and sending the data)"
        done = f"{result.progress:,} of {len(result):,} runs finished in {seconds:.1f} s{starting}"
        failed = f", {result.failed} failed" if result.failed else ""
        text = f"{result.status}: {done}{failed}"
        if result.reason:
            text += f" ({result.reason})"
        return text, result.status in ("failed", "stopped")


    # ------------------------------------------------------------ results
    def show_tab(self, tab: str) -> go.Figure | None:
        """Select the result tab ``tab`` (one of :data:`TABS`) and return its figure."""
        return self.results_area.show_tab(tab)

    def select(self, row: int) -> Result | PortfolioResult | None:
        """Show row ``row``'s equity, drawdown and trades (as choosing it in ``rows`` does)."""
        return self.results_area.select(row)

    def save_csv(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Save the last run's rows (every column of ``results``) as CSV; returns the path.

        ``path`` defaults to the CSV box. Problems are shown in the widget and
        return None.
        """
        return self.results_area.save_csv(path)

    # ------------------------------------------------------------ text
    def sweep_call(self) -> str:
        """The :func:`nbbacktest.sweep` call the controls stand for, as code to paste in a script."""
        name = self.strategy_class.__name__ if isinstance(self.strategy, type) else repr(self.strategy)
        if self._grid is None:
            grid = "{...}"
        else:
            grid = "{" + ", ".join(f"{k!r}: {values_code(v)}" for k, v in self._grid.items()) + "}"
        parts = [name, "data", f"grid={grid}"]
        if self.where():
            parts.append(f"where={self.where()!r}")
        parts.append(f"metric={self.metric_box.value!r}")
        if not self.maximize_box.value:
            parts.append("maximize=False")
        if self.engines_box.value > 1:
            parts.append(f"engines={self.engines_box.value}")
        if self.seed != 0:
            parts.append(f"seed={self.seed!r}")
        if self.min_trades_box.value:
            parts.append(f"min_trades={self.min_trades_box.value}")
        if self.symbols is not None and self.symbols != list(self.data):
            parts.append(f"symbols={self.symbols!r}")
        defaults = Settings()
        for f in fields(self.settings):
            value = getattr(self.settings, f.name)
            if value != getattr(defaults, f.name):
                parts.append(f"{f.name}={value!r}")
        return f"nbb.sweep({', '.join(parts)})"

    def __repr__(self) -> str:
        name = self.strategy_class.__name__
        if self._errors:
            state = "; ".join(self._errors)
        else:
            state = self.estimate_text()
        if self.result is not None:
            state += f"; last run: {self.result!r}"
        text = f"<SweepWidget {name}: {state}>"
        if not in_kernel():
            text += "\n" + NEEDS_JUPYTER.format(name="SweepWidget", hint=self.sweep_call())
        return text

    def close(self) -> None:
        """Close the widget (a running sweep goes on: cancel it first to stop it)."""
        progress = getattr(self, "progress", None)  # None when __init__ raised
        if progress is not None:
            progress.close()
        super().close()
