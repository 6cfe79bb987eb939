"""The sweep widget's controls: one per strategy Param, and the grid values they stand for.

:func:`param_control` picks the control of a Param: a range slider and a step for
an int or float (:class:`RangeControl`), both/True/False for a bool, a multiple
selection for choices, a comma-separated list for free text. A range control's
values follow the grid-range grammar of :mod:`nbbacktest.parallel.ranges` (the
magics' ``start:stop:step``): its slider's handles are the first and the last
value. :func:`slider_range` places a slider for a Param; the explorer's sliders
use it too.
"""

from __future__ import annotations

import abc
import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import ipywidgets as widgets
import numpy as np
import pandas as pd

from nbbacktest.display.tables import format_value
from nbbacktest.engine.params import Param
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import SweepError
from nbbacktest.parallel.grid import plan_sweep
from nbbacktest.parallel.ranges import GridRange, range_of, range_values

__all__ = [
    "BoolControl", "ChoiceControl", "ParamControl", "RangeControl", "SliderRange", "TextListControl",
    "param_control", "slider_range", "starting_values",
]


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
    kind, default = param.type, param.default
    if kind not in (int, float) or not isinstance(default, (int, float)):
        raise TypeError(f"slider_range needs an int or float Param, got a {kind.__name__} one")
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
        whole = max(1, int(round(param.step))) if param.step is not None else 1
        return SliderRange(low, high, whole, whole)
    if param.step is not None:
        step = float(param.step)
        return SliderRange(low, high, step, step)
    width = high - low
    step = _tidy(width / 10) if width > 0 else 0.1
    return SliderRange(low, high, step, _tidy(step / 10))



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
        return self.range().values()

    def range(self) -> GridRange:
        """The range the slider and the step make, in the magics' grammar (``str()`` is its text).

        The slider's handles are the first and last values: handles at 5 and 30
        with a step of 5 are the range ``5:35:5`` (stop excluded), which
        ``--grid fast=5:35:5`` parses to the same values. SweepError when the
        controls make no range; values set by :meth:`set_values` that no range
        makes are not shown by it.
        """
        low, high = self.slider.value
        return GridRange.through(low, high, self.step.value, self.param.type, name=self.name)

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


def starting_values(strategy: type[Strategy] | Strategy, params: Mapping[str, Param],
                    grid: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """The values each param's control starts from: ``grid``'s, else the instance's (or the default).

    Examples
    --------
    >>> from nbbacktest.engine.examples import SmaCross
    >>> starting_values(SmaCross, SmaCross.params(), {"fast": range(5, 15, 5)})
    {'fast': [5, 10], 'slow': [30]}
    """
    strategy_class = strategy if isinstance(strategy, type) else type(strategy)
    if grid is None:
        grid = {}
    if not isinstance(grid, Mapping):
        raise TypeError(f"grid must be a dict of {{name: values}}, got {type(grid).__name__}")
    for name, values in grid.items():  # one at a time: a big product is no concern here
        plan_sweep(strategy, {name: values})  # the sweep's own checks and messages
    starting: dict[str, list[Any]] = {}
    instance = strategy if isinstance(strategy, Strategy) else None  # else the defaults
    for name, param in params.items():
        if name in grid:
            raw = grid[name]
            values = list(raw) if isinstance(raw, (range, list, tuple, np.ndarray, pd.Index)) else [raw]
            starting[name] = [param.validate(v, strategy_class.__name__) for v in values]
        elif instance is not None or grid:
            starting[name] = [getattr(instance, name) if instance is not None else param.default]
    return starting
