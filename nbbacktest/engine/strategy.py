"""The Strategy base class: parameters plus a vectorized or an event-driven body.

A strategy is either *vectorized*, returning the target exposure of every bar from
``signals(data)``, or *event-driven*, acting bar by bar in ``next(bar)`` with
``buy``/``sell``/``close``. Both paths go through the same :class:`~.broker.Broker`,
so the same rules written both ways produce the same trades and equity.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from nbbacktest.engine.params import Param, bind_params, collect_params

if TYPE_CHECKING:  # the runner imports this module; only type names flow back
    from nbbacktest.engine.event_driven import EventRunner

#: Attribute names a parameter may not take: the Strategy API uses them.
RESERVED_NAMES = frozenset(
    {
        "data", "position", "equity", "cash", "orders", "seed", "rng", "buy", "sell",
        "close", "indicator", "init", "next", "signals", "params", "param_values",
        "with_params", "bar",
    }
)


class Strategy:
    """Base class of every strategy.

    Subclasses declare parameters as class attributes (``fast = 10`` or
    ``fast = Param(10, low=2, high=100)``) and define either ``signals(data)``
    (vectorized) or ``init()`` / ``next(bar)`` (event-driven). Instances are
    immutable sets of parameter values: they compare equal by class and values,
    hash, and pickle by value; each backtest runs on a fresh copy.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class SmaCross(nbb.Strategy):
    ...     fast = nbb.Param(10, low=2, high=100)
    ...     slow = nbb.Param(30, low=5, high=300)
    ...     def signals(self, data):
    ...         f = data["Close"].rolling(self.fast).mean()
    ...         s = data["Close"].rolling(self.slow).mean()
    ...         return (f > s).astype(float)
    >>> SmaCross(fast=5)
    SmaCross(fast=5, slow=30)
    >>> SmaCross(5) == SmaCross(fast=5, slow=30)
    True
    """

    _params: ClassVar[dict[str, Param]] = {}
    _mode: ClassVar[str | None] = None

    # Set on the private copy that runs a backtest.
    data: pd.DataFrame
    _runner: EventRunner | None = None
    _seed: int = 0
    _rng: np.random.Generator | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params = collect_params(cls, Strategy)
        clash = sorted(params.keys() & RESERVED_NAMES)
        if clash:
            raise TypeError(
                f"Strategy {cls.__name__!r}: parameter name(s) {', '.join(clash)} clash with"
                " the Strategy API; rename them"
            )
        cls._params = params
        if cls.signals is not Strategy.signals:
            cls._mode = "vector"
        elif cls.next is not Strategy.next:
            cls._mode = "event"
        else:
            cls._mode = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if type(self) is Strategy:
            raise TypeError("Strategy is a base class: subclass it and define signals() or next()")
        self.__dict__.update(bind_params(type(self).__name__, self._params, args, kwargs))

    @classmethod
    def params(cls) -> dict[str, Param]:
        """The declared parameters, in declaration order.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class Breakout(nbb.Strategy):
        ...     lookback = 20
        >>> Breakout.params()["lookback"].default
        20
        """
        return dict(cls._params)

    @property
    def param_values(self) -> dict[str, Any]:
        """This instance's parameter values, in declaration order."""
        values = self.__dict__
        return {name: values.get(name, p.default) for name, p in self._params.items()}

    def with_params(self, **changes: Any) -> Strategy:
        """A copy with some parameters changed (validated like the constructor).

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class S(nbb.Strategy):
        ...     n = 3
        >>> S().with_params(n=5)
        S(n=5)
        """
        return type(self)(**{**self.param_values, **changes})

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> Strategy:
        # Values already validated (a copy of an instance, or unpickling): skip checks.
        instance = cls.__new__(cls)
        instance.__dict__.update(values)
        return instance

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.param_values.items())
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.param_values == other.param_values  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, tuple(self.param_values.items())))

    def __reduce__(self) -> tuple:
        return (_rebuild_strategy, (type(self), self.param_values))

    # ----------------------------------------------------------------- the body
    def signals(self, data: pd.DataFrame) -> pd.Series | np.ndarray:
        """Vectorized strategies: the target exposure decided at each bar's close.

        Return a Series on ``data``'s index (or an array of its length): 1 long,
        0 flat, -1 short, fractions allowed, NaN flat.
        """
        # The hook a vectorized subclass overrides (event-driven ones override next instead).
        raise NotImplementedError(f"{type(self).__name__} defines neither signals(data) nor next(bar)")

    def init(self) -> None:
        """Event-driven strategies: called once before the first bar; make indicators here."""

    def next(self, bar: Bar) -> None:
        """Event-driven strategies: called at each bar's close, from the warm-up on.

        The first call is on the first bar at which every indicator made in
        :meth:`init` is defined (not NaN): ``rolling(n)`` indicators are first
        defined at bar ``n - 1``, so a strategy with a 20-bar and a 50-bar mean
        starts at bar 49 and its first market order fills at bar 50's open. Without
        indicators the first call is on bar 0. A strategy that computes its own
        look-backs in ``next`` must wait for them itself (vectorized strategies
        return NaN, meaning flat, while warming up).

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class Trend(nbb.Strategy):
        ...     n = 20
        ...     def init(self):
        ...         self.sma = self.indicator(lambda d: d["Close"].rolling(self.n).mean())
        ...         self.first = None
        ...     def next(self, bar):
        ...         if self.first is None:
        ...             self.first = bar.i
        ...             print("first next() on bar", bar.i)
        >>> _ = nbb.backtest(Trend(), nbb.load_sample("daily"))
        first next() on bar 19
        """

    # ------------------------------------------------------- randomness (seeded)
    @property
    def seed(self) -> int:
        """This run's seed: derived from the sweep seed and the parameters."""
        return self._seed

    @property
    def rng(self) -> np.random.Generator:
        """A numpy Generator seeded with :attr:`seed`: the same on every engine."""
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng

    # --------------------------------------------------- event-driven interface
    def indicator(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> np.ndarray:
        """Compute ``fn(self.data, *args, **kwargs)`` once, before the first bar.

        Returns a float numpy array of one value per bar. ``next`` is first called
        at the first bar where every indicator is defined (not NaN): the warm-up
        (see :meth:`next`).
        """
        return self._event("indicator").add_indicator(fn, args, kwargs)

    def buy(
        self,
        size: float | None = None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        sl: float | None = None,
        tp: float | None = None,
        tag: str | None = None,
        sl_pct: float | None = None,
        tp_pct: float | None = None,
    ) -> Order:
        """Place a buy order; it fills at the next open (or this close with ``fill="close"``).

        ``size=None`` targets an all-in long position (exposure 1, reversing a short);
        ``0 < size < 1`` buys that fraction of equity; ``size >= 1`` buys that many
        units. ``limit``/``stop`` make it a limit, stop or stop-limit order (fill rules
        in :mod:`nbbacktest.engine.event_driven`).

        The stop-loss and take-profit of the resulting position are prices
        (``sl=95.0``, ``tp=120.0``) or fractions of this order's fill price after
        slippage (``sl_pct=0.05``: 5 % below it; ``tp_pct=0.10``: 10 % above it; a
        sell mirrors them). A price that cannot be one on this data (outside a
        fifth of the bar's low to five times its high) raises, naming ``sl_pct``.
        An order that would take the exposure beyond ``leverage`` (default 1) is
        reduced to it, or rejected (``status == "rejected"``) when the position is
        already there; ``Result.adjusted_orders`` lists them.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class Dip(nbb.Strategy):
        ...     def next(self, bar):
        ...         if not self.position and not self.orders:
        ...             self.buy(limit=bar.close * 0.98, sl_pct=0.05, tp_pct=0.10)
        >>> trades = nbb.backtest(Dip, nbb.load_sample("daily")).trades
        >>> sorted(set(trades.exit_reason)) == ["stop-loss", "take-profit"]
        True
        """
        return self._event("buy").submit(Order(1, size, limit, stop, sl, tp, tag, sl_pct, tp_pct))

    def sell(
        self,
        size: float | None = None,
        *,
        limit: float | None = None,
        stop: float | None = None,
        sl: float | None = None,
        tp: float | None = None,
        tag: str | None = None,
        sl_pct: float | None = None,
        tp_pct: float | None = None,
    ) -> Order:
        """Place a sell order: the mirror of :meth:`buy` (``size=None`` targets all-in short).

        ``sl_pct`` puts the stop-loss above the fill price and ``tp_pct`` the
        take-profit below it (``tp_pct`` below 1).
        """
        return self._event("sell").submit(Order(-1, size, limit, stop, sl, tp, tag, sl_pct, tp_pct))

    def close(self, tag: str | None = None) -> Order:
        """Close the whole position at the next fill and cancel its stop-loss/take-profit."""
        return self._event("close").submit(Order(0, None, None, None, None, None, tag))

    @property
    def position(self) -> Position:
        """The open position: ``size``, ``entry_price``, ``pl``; false when flat."""
        return self._event("position").position

    @property
    def equity(self) -> float:
        """Cash plus the position valued at the current bar's close."""
        return self._event("equity").current_equity()

    @property
    def cash(self) -> float:
        """Cash left (negative when leveraged long)."""
        return self._event("cash").broker.cash

    @property
    def orders(self) -> list[Order]:
        """Orders placed and not yet filled or cancelled."""
        return self._event("orders").open_orders()

    def _event(self, what: str) -> EventRunner:
        runner = self._runner
        if runner is None:
            raise RuntimeError(
                f"{what}() belongs to event-driven strategies and works only during a"
                " backtest, inside init() or next(bar)"
            )
        return runner


def _rebuild_strategy(cls: type[Strategy], values: dict[str, Any]) -> Strategy:
    return cls._from_values(values)


class Order:
    """An order placed by ``buy``/``sell``/``close``.

    ``side`` is 1 (buy), -1 (sell) or 0 (close). ``status`` is "open", "filled",
    "cancelled" or "rejected" (by the leverage limit); once filled, ``fill_price``
    (raw, before slippage) and ``fill_bar`` are set.

    Examples
    --------
    >>> sl, tp = Order(1, None, None, None, None, None, None, sl_pct=0.05, tp_pct=0.1).exit_levels(100.0)
    >>> round(sl, 6), round(tp, 6)
    (95.0, 110.0)
    >>> Order(1, None, None, None, 95.0, None, None, sl_pct=0.05)
    Traceback (most recent call last):
    ...
    ValueError: buy(sl=95.0, sl_pct=0.05): give the stop-loss as a price (sl) or as a fraction of the fill price (sl_pct), not both
    """

    __slots__ = (
        "side", "size", "limit", "stop", "sl", "tp", "sl_pct", "tp_pct", "tag", "status",
        "triggered", "fill_price", "fill_bar", "placed_bar",
    )

    def __init__(
        self,
        side: int,
        size: float | None,
        limit: float | None,
        stop: float | None,
        sl: float | None,
        tp: float | None,
        tag: str | None,
        sl_pct: float | None = None,
        tp_pct: float | None = None,
    ) -> None:
        verb = {1: "buy", -1: "sell", 0: "close"}[side]
        if size is not None:
            if not isinstance(size, (int, float, np.integer, np.floating)) or isinstance(size, bool):
                raise TypeError(f"{verb}(size=...) must be a number, got {type(size).__name__}")
            if not size > 0 or not math.isfinite(size):
                raise ValueError(
                    f"{verb}(size={size!r}): size must be positive: a fraction of equity"
                    " below 1, or a number of units from 1 up"
                )
        for label, price in (("limit", limit), ("stop", stop), ("sl", sl), ("tp", tp)):
            if price is not None and not (isinstance(price, (int, float, np.number)) and price > 0):
                raise ValueError(f"{verb}({label}={price!r}): must be a positive price")
        if side and sl is not None and tp is not None and (sl - tp) * side >= 0:
            need = "sl < tp" if side > 0 else "sl > tp"
            raise ValueError(f"{verb}(sl={sl!r}, tp={tp!r}): a {verb} order needs {need}")
        for label, fraction, price in (("sl", sl_pct, sl), ("tp", tp_pct, tp)):
            if fraction is None:
                continue
            what = "stop-loss" if label == "sl" else "take-profit"
            if price is not None:
                raise ValueError(
                    f"{verb}({label}={price!r}, {label}_pct={fraction!r}): give the {what} as a"
                    f" price ({label}) or as a fraction of the fill price ({label}_pct), not both"
                )
            # A long's stop-loss and a short's take-profit lie below the fill: under 100 %.
            below = (label == "sl") == (side > 0)
            if (isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.number))
                    or not math.isfinite(fraction) or not fraction > 0 or (below and fraction >= 1)):
                bound = "between 0 and 1 (exclusive)" if below else "a positive number"
                raise ValueError(
                    f"{verb}({label}_pct={fraction!r}): the {what} as a fraction of the fill price"
                    f" must be {bound}, e.g. {label}_pct=0.05 for 5 %"
                )
        self.side, self.size, self.limit, self.stop = side, size, limit, stop
        self.sl, self.tp, self.tag = sl, tp, tag
        self.sl_pct, self.tp_pct = sl_pct, tp_pct
        self.status = "open"
        self.triggered = stop is None
        self.fill_price = math.nan
        self.fill_bar = -1
        self.placed_bar = -1

    @property
    def is_market(self) -> bool:
        """True for an order with neither limit nor stop price."""
        return self.limit is None and self.stop is None

    @property
    def has_exits(self) -> bool:
        """True when the order sets a stop-loss or a take-profit."""
        return not (self.sl is None and self.tp is None and self.sl_pct is None and self.tp_pct is None)

    def exit_levels(self, fill_price: float) -> tuple[float | None, float | None]:
        """The stop-loss and take-profit prices for a fill at ``fill_price`` (after slippage)."""
        sl, tp, side = self.sl, self.tp, self.side
        if self.sl_pct is not None:
            sl = fill_price * (1.0 - side * self.sl_pct)
        if self.tp_pct is not None:
            tp = fill_price * (1.0 + side * self.tp_pct)
        return sl, tp

    def cancel(self) -> None:
        """Cancel the order if it has not filled yet."""
        if self.status == "open":
            self.status = "cancelled"

    def __repr__(self) -> str:
        verb = {1: "buy", -1: "sell", 0: "close"}[self.side]
        fields = [
            f"{k}={getattr(self, k)!r}"
            for k in ("size", "limit", "stop", "sl", "tp", "sl_pct", "tp_pct", "tag")
            if getattr(self, k) is not None
        ]
        return f"<Order {verb}({', '.join(fields)}) {self.status}>"


class Position:
    """The open position seen from ``next``: truthy when not flat."""

    __slots__ = ("_runner",)

    def __init__(self, runner: EventRunner) -> None:
        self._runner = runner

    @property
    def size(self) -> float:
        """Units held: positive long, negative short, 0 flat."""
        return self._runner.broker.units

    @property
    def entry_price(self) -> float:
        """Average entry price (after slippage); NaN when flat."""
        return self._runner.broker.entry_price

    @property
    def pl(self) -> float:
        """Unrealized profit and loss at the current close, before exit costs."""
        broker = self._runner.broker
        if not broker.units:
            return 0.0
        return broker.units * (self._runner.close[self._runner.i] - broker.entry_price)

    @property
    def pl_pct(self) -> float:
        """Unrealized return of the position in percent of its entry notional."""
        broker = self._runner.broker
        if not broker.units:
            return 0.0
        return self.pl / abs(broker.units * broker.entry_price) * 100.0

    @property
    def is_long(self) -> bool:
        """True when holding a long position."""
        return self._runner.broker.units > 0

    @property
    def is_short(self) -> bool:
        """True when holding a short position."""
        return self._runner.broker.units < 0

    def close(self) -> Order:
        """Same as ``Strategy.close()``."""
        return self._runner.submit(Order(0, None, None, None, None, None, None))

    def __bool__(self) -> bool:
        return self._runner.broker.units != 0

    def __repr__(self) -> str:
        return f"<Position size={self.size!r} entry_price={self.entry_price!r}>"


class Bar:
    """The current bar inside ``next``: ``i`` plus time, open, high, low, close, volume."""

    __slots__ = ("i", "_runner")

    def __init__(self, runner: EventRunner) -> None:
        self.i = -1
        self._runner = runner

    @property
    def time(self) -> pd.Timestamp:
        """The bar's timestamp."""
        return self._runner.index[self.i]

    @property
    def open(self) -> float:
        """Opening price."""
        return self._runner.open[self.i]

    @property
    def high(self) -> float:
        """Highest price."""
        return self._runner.high[self.i]

    @property
    def low(self) -> float:
        """Lowest price."""
        return self._runner.low[self.i]

    @property
    def close(self) -> float:
        """Closing price."""
        return self._runner.close[self.i]

    @property
    def volume(self) -> float:
        """Volume (NaN when the data has none)."""
        return self._runner.volume[self.i]

    def __repr__(self) -> str:
        return (
            f"<Bar i={self.i} time={self.time} open={self.open} high={self.high}"
            f" low={self.low} close={self.close}>"
        )


def resolve_strategy(strategy: Any, argument: str = "strategy") -> tuple[type[Strategy], Strategy]:
    """``(class, instance)`` of a Strategy instance, or of a subclass run with its defaults.

    The one place every entry point (``backtest``, ``sweep``, the widgets, the
    magics) turns what the user passed into a strategy; anything else is a
    TypeError naming ``argument``.

    Examples
    --------
    >>> from nbbacktest.engine.examples import SmaCross
    >>> resolve_strategy(SmaCross(fast=5))
    (<class 'nbbacktest.engine.examples.SmaCross'>, SmaCross(fast=5, slow=30))
    >>> resolve_strategy(SmaCross)[1]
    SmaCross(fast=10, slow=30)
    >>> resolve_strategy("SmaCross", "explore's strategy")
    Traceback (most recent call last):
    ...
    TypeError: explore's strategy must be a Strategy instance such as SmaCross(fast=10) or a Strategy subclass, got str 'SmaCross'
    """
    if isinstance(strategy, Strategy):
        return type(strategy), strategy
    if isinstance(strategy, type) and issubclass(strategy, Strategy) and strategy is not Strategy:
        return strategy, strategy()
    raise TypeError(
        f"{argument} must be a Strategy instance such as SmaCross(fast=10) or a Strategy"
        f" subclass, got {type(strategy).__name__} {strategy!r:.60}"
    )
