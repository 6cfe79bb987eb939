"""The sweep widget: set up a parameter sweep from controls, run it, and explore its rows.

:class:`SweepWidget` builds one control per strategy Param (an int range slider
and a step, a float range slider and a step, both/True/False for a bool, a
multiple selection for choices, a comma-separated list for free text), a
``where`` box checked as you type, the metric, maximize or minimize, and the
engines. Under them: how many runs the controls make and how long they should
take, Run and Cancel, the :class:`~nbbacktest.display.widget.ProgressWidget`
with its live table, and, once the sweep ends, tabs (table, heatmap, parallel
coordinates, distribution) and the chart and trades of a chosen row.

The widget holds no sweep or chart logic: pure functions turn the controls into
a grid (:func:`slider_range`, :func:`range_values`, :func:`range_of`), the grid
is checked by :func:`~nbbacktest.parallel.grid.plan_sweep` and
:func:`~nbbacktest.parallel.grid.compile_where`, Run calls
:func:`~nbbacktest.parallel.sweep.sweep` with ``block=False`` (the kernel stays
responsive), and the tabs show the sweep's own views.

Threads: a sweep ends on its runner thread, which then fills the tabs and the
chosen row's chart by setting traits only. Figures go into ``Output`` widgets
created once, through their ``outputs`` trait, so nothing is built or captured
from that thread.
"""

from __future__ import annotations

import abc
import html
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from nbbacktest.display.charts import figure_bundle, result_figure
from nbbacktest.display.progress import in_kernel
from nbbacktest.display.tables import (
    format_params,
    format_value,
    plan_columns,
    rank_rows,
    values_code,
)
from nbbacktest.display.widget import ProgressWidget
from nbbacktest.engine.backtest import Settings, backtest
from nbbacktest.engine.data import validate_data
from nbbacktest.engine.metrics import NUMERIC_STATS, STAT_LABELS
from nbbacktest.engine.params import Param
from nbbacktest.engine.result import Result
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import NbbacktestError, SweepError
from nbbacktest.parallel.cluster import Cluster, resolve_engine_count
from nbbacktest.parallel.grid import MAX_RUNS, compile_where, plan_sweep
from nbbacktest.parallel.events import Finished, SweepEvent
from nbbacktest.parallel.sweep import SweepResult, check_metric, row_params, sweep, universe_symbols

__all__ = [
    "MAX_RUNS",
    "MAX_VALUES",
    "ParamControl",
    "SliderRange",
    "SweepWidget",
    "describe_estimate",
    "error_text",
    "measure_point_cost",
    "param_control",
    "range_of",
    "range_values",
    "resolve_strategy",
    "show_figure",
    "slider_range",
    "trades_html",
]

#: Most values one control may give (a float range with a tiny step).
MAX_VALUES = 10_000
#: Grids up to this size are planned in full as you type (with ``where`` applied);
#: a larger one is counted before ``where``, whose expression is still checked.
PREVIEW_LIMIT = 50_000
#: The result tabs, in order.
TABS = ("table", "heatmap", "parallel coordinates", "distribution")

_ERROR_STYLE = "color:#c0392b"
_NEEDS_JUPYTER = (
    "{name} is an interactive widget: it needs Jupyter (a notebook or JupyterLab kernel "
    "with ipywidgets). In a script, run {hint}"
)


# ---------------------------------------------------------------------- pure helpers
class SliderRange(NamedTuple):
    """A numeric param's slider: its bounds, the grid step, and how finely the slider moves."""

    low: float
    high: float
    step: float
    resolution: float


def slider_range(param: Param) -> SliderRange:
    """Slider bounds and steps for an int or float param.

    The bounds are the Param's ``low`` and ``high``; a missing one is put a
    sensible distance from the default (never below 0, or 1 for an int, when the
    default is not negative). The step is the Param's ``step``, else 1 for an
    int and a tenth of the range for a float; a float slider moves ten times
    finer than that unless the Param sets a step.

    Examples
    --------
    >>> slider_range(Param(10, low=2, high=100))
    SliderRange(low=2, high=100, step=1, resolution=1)
    >>> slider_range(Param(20))
    SliderRange(low=1, high=40, step=1, resolution=1)
    >>> slider_range(Param(0.0, low=0.0, high=0.1))
    SliderRange(low=0.0, high=0.1, step=0.01, resolution=0.001)
    >>> slider_range(Param(-2.0))
    SliderRange(low=-4.0, high=0.0, step=0.4, resolution=0.04)
    """
    kind = param.type
    if kind not in (int, float):
        raise TypeError(f"slider_range needs an int or float Param, got a {kind.__name__} one")
    default = param.default
    spread = max(abs(default), 10 if kind is int else 1.0)
    low, high = param.low, param.high
    if low is None:
        low = min(default, high if high is not None else default) - spread
        if default >= 0:
            low = max(low, 1 if kind is int and default >= 1 else 0)
    if high is None:
        high = max(default, low) + spread
        if default < 0 and param.low is None:
            high = min(high, 0)
    low, high = kind(low), kind(high)
    if kind is int:
        step = max(1, int(round(param.step))) if param.step is not None else 1
        return SliderRange(low, high, step, step)
    if param.step is not None:
        step = float(param.step)
        return SliderRange(low, high, step, step)
    width = high - low
    step = _tidy(width / 10) if width > 0 else 0.1
    return SliderRange(low, high, step, _tidy(step / 10))


def range_values(low: float, high: float, step: float, kind: type = int, name: str = "") -> list[Any]:
    """The grid values from ``low`` to ``high`` every ``step`` (``high`` included when a step lands on it).

    Float values are rounded to 12 decimals, so ``0.1 * 3`` reads ``0.3``.

    Raises
    ------
    SweepError
        ``step`` is not a positive number, ``low`` is above ``high``, or the
        range has more than :data:`MAX_VALUES` values.

    Examples
    --------
    >>> range_values(5, 30, 5)
    [5, 10, 15, 20, 25, 30]
    >>> range_values(0.0, 0.3, 0.1, float)
    [0.0, 0.1, 0.2, 0.3]
    >>> range_values(1, 10, 0, name="fast")
    Traceback (most recent call last):
    ...
    nbbacktest.errors.SweepError: fast: the step must be a positive number, got 0
    """
    label = f"{name}: " if name else ""
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0 or math.isinf(step):
        raise SweepError(f"{label}the step must be a positive number, got {step!r}")
    if low > high:
        raise SweepError(f"{label}the range is empty: from {low!r} up to {high!r}")
    count = math.floor((high - low) / step + 1e-9) + 1
    if count > MAX_VALUES:
        raise SweepError(
            f"{label}a step of {format_value(step, name)} gives {count:,} values from "
            f"{format_value(low, name)} to {format_value(high, name)}; at most {MAX_VALUES:,}: "
            "raise the step or narrow the range"
        )
    if kind is int:
        if not float(step).is_integer():
            raise SweepError(f"{label}the step of an int param must be a whole number, got {step!r}")
        return list(range(int(low), int(high) + 1, int(step)))
    return [round(low + i * step, 12) + 0.0 for i in range(count)]


def range_of(values: Sequence[Any], kind: type = int) -> tuple[Any, Any, Any]:
    """``(low, high, step)`` of grid values: a range slider and a step that make them.

    The step is the greatest common step of int values, and the smallest gap
    between float values; None when there is a single value.

    Examples
    --------
    >>> range_of([5, 10, 20, 15])
    (5, 20, 5)
    >>> range_of([0.0, 0.05, 0.1], float)
    (0.0, 0.1, 0.05)
    >>> range_of([7])
    (7, 7, None)
    """
    ordered = sorted(set(values))
    if not ordered:
        raise SweepError("range_of needs at least one value")
    low, high = ordered[0], ordered[-1]
    if len(ordered) == 1:
        return low, high, None
    gaps = np.diff(np.asarray(ordered, dtype=float))
    if kind is int:
        return int(low), int(high), int(np.gcd.reduce(gaps.astype(np.int64)))
    return float(low), float(high), _tidy(float(gaps.min()))


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


def measure_point_cost(strategy: Strategy, data: pd.DataFrame, settings: Settings, *,
                       budget: float = 0.2) -> float:
    """Seconds one backtest of ``strategy`` takes: the best of up to three runs within ``budget``.

    Raises what the backtest raises.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> 0 < measure_point_cost(SmaCross(), nbb.load_sample("daily"), Settings()) < 1
    True
    """
    options = asdict(settings)
    best = math.inf
    spent = 0.0
    for _ in range(3):
        started = time.perf_counter()
        backtest(strategy, data, **options)
        took = time.perf_counter() - started
        best, spent = min(best, took), spent + took
        if spent >= budget:
            break
    return best


def _tidy(number: float) -> float:
    """``0.010000000000000002`` -> ``0.01``: twelve significant digits."""
    return float(f"{number:.12g}")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    if seconds < 60:
        return f"about {round(seconds)} s"
    if seconds < 3600:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def _decimals(number: float) -> int:
    text = f"{number:.12g}"
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


# ---------------------------------------------------------------------- controls
class ParamControl(abc.ABC):
    """One param's controls (``widget``) and the grid values they stand for (:meth:`values`).

    Built by :func:`param_control`; ``inputs`` are the widgets whose ``value``
    changes the grid.
    """

    def __init__(self, name: str, param: Param, inputs: list[widgets.ValueWidget],
                 widget: widgets.Widget) -> None:
        self.name = name
        self.param = param
        self.inputs = inputs
        self.widget = widget

    @abc.abstractmethod
    def values(self) -> list[Any]:
        """The values this param takes in the grid; SweepError when the controls make none."""

    @abc.abstractmethod
    def set_values(self, values: Sequence[Any]) -> None:
        """Show these grid values (as far as the controls can)."""

    def observe(self, callback: Callable[[Any], Any]) -> None:
        """Call ``callback(change)`` whenever an input changes."""
        for control in self.inputs:
            control.observe(callback, names="value")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class RangeControl(ParamControl):
    """An int or float param: a range slider and a step."""

    def __init__(self, name: str, param: Param) -> None:
        bounds = slider_range(param)
        self.bounds = bounds
        if param.type is int:
            self.slider = widgets.IntRangeSlider(
                min=bounds.low, max=bounds.high, step=bounds.resolution,
                value=(bounds.low, bounds.high), continuous_update=False,
            )
            self.step = widgets.IntText(value=bounds.step, description="step",
                                        layout=widgets.Layout(width="130px"))
        else:
            decimals = max(_decimals(bounds.resolution), _decimals(bounds.low), 1)
            self.slider = widgets.FloatRangeSlider(
                min=bounds.low, max=bounds.high, step=bounds.resolution,
                value=(bounds.low, bounds.high), continuous_update=False,
                readout_format=f".{min(decimals, 8)}f",
            )
            self.step = widgets.FloatText(value=bounds.step, description="step",
                                          layout=widgets.Layout(width="150px"))
        self.step.style.description_width = "35px"
        self.slider.layout.width = "360px"
        # Values no range and step make (5, 10, 20): kept as given until the slider moves.
        self.explicit: list[Any] | None = None
        self.note = widgets.HTML()
        super().__init__(name, param, [self.slider, self.step],
                         _row(name, param, [self.slider, self.step, self.note]))
        for control in self.inputs:  # before any other observer: they read values()
            control.observe(self._moved, names="value")

    def values(self) -> list[Any]:
        if self.explicit is not None:
            return list(self.explicit)
        low, high = self.slider.value
        return range_values(low, high, self.step.value, self.param.type, self.name)

    def set_values(self, values: Sequence[Any]) -> None:
        low, high, step = range_of(values, self.param.type)
        # Widen the slider if the values go past the range it was given.
        self.slider.min = min(self.slider.min, low)
        self.slider.max = max(self.slider.max, high)
        self.slider.value = (low, high)
        if step is not None:
            self.step.value = step
        wanted = sorted(set(values))
        if step is not None and wanted != range_values(low, high, step, self.param.type):
            self.explicit = wanted
            shown = ", ".join(format_value(v, self.name) for v in wanted)
            self.note.value = f"<i>{html.escape(shown)} (move the slider for a range)</i>"

    def _moved(self, _change: Any) -> None:
        self.explicit = None
        self.note.value = ""


class BoolControl(ParamControl):
    """A bool param: both, True or False."""

    OPTIONS = (("both", (False, True)), ("True", (True,)), ("False", (False,)))

    def __init__(self, name: str, param: Param) -> None:
        self.buttons = widgets.ToggleButtons(options=list(self.OPTIONS), value=(False, True),
                                             style={"button_width": "60px"})
        super().__init__(name, param, [self.buttons], _row(name, param, [self.buttons]))

    def values(self) -> list[Any]:
        return list(self.buttons.value)

    def set_values(self, values: Sequence[Any]) -> None:
        wanted = tuple(sorted({bool(v) for v in values}))
        self.buttons.value = wanted if wanted in dict(self.OPTIONS).values() else (False, True)


class ChoiceControl(ParamControl):
    """A param with choices: select one or more."""

    def __init__(self, name: str, param: Param) -> None:
        choices = list(param.choices or ())
        self.select = widgets.SelectMultiple(
            options=[(format_value(c, name), c) for c in choices], value=tuple(choices),
            rows=min(len(choices), 5), layout=widgets.Layout(width="240px"),
        )
        super().__init__(name, param, [self.select], _row(name, param, [self.select]))

    def values(self) -> list[Any]:
        chosen = list(self.select.value)
        if not chosen:
            raise SweepError(f"{self.name}: select at least one value")
        return chosen

    def set_values(self, values: Sequence[Any]) -> None:
        self.select.value = tuple(c for c in (self.param.choices or ()) if c in set(values))


class TextListControl(ParamControl):
    """A free text param: values separated by commas."""

    def __init__(self, name: str, param: Param) -> None:
        self.text = widgets.Text(value=str(param.default), placeholder="values, separated by commas",
                                 layout=widgets.Layout(width="360px"))
        super().__init__(name, param, [self.text], _row(name, param, [self.text]))

    def values(self) -> list[Any]:
        items = [item.strip() for item in self.text.value.split(",")]
        chosen = list(dict.fromkeys(item for item in items if item))
        if not chosen:
            raise SweepError(f"{self.name}: give at least one value (values separated by commas)")
        return chosen

    def set_values(self, values: Sequence[Any]) -> None:
        self.text.value = ", ".join(str(v) for v in values)


def param_control(name: str, param: Param, values: Sequence[Any] | None = None) -> ParamControl:
    """The controls of one param, showing ``values`` (default: its whole range).

    int and float params get a range slider and a step; a bool both/True/False;
    a param with choices a multiple selection; a str one a list of values.

    Examples
    --------
    >>> control = param_control("fast", Param(10, low=2, high=100, step=5), [5, 10, 15])
    >>> type(control.slider).__name__, control.slider.value, control.step.value
    ('IntRangeSlider', (5, 15), 5)
    >>> control.values()
    [5, 10, 15]
    >>> param_control("kind", Param("sma", choices=["sma", "ema"])).values()
    ['sma', 'ema']
    """
    if param.choices is not None:
        control: ParamControl = ChoiceControl(name, param)
    elif param.type is bool:
        control = BoolControl(name, param)
    elif param.type in (int, float):
        control = RangeControl(name, param)
    else:
        control = TextListControl(name, param)
    if values is not None:
        control.set_values(list(values))
    return control


def _row(name: str, param: Param, parts: list[widgets.Widget]) -> widgets.HBox:
    label = widgets.HTML(f"<b>{html.escape(name)}</b>", layout=widgets.Layout(width="110px"))
    if param.doc:
        label.tooltip = param.doc
    return widgets.HBox([label, *parts])


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
        **settings: Any,
    ) -> None:
        self.strategy_class, self.strategy = resolve_strategy(strategy, "SweepWidget")
        self.data = validate_data(data, name="data")
        self.symbols = universe_symbols(self.data, symbols)
        self.settings = Settings.from_options(settings, "SweepWidget")
        self.seed = seed
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise SweepError(f"top must be a positive int, got {top!r}")
        self.top = top
        if cluster is not None and not isinstance(cluster, Cluster):
            raise TypeError(f"cluster must be an nbbacktest.Cluster, got {type(cluster).__name__}")
        self.cluster = cluster
        check_metric(metric, maximize)
        if where is not None and not isinstance(where, str):
            raise TypeError(f"where must be a str expression ('fast < slow'), got {type(where).__name__}")
        params = self.strategy_class.params()
        starting = self._starting_values(params, grid)

        self.controls = {name: param_control(name, param, starting.get(name))
                         for name, param in params.items()}
        self.where_box = widgets.Text(value=where or "", description="where",
                                      placeholder="e.g. fast < slow",
                                      layout=widgets.Layout(width="360px"))
        self.metric_box = widgets.Dropdown(options=[(STAT_LABELS[n], n) for n in NUMERIC_STATS],
                                           value=metric, description="metric")
        self.maximize_box = widgets.ToggleButtons(options=[("maximize", True), ("minimize", False)],
                                                  value=bool(maximize),
                                                  style={"button_width": "92px"})
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

        # What a finished run shows: every widget built here, filled later by setting traits.
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
        self.csv_path = widgets.Text(value=f"{self.strategy_class.__name__}_sweep.csv",
                                     description="CSV", layout=widgets.Layout(width="300px"))
        self.save_button = widgets.Button(description="Save CSV", icon="download", disabled=True)
        self.detail_note = widgets.HTML()
        self.detail_output = widgets.Output()
        self.trades = widgets.HTML()
        self.results_area = widgets.VBox(
            [self.tabs, widgets.HBox([self.rows, self.csv_path, self.save_button]),
             self.detail_note, self.detail_output, self.trades],
            layout=widgets.Layout(display="none"),
        )

        self.result: SweepResult | None = None
        self._ended: SweepResult | None = None
        self.detail_result: Result | None = None
        self.figures: dict[str, go.Figure] = {}
        self.runs = 0  # how many runs the controls make now (0 while they are invalid)
        self._grid: dict[str, list[Any]] | None = None
        self._errors: list[str] = []
        self._note = ""
        self._varying: list[str] = []
        self._filling = False
        self._lock = threading.RLock()
        self._drawn: set[str] = set()
        self._point_seconds, self._cost_note = self._first_cost()

        options = widgets.HBox([self.where_box, self.metric_box, self.maximize_box, self.engines_box])
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
        self.tabs.observe(lambda change: self._draw_tab(TABS[change["new"]]), names="selected_index")
        for box in (self.heatmap_x, self.heatmap_y):
            box.observe(lambda _change: self._redraw("heatmap"), names="value")
        self.rows.observe(self._row_chosen, names="value")
        self.refresh()

    # ------------------------------------------------------------ set-up
    def _starting_values(self, params: Mapping[str, Param],
                         grid: Mapping[str, Any] | None) -> dict[str, list[Any]]:
        if grid is None:
            grid = {}
        if not isinstance(grid, Mapping):
            raise TypeError(f"grid must be a dict of {{name: values}}, got {type(grid).__name__}")
        for name, values in grid.items():  # one at a time: a big product is no concern here
            plan_sweep(self.strategy, {name: values})  # the sweep's own checks and messages
        starting: dict[str, list[Any]] = {}
        instance = self.strategy if isinstance(self.strategy, Strategy) else None
        for name, param in params.items():
            if name in grid:
                raw = grid[name]
                values = list(raw) if isinstance(raw, (range, list, tuple, np.ndarray, pd.Index)) else [raw]
                starting[name] = [param.validate(v, self.strategy_class.__name__) for v in values]
            elif instance is not None or grid:
                starting[name] = [getattr(instance, name) if instance is not None else param.default]
        return starting

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
        frame = self.data if self.symbols is None else self.data[self.symbols[0]]
        instance = self.strategy if isinstance(self.strategy, Strategy) else self.strategy_class()
        try:
            return measure_point_cost(instance, frame, self.settings), ""
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
            seed=self.seed, symbols=self.symbols,
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
                self.message.value = "<br>".join(
                    f"<span style='{_ERROR_STYLE}'>{html.escape(e)}</span>" for e in errors)
                self.estimate.value = ""
            else:
                self.message.value = self._note
                self.estimate.value = html.escape(self.estimate_text(runs, approximate))
            self._update_buttons()

    def _say(self, text: str, error: bool = False) -> None:
        """Show a note (how a run went, a file saved) under the controls, unless they are invalid."""
        text = html.escape(text)
        self._note = f"<span style='{_ERROR_STYLE}'>{text}</span>" if error else text
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
        text = describe_estimate(runs, self._point_seconds, 0 if in_process else engines,
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
                self._drawn.clear()
                self.figures.clear()
                self.results_area.layout.display = "none"
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
                seconds = result.results.loc[result.results["status"] == "done", "seconds"]
                if len(seconds):
                    self._point_seconds, self._cost_note = float(statistics.median(seconds)), ""
                self._say(*self._outcome(result))
                self.refresh()
                self._fill_results(result)
            except Exception as error:  # never leave the widget looking busy
                self._say(f"the results could not be shown: {error_text(error)}", error=True)
            finally:
                self._update_buttons()

    @staticmethod
    def _outcome(result: SweepResult) -> tuple[str, bool]:
        done = f"{result.progress:,} of {len(result):,} runs finished in {result.seconds:.1f} s"
        failed = f", {result.failed} failed" if result.failed else ""
        text = f"{result.status}: {done}{failed}"
        if result.reason:
            text += f" ({result.reason})"
        return text, result.status in ("failed", "stopped")

    # ------------------------------------------------------------ results
    def _fill_results(self, result: SweepResult) -> None:
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
        self.results_area.layout.display = ""

    def _row_label(self, result: SweepResult, row: int) -> str:
        value = result.results.at[row, result.metric]
        return (f"{row}: {format_params(row_params(result.plan, row))} · "
                f"{result.metric} {format_value(value, result.metric)}")

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

    def select(self, row: int) -> Result | None:
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
                self.detail_note.value = (f"<span style='{_ERROR_STYLE}'>{html.escape(label)}: "
                                          f"{html.escape(error_text(error))}</span>")
                show_figure(self.detail_output, None)
                self.trades.value = ""
                return
            self.detail_result = detail
            fig = result_figure(detail, title=label)
            self.figures["detail"] = fig
            self.detail_note.value = ""
            show_figure(self.detail_output, fig)
            self.trades.value = trades_html(detail.trades)

    # ------------------------------------------------------------ export
    def save_csv(self, path: str | os.PathLike[str] | None = None) -> Path | None:
        """Save the last run's rows (every column of ``results``) as CSV; returns the path.

        ``path`` defaults to the CSV box. Problems are shown in the widget and
        return None.
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
            text += "\n" + _NEEDS_JUPYTER.format(name="SweepWidget", hint=self.sweep_call())
        return text

    def close(self) -> None:
        """Close the widget (a running sweep goes on: cancel it first to stop it)."""
        progress = getattr(self, "progress", None)  # None when __init__ raised
        if progress is not None:
            progress.close()
        super().close()


# ---------------------------------------------------------------------- helpers
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
    >>> error_text(SweepError("top must be a positive int")), error_text(KeyError("x"))
    ('top must be a positive int', "KeyError: 'x'")
    """
    text = str(error)
    return text if isinstance(error, NbbacktestError) else f"{type(error).__name__}: {text}"


def resolve_strategy(strategy: Any, owner: str) -> tuple[type[Strategy], type[Strategy] | Strategy]:
    """``(class, strategy)`` of a Strategy subclass or instance; TypeError naming ``owner`` otherwise.

    Examples
    --------
    >>> from nbbacktest.engine.examples import SmaCross
    >>> resolve_strategy(SmaCross(fast=5), "explore")
    (<class 'nbbacktest.engine.examples.SmaCross'>, SmaCross(fast=5, slow=30))
    >>> resolve_strategy("SmaCross", "explore")
    Traceback (most recent call last):
    ...
    TypeError: explore needs a Strategy subclass or instance, got str 'SmaCross'
    """
    if isinstance(strategy, Strategy):
        return type(strategy), strategy
    if isinstance(strategy, type) and issubclass(strategy, Strategy):
        return strategy, strategy
    raise TypeError(f"{owner} needs a Strategy subclass or instance, got {type(strategy).__name__} "
                    f"{strategy!r}")
