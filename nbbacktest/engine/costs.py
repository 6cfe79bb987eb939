"""What a fill costs: the commission forms of :class:`~nbbacktest.engine.types.Settings`.

``commission`` takes one of three forms, read once into a :class:`Costs`:

* a number ``c``: a fraction of traded notional, ``c * size * price`` per fill;
* a pair ``(fixed, c)``: a fixed amount per fill plus the fraction (as
  backtesting.py's ``commission=(fixed, relative)``);
* a callable ``cost(size, price)``: the cost of a fill of ``size`` units (always
  positive) at ``price`` (after slippage and spread), a finite number ``>= 0``.

A fill is one side of one order: a reversal is two fills (the close, then the
open), so a fixed fee is paid twice. A position is sized so that it and its cost
never spend more than the equity given to it: ``units = (value - fixed) / (price *
(1 + c))``, none when the value does not cover the fixed fee; with a callable,
``units = (value - cost(value / price, price)) / price``, which stays within the
value whenever the cost does not fall as the size grows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np

__all__ = ["CommissionSpec", "Costs"]

#: What ``commission=`` accepts: a fraction, ``(fixed, fraction)``, or ``cost(size, price)``.
CommissionSpec = float | tuple[float, float] | Callable[[float, float], float]


def _number(value: Any, what: str, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"commission {what} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"commission {what} must be a finite number >= 0, got {value!r}")
    if high is not None and value >= high:
        raise ValueError(f"commission {what} must be below {high}, got {value!r}")
    return float(value)


class Costs:
    """The commission of every fill: a fraction, a fixed fee, both, or a callable.

    Parameters
    ----------
    rate : float
        Fraction of traded notional (0 <= rate < 1).
    fixed : float
        Amount per fill (>= 0).
    fn : callable, optional
        ``cost(size, price)``; replaces ``rate`` and ``fixed`` when given.

    Examples
    --------
    >>> costs = Costs.parse((1.0, 0.001))
    >>> costs.charge(100.0, 10.0)
    2.0
    >>> round(costs.units(1002.0, 10.0), 9)   # (value - fixed) / (price * (1 + rate))
    100.0
    >>> Costs.parse(0.002).plain, costs.plain
    (True, False)
    """

    __slots__ = ("rate", "fixed", "fn")

    def __init__(self, rate: float = 0.0, fixed: float = 0.0,
                 fn: Callable[[float, float], float] | None = None) -> None:
        self.rate, self.fixed, self.fn = rate, fixed, fn

    @classmethod
    def parse(cls, commission: Any) -> Costs:
        """Read a ``commission=`` value, raising an error that names it when it is wrong.

        Examples
        --------
        >>> Costs.parse(0.001).rate
        0.001
        >>> Costs.parse((-1.0, 0.0))
        Traceback (most recent call last):
        ...
        ValueError: commission fixed fee must be a finite number >= 0, got -1.0
        """
        if isinstance(commission, Costs):
            return commission
        if isinstance(commission, tuple):
            if len(commission) != 2:
                raise ValueError(
                    f"commission as a tuple must be (fixed per fill, fraction), got {commission!r}"
                )
            return cls(_number(commission[1], "fraction", 1.0), _number(commission[0], "fixed fee"))
        if callable(commission):
            return cls(fn=commission)
        if isinstance(commission, bool) or not isinstance(
            commission, (int, float, np.integer, np.floating)
        ):
            raise TypeError(
                "commission must be a fraction, a (fixed, fraction) pair or a callable "
                f"cost(size, price), got {type(commission).__name__} {commission!r}"
            )
        if not math.isfinite(commission) or commission < 0:
            raise ValueError(f"commission must be a finite number >= 0.0, got {commission!r}")
        if commission >= 1.0:
            raise ValueError(f"commission must be below 1.0, got {commission!r}")
        return cls(cast(float, commission))  # as given: the fast paths' arithmetic is unchanged

    @property
    def plain(self) -> bool:
        """True for a fraction alone (the simulator's fast paths handle it)."""
        return self.fn is None and self.fixed == 0.0

    def charge(self, size: float, price: float) -> float:
        """The cost of a fill of ``size`` units (> 0) at ``price``.

        Examples
        --------
        >>> Costs(fn=lambda size, price: 0.01 * size).charge(50.0, 20.0)
        0.5
        """
        fn = self.fn
        if fn is None:
            return self.fixed + size * price * self.rate
        cost = fn(size, price)
        if isinstance(cost, bool) or not isinstance(cost, (int, float, np.integer, np.floating)) \
                or not cost >= 0 or not math.isfinite(cost):
            raise ValueError(
                f"commission({size!r}, {price!r}) returned {cost!r}: a commission callable must "
                "return a finite cost >= 0"
            )
        return float(cost)

    def units(self, value: float, price: float) -> float:
        """Units a ``value`` (signed: negative sells) buys at ``price`` with its cost paid.

        Examples
        --------
        >>> Costs(fixed=5.0).units(-105.0, 10.0)
        -10.0
        >>> Costs(fixed=5.0).units(4.0, 10.0)
        0.0
        """
        size = value if value > 0 else -value
        if self.fn is None:
            units = (size - self.fixed) / (price * (1.0 + self.rate))
        else:
            units = (size - self.charge(size / price, price)) / price
        if not units > 0:
            return 0.0
        return units if value > 0 else -units

