"""Explore one strategy by hand: a slider per Param, and its backtest redrawn as you move them.

:func:`explore` returns an :class:`Explorer`: every change of a control re-runs
:func:`nbbacktest.backtest` after a short pause (``delay``, 0.3 s by default), so
that dragging a slider runs one backtest where it stops rather than dozens on
the way; the equity and drawdown chart and the stats table are replaced in
place. :meth:`Explorer.update` runs at once (what tests and scripts call).

The debounce timer runs the backtest on its own thread, which only sets traits
(figures go into ``Output`` widgets through their ``outputs`` trait).

The module shares its name with its function, so ``nbbacktest.display.explore``
may be either, depending on imports: calling the module calls the function.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from nbbacktest.display.charts import result_figure
from nbbacktest.display.controls import slider_range
from nbbacktest.display.parts import error_html, error_text, show_figure
from nbbacktest.display.progress import in_kernel
from nbbacktest.display.tables import format_value, stats_table
from nbbacktest.engine.backtest import Settings, backtest
from nbbacktest.engine.data import is_universe, validate_data
from nbbacktest.engine.params import Param
from nbbacktest.engine.result import Result
from nbbacktest.engine.strategy import Strategy, resolve_strategy
from nbbacktest.errors import NbbacktestError
from nbbacktest.parallel.schedule import measure_point_cost

__all__ = ["Explorer", "explore", "param_slider"]


def param_slider(name: str, param: Param, value: Any = None) -> widgets.ValueWidget:
    """One control for one param, set to ``value`` (default: the param's default).

    An int param gets an ``IntSlider`` and a float one a ``FloatSlider`` over
    :func:`~nbbacktest.display.controls.slider_range` (moving by its
    resolution); a bool a ``Checkbox``; a param with choices a ``Dropdown``; a
    str one a ``Text``.

    Examples
    --------
    >>> slider = param_slider("fast", Param(10, low=2, high=100, step=5))
    >>> type(slider).__name__, slider.min, slider.max, slider.step, slider.value
    ('IntSlider', 2, 100, 5, 10)
    >>> param_slider("stop", Param(0.02, low=0.0, high=0.1)).step
    0.001
    >>> param_slider("kind", Param("sma", choices=["sma", "ema"]), "ema").value
    'ema'
    """
    value = param.default if value is None else value
    style = {"description_width": "110px"}
    layout = widgets.Layout(width="480px")
    tooltip = param.doc or None
    if param.choices is not None:
        return widgets.Dropdown(options=[(format_value(c, name), c) for c in param.choices], value=value,
                                description=name, style=style, tooltip=tooltip)
    if param.type is bool:
        return widgets.Checkbox(value=bool(value), description=name, style=style, tooltip=tooltip)
    if param.type in (int, float):
        bounds = slider_range(param)
        kind = widgets.IntSlider if param.type is int else widgets.FloatSlider
        options: dict[str, Any] = dict(min=min(bounds.low, value), max=max(bounds.high, value),
                                       step=bounds.resolution, value=value, description=name,
                                       style=style, layout=layout, tooltip=tooltip)
        if param.type is float:
            decimals = len(f"{bounds.resolution:.12g}".partition(".")[2])
            options["readout_format"] = f".{min(max(decimals, 1), 8)}f"
        return kind(**options)
    return widgets.Text(value=str(value), description=name, style=style, layout=layout,
                        continuous_update=False, tooltip=tooltip)


class Explorer(widgets.VBox):
    """A strategy's backtest, re-run as its params' sliders move (see :func:`explore`).

    Attributes
    ----------
    sliders : dict of str to ipywidgets.ValueWidget
        One control per param (see :func:`param_slider`).
    symbol_box : ipywidgets.Dropdown or None
        The symbol, when the data is a universe.
    chart, stats : ipywidgets.Output
        The equity and drawdown chart, and the stats table, redrawn in place.
    message : ipywidgets.HTML
        What went wrong with the last run (a strategy that raises), else empty.
    status : ipywidgets.HTML
        The strategy run last and how long it took.
    result : Result or None
        The last successful backtest; ``figure`` and ``stats_figure`` its figures.
    runs : int
        Backtests run so far.
    """

    def __init__(
        self,
        strategy: type[Strategy] | Strategy,
        data: pd.DataFrame | Mapping[str, pd.DataFrame],
        *,
        symbol: str | None = None,
        seed: int = 0,
        delay: float = 0.3,
        **settings: Any,
    ) -> None:
        self.strategy_class, start = resolve_strategy(strategy, "explore's strategy")
        self.data = validate_data(data, name="data")
        self.settings = Settings.from_options(settings, "explore")
        self.seed = seed
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
            raise ValueError(f"delay must be a number of seconds >= 0, got {delay!r}")
        self.delay = float(delay)
        # An instance's values, or a class's defaults.
        self.sliders = {
            name: param_slider(name, param, getattr(start, name))
            for name, param in self.strategy_class.params().items()
        }
        self.symbol_box: widgets.Dropdown | None = None
        if is_universe(self.data):
            symbols = [str(symbol) for symbol in self.data]
            if symbol is not None and symbol not in symbols:
                raise ValueError(f"symbol {symbol!r} is not in the data; it has {', '.join(symbols)}")
            self.symbol_box = widgets.Dropdown(options=symbols, value=symbol or symbols[0],
                                               description="symbol", style={"description_width": "110px"})
        elif symbol is not None:
            raise ValueError("symbol= picks a symbol of a universe, but data is a single frame")
        self.chart = widgets.Output(layout=widgets.Layout(width="64%"))
        self.stats = widgets.Output(layout=widgets.Layout(width="34%"))
        self.message = widgets.HTML()
        self.status = widgets.HTML()
        self.result: Result | None = None
        self.figure: go.Figure | None = None
        self.stats_figure: go.Figure | None = None
        self.runs = 0
        self._lock = threading.Lock()
        self._timer_lock = threading.Lock()
        self._timer: threading.Timer | None = None

        controls = list(self.sliders.values())
        if self.symbol_box is not None:
            controls.insert(0, self.symbol_box)
        super().__init__(children=[
            widgets.HTML(f"<b>Explore {html.escape(self.strategy_class.__name__)}</b>"),
            widgets.VBox(controls), self.status, self.message,
            widgets.HBox([self.chart, self.stats]),
        ])
        for control in controls:
            control.observe(self._changed, names="value")
        self.update()

    def values(self) -> dict[str, Any]:
        """The params the sliders show, ``{name: value}``."""
        return {name: slider.value for name, slider in self.sliders.items()}

    def strategy(self) -> Strategy:
        """The strategy instance the sliders show (ParamError if a value is refused)."""
        return self.strategy_class(**self.values())

    # ------------------------------------------------------------ running
    def update(self) -> Result | None:
        """Backtest the params shown now and redraw; returns the Result, or None if it failed.

        A failure (a value the strategy refuses, a strategy that raises) is shown
        in ``message``, never raised; the last good chart stays.
        """
        with self._lock:
            try:
                strategy = self.strategy()
                frame = self._frame()
                options = asdict(self.settings)
                result, took = measure_point_cost(
                    lambda: backtest(strategy, frame, seed=self.seed, **options))
            except Exception as error:  # shown in the widget, never as a traceback
                self.message.value = error_html(error_text(error))
                return None
            self.runs += 1
            self.result = result
            self.figure = result_figure(result, title=repr(strategy))
            self.stats_figure = stats_table(result.stats)
            show_figure(self.chart, self.figure)
            show_figure(self.stats, self.stats_figure)
            self.message.value = ""
            on = "" if self.symbol_box is None else f" on {self.symbol_box.value}"
            self.status.value = html.escape(f"{strategy!r}{on}: ran in {took * 1000:.0f} ms")
            return result

    def _frame(self) -> pd.DataFrame:
        """The data of the symbol shown (the data itself when it is a single frame)."""
        if isinstance(self.data, pd.DataFrame):
            return self.data
        symbol = self.symbol_box.value if self.symbol_box is not None else next(iter(self.data))
        return self.data[symbol]

    def _changed(self, _change: Any = None) -> None:
        if self.delay == 0:
            self.update()
            return
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.delay, self._run_late)
            self._timer.daemon = True
            self._timer.start()

    def _run_late(self) -> None:
        with self._timer_lock:
            self._timer = None
        self.update()

    @property
    def pending(self) -> bool:
        """True while a change waits for its debounced run."""
        return self._timer is not None

    def close(self) -> None:
        """Drop a waiting run and close the widgets."""
        lock = getattr(self, "_timer_lock", None)  # None when __init__ raised
        if lock is not None:
            with lock:
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
        super().close()

    def __repr__(self) -> str:
        try:
            strategy = repr(self.strategy())
        except NbbacktestError as error:
            strategy = f"{self.strategy_class.__name__} ({error})"
        shown = ""
        if self.result is not None:
            stats = self.result.stats
            shown = ": " + ", ".join(f"{name} {format_value(stats[name], name)}"
                                     for name in ("return_pct", "sharpe", "max_drawdown_pct", "trades"))
        text = f"<Explorer {strategy}{shown}>"
        if not in_kernel():
            text += (
                "\nexplore() is an interactive widget: it needs Jupyter (a notebook or JupyterLab "
                f"kernel with ipywidgets). In a script, run nbb.backtest({strategy}, data), or "
                "nbb.sweep(...) to try many values"
            )
        return text


def explore(
    strategy: type[Strategy] | Strategy,
    data: pd.DataFrame | Mapping[str, pd.DataFrame],
    **options: Any,
) -> Explorer:
    """One slider per Param; each change re-runs the backtest and redraws its chart and stats.

    Parameters
    ----------
    strategy : Strategy subclass or instance
        What to explore; the sliders start at the instance's values (or the defaults).
    data : DataFrame or {symbol: DataFrame}
        One instrument, or a universe (a symbol dropdown picks the instrument).
    symbol : str, optional
        The symbol to start on, for a universe.
    seed : int
        Base seed of the backtests.
    delay : float
        Seconds of calm after a change before the backtest runs (0: at once).
    cash, commission, slippage, fill, fractional, leverage, close_at_end
        Simulation settings, as for :func:`nbbacktest.backtest`.

    Returns
    -------
    Explorer
        A widget: the last expression of a notebook cell shows it. Outside a
        notebook it still runs (``values``, ``update()``, ``result``), and its
        text says it needs Jupyter.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> explorer = explore(SmaCross, nbb.load_sample("daily"), delay=0)
    >>> explorer.sliders["fast"].value = 20
    >>> explorer.result.strategy
    SmaCross(fast=20, slow=30)
    """
    return Explorer(strategy, data, **options)
