"""Grid ranges: the one ``start:stop:step`` grammar of the magics and the sweep widget.

A :class:`GridRange` is the values of one parameter from ``start`` every ``step``,
**stop excluded**, as in Python's ``range``, slices and ``numpy.arange``:
``--grid fast=5:60:5`` is 5, 10, ..., 55, the same values as
``grid={"fast": range(5, 60, 5)}`` in :func:`nbbacktest.sweep`, and the
widget's ``sweep_call()`` writes them back as ``range(5, 60, 5)``. A Python
user reads ``a:b:c`` as a slice; a rule of its own for the grid would make the
text and the code of one sweep disagree by a value.

A range slider's handles are its first and last values, not a stop: the widget
turns them into a range with :meth:`GridRange.through`, whose stop is one step
past the last value (handles at 5 and 30, step 5: ``5:35:5``).

The cap: a range holds at most :data:`MAX_RANGE_VALUES` values, the most runs one
sweep holds (:data:`~nbbacktest.parallel.grid.MAX_RUNS`). A longer range could
never run, so it is refused at once, before its values are made (a step of
``1e-9`` is a typo, not a sweep); any shorter one may run alone.

Values are computed in decimal, so ``0.1:0.3:0.05`` gives exactly 0.1, 0.15, 0.2
and 0.25. An int parameter's values are ints (its step must be whole); a float
parameter's are floats.

Examples
--------
>>> GridRange.parse("5:60:5").values() == list(range(5, 60, 5))
True
>>> r = GridRange.through(5, 30, 5, int)
>>> str(r), r.values()
('5:35:5', [5, 10, 15, 20, 25, 30])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from nbbacktest.engine.params import Param
from nbbacktest.errors import SweepError
from nbbacktest.parallel.grid import MAX_RUNS

__all__ = ["MAX_RANGE_VALUES", "GridRange", "as_number", "range_of", "range_values"]

#: Most values one range may hold: the most runs a sweep holds, so that no range
#: that could run alone is refused, and a typo'd step fails before it is expanded.
MAX_RANGE_VALUES = MAX_RUNS


@dataclass(frozen=True)
class GridRange:
    """One parameter's grid values: ``start``, ``start + step``, ... up to ``stop`` (excluded).

    Built by :meth:`parse` (the magics' text) or :meth:`through` (a slider's first
    and last values); both check it, so a GridRange is never empty nor longer than
    :data:`MAX_RANGE_VALUES`.

    Attributes
    ----------
    start, stop, step : Decimal
        As in ``range(start, stop, step)``; the step may be negative.
    kind : type
        ``int`` or ``float``: the type of the values.

    Examples
    --------
    >>> r = GridRange.parse("0.1:0.3:0.05", Param(0.0))
    >>> len(r), r.values()
    (4, [0.1, 0.15, 0.2, 0.25])
    >>> GridRange.parse("60:5", Param(10))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    nbbacktest.errors.SweepError: 60:5 is empty: no value from start 60 up to stop 5 (stop is excluded...
    """

    start: Decimal
    stop: Decimal
    step: Decimal
    kind: type = float

    def __len__(self) -> int:
        return max(math.ceil((self.stop - self.start) / self.step), 0)

    def __str__(self) -> str:
        return f"{_text(self.start)}:{_text(self.stop)}:{_text(self.step)}"

    def values(self) -> list[Any]:
        """The values, in order: ints for an int range (floats where a value is not whole)."""
        count = len(self)
        if self.kind is int and _is_whole(self.start) and _is_whole(self.step):
            first, step = int(self.start), int(self.step)
            return list(range(first, first + count * step, step))
        return [as_number(self.start + i * self.step, self.kind) for i in range(count)]

    # ------------------------------------------------------------ constructors
    @classmethod
    def parse(cls, text: str, param: Param | None = None, *, label: str = "") -> GridRange:
        """The range written ``start:stop:step`` (or ``start:stop``).

        Without a step, the range counts by the Param's declared step, else by 1
        for an int parameter; a float one needs a step. Errors name ``label``
        (default: the text).

        Raises
        ------
        SweepError
            Naming the part of the text that is wrong, an empty range or one over
            :data:`MAX_RANGE_VALUES` values.

        Examples
        --------
        >>> GridRange.parse("5:20", Param(10)).values()
        [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
        >>> GridRange.parse("30:0:-10").values()
        [30, 20, 10]
        >>> GridRange.parse("5:x:5", label="--grid fast=5:x:5")
        Traceback (most recent call last):
        ...
        nbbacktest.errors.SweepError: --grid fast=5:x:5: stop 'x' is not a number
        """
        subject = label or text
        if param is not None and param.type is bool:
            raise SweepError(f"{subject}: a range needs a numeric parameter, {param.name!r} is bool;"
                             " give true,false")
        parts = text.strip().split(":")
        if len(parts) not in (2, 3):
            raise SweepError(f"{subject}: a range is start:stop:step, got {len(parts)} parts")
        start = _parsed(parts[0], "start", subject)
        stop = _parsed(parts[1], "stop", subject)
        if len(parts) == 3:
            step = _parsed(parts[2], "step", subject)
        elif param is not None and param.step is not None:
            step = Decimal(str(param.step))
        elif (param.type if param is not None else _kind(start, stop)) is int:
            step = Decimal(1)
        else:
            declares = f" ({param.name!r} declares none)" if param is not None else ""
            raise SweepError(f"{subject}: give a step, start:stop:step{declares}")
        if step == 0:
            raise SweepError(f"{subject}: step must not be 0")
        kind = param.type if param is not None else _kind(start, step)
        made = cls(start, stop, step, kind)
        count = len(made)
        if count <= 0:
            way = "up" if step > 0 else "down"
            raise SweepError(
                f"{subject} is empty: no value from start {_text(start)} {way} to stop"
                f" {_text(stop)} (stop is excluded, like range)"
            )
        _check_count(count, subject)
        _check_int_step(made, f"{subject}: ")
        return made

    @classmethod
    def through(cls, first: float, last: float, step: float, kind: type = float, *,
                name: str = "") -> GridRange:
        """The range from ``first`` through ``last`` (included when a step lands on it).

        What a range slider means: its handles are the first and last values. Its
        stop is one step past the last value reached. Floats are read to twelve
        significant digits (``0.1 + 0.2`` is 0.3). Errors start with ``name``.

        Raises
        ------
        SweepError
            ``step`` is not a positive number, ``first`` is above ``last``, an int
            range's step is not whole, or the range has more than
            :data:`MAX_RANGE_VALUES` values.

        Examples
        --------
        >>> str(GridRange.through(0.0, 0.05, 0.01))
        '0:0.06:0.01'
        >>> GridRange.through(10, 1, 1, int, name="fast")
        Traceback (most recent call last):
        ...
        nbbacktest.errors.SweepError: fast: the range is empty: from 10 up to 1
        """
        prefix = f"{name}: " if name else ""
        if (isinstance(step, bool) or not isinstance(step, (int, float, Decimal))
                or not step > 0 or math.isinf(step)):
            raise SweepError(f"{prefix}the step must be a positive number, got {step!r}")
        if first > last:
            raise SweepError(f"{prefix}the range is empty: from {first!r} up to {last!r}")
        low, high, by = _decimal(first), _decimal(last), _decimal(step)
        count = math.floor((high - low) / by) + 1
        _check_count(count, f"{prefix}a step of {_text(by)} from {_text(low)} to {_text(high)}")
        made = cls(low, low + count * by, by, kind)
        _check_int_step(made, prefix)
        return made


def range_values(low: float, high: float, step: float, kind: type = int, name: str = "") -> list[Any]:
    """The values from ``low`` through ``high`` every ``step``: a slider's, see :meth:`GridRange.through`.

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
    return GridRange.through(low, high, step, kind, name=name).values()


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
    return float(low), float(high), float(f"{float(gaps.min()):.12g}")


def as_number(value: Decimal, kind: type) -> int | float:
    """A grid value of a parameter of type ``kind``: a whole number stays an int unless ``kind`` is float.

    Examples
    --------
    >>> as_number(Decimal("5"), int), as_number(Decimal("5"), float), as_number(Decimal("5.5"), int)
    (5, 5.0, 5.5)
    """
    if kind is not float and _is_whole(value):
        return int(value)
    return float(value)


# --------------------------------------------------------------------- helpers
def _parsed(text: str, part: str, subject: str) -> Decimal:
    text = text.strip()
    if not text:
        raise SweepError(f"{subject}: {part} is missing")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SweepError(f"{subject}: {part} {text!r} is not a number") from None
    if not value.is_finite():
        raise SweepError(f"{subject}: {part} {text!r} is not a finite number")
    return value


def _decimal(number: float | Decimal) -> Decimal:
    if isinstance(number, Decimal):
        return number
    if isinstance(number, (int, np.integer)):
        return Decimal(int(number))
    return Decimal(f"{float(number):.12g}")  # 0.30000000000000004 -> 0.3


def _check_count(count: int, subject: str) -> None:
    if count > MAX_RANGE_VALUES:
        raise SweepError(f"{subject} has {count:,} values; at most {MAX_RANGE_VALUES:,} per parameter:"
                         " raise the step or narrow the range")


def _check_int_step(made: GridRange, prefix: str) -> None:
    if made.kind is int and not _is_whole(made.step):
        raise SweepError(f"{prefix}the step of an int param must be a whole number, got {_text(made.step)}")


def _kind(*numbers: Decimal) -> type:
    return int if all(_is_whole(n) for n in numbers) else float


def _is_whole(number: Decimal) -> bool:
    return number == number.to_integral_value()


def _text(number: Decimal) -> str:
    """``Decimal('6E+1')`` -> ``'60'``, ``Decimal('0.10')`` -> ``'0.1'``."""
    return format(number.normalize(), "f")
