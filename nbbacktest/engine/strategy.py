"""The Strategy base class: parameters plus a vectorized or an event-driven body.

A strategy is either *vectorized*, returning the target exposure of every bar from
``signals(data)``, or *event-driven*, acting bar by bar in ``next(bar)`` with
``buy``/``sell``/``close``. Both paths go through the same :class:`~.broker.Broker`,
so the same rules written both ways produce the same trades and equity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from nbbacktest.engine.indicators import compute_indicator
from nbbacktest.engine.orders import Bar, Order, Position, Runner
from nbbacktest.engine.params import Param, bind_params, collect_params
from nbbacktest.engine.positions import Trade

if TYPE_CHECKING:
    from nbbacktest.engine.types import PreparedData

__all__ = ["RESERVED_NAMES", "Bar", "Order", "Position", "Strategy", "Trade", "resolve_strategy"]

#: Attribute names a parameter may not take: the Strategy API uses them.
RESERVED_NAMES = frozenset(
    {
        "data", "position", "equity", "cash", "orders", "seed", "rng", "buy", "sell",
        "close", "I", "indicator", "init", "next", "signals", "params", "param_values",
        "with_params", "bar", "trades",
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

    #: Event-driven strategies: keep each filled order as its own trade with its own
    #: stop-loss/take-profit/trailing stop (``self.trades``), as backtesting.py's
    #: trades list does, instead of one position with an average entry price. A
    #: setting of the strategy's logic, not a parameter.
    separate_trades: ClassVar[bool] = False

    # Set on the private copy that runs a backtest.
    data: pd.DataFrame
    _runner: Runner | None = None
    _prepared: PreparedData | None = None  # the data of the run: the key of self.I's memo
    _seed: int = 0
    _rng: np.random.Generator | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        params = collect_params(cls, Strategy)
        params.pop("separate_trades", None)  # a class setting, not a parameter
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
        return self.param_values == other.param_values

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, tuple(self.param_values.items())))

    def __reduce__(self) -> tuple:
        return (_rebuild_strategy, (type(self), self.param_values))

    def __indicator_key__(self) -> tuple:
        # What self.I's memo keys a strategy by (a lambda closing over self): all
        # that an indicator made from it may depend on besides the data.
        return (type(self), tuple(self.param_values.items()), self._seed)

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

    # ------------------------------------------------------------- indicators
    def I(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:  # noqa: E743 - backtesting.py's name
        """``fn(*args, **kwargs)``, computed once per process for the data the run is on.

        The idiomatic way to compute an indicator, in ``signals(data)`` or in
        ``init()``: every run of a sweep on the same engine and data that asks for
        the same function with the same arguments gets the stored value instead of
        computing it again. ``fn`` is any function (a TA-Lib one too:
        ``self.I(talib.SMA, data["Close"], 20)``); a column of the data is keyed by
        which column it is, other arguments by value (see
        :mod:`nbbacktest.engine.indicators` for the key, the budget and what is
        computed without the memo). The value is read-only: copy it to change it.

        In ``signals`` it is what ``fn`` returns (a Series stays a Series). In an
        event-driven ``init`` it is a float numpy array of one value per bar, and
        ``next`` first runs where every such indicator is defined (the warm-up,
        see :meth:`next`); ``next`` itself cannot make indicators.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> def sma(values, n):
        ...     return values.rolling(n).mean()
        >>> class SmaCross(nbb.Strategy):
        ...     fast, slow = 10, 30
        ...     def signals(self, data):
        ...         fast = self.I(sma, data["Close"], self.fast)
        ...         slow = self.I(sma, data["Close"], self.slow)
        ...         return (fast > slow).astype(float)
        >>> nbb.backtest(SmaCross(), nbb.load_sample("daily")).stats["trades"] > 0
        True
        """
        runner = self._runner
        if runner is not None:
            runner.check_init("I")
        value = compute_indicator(self._prepared, fn, args, kwargs)
        if runner is None:
            return value
        return runner.add_indicator(value, getattr(fn, "__name__", repr(fn)))

    def indicator(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> np.ndarray:
        """Event-driven ``init()``: ``self.I(fn, self.data, *args, **kwargs)``.

        The older spelling of :meth:`I` with the data as first argument: a float
        numpy array of one value per bar, memoized the same way. ``next`` is first
        called at the first bar where every indicator is defined (not NaN): the
        warm-up (see :meth:`next`).
        """
        self._event("indicator")
        return self.I(fn, self.data, *args, **kwargs)

    # --------------------------------------------------- event-driven interface

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
        trail: float | None = None,
        trail_pct: float | None = None,
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

        ``trail`` (a price distance) or ``trail_pct`` (a fraction) adds a trailing
        stop: it starts at the fill price minus the distance, rises after each bar's
        close to that bar's high minus the distance, and exits like a stop from the
        next bar on (``exit_reason == "trailing-stop"``). A buy that adds to a long
        averages the entry price; if it has exits of its own they replace the
        position's (with ``separate_trades`` it opens a trade of its own).

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
        return self._event("buy").submit(
            Order(1, size, limit, stop, sl, tp, tag, sl_pct, tp_pct, trail, trail_pct)
        )

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
        trail: float | None = None,
        trail_pct: float | None = None,
    ) -> Order:
        """Place a sell order: the mirror of :meth:`buy` (``size=None`` targets all-in short).

        ``sl_pct`` puts the stop-loss above the fill price and ``tp_pct`` the
        take-profit below it (``tp_pct`` below 1).
        """
        return self._event("sell").submit(
            Order(-1, size, limit, stop, sl, tp, tag, sl_pct, tp_pct, trail, trail_pct)
        )

    def close(self, tag: str | None = None, *, fraction: float = 1.0) -> Order:
        """Close the position, or ``fraction`` of it, at the next fill.

        A whole close cancels the exits. ``fraction=0.5`` sells half the units of a
        long (buys back half a short), rounded toward zero with ``fractional=False``
        (a close that rounds to 0 units is rejected and listed in
        ``Result.adjusted_orders``); the part closed is its own row of
        ``Result.trades`` at the average entry price, and the rest keeps its exits.
        With ``separate_trades`` it closes that fraction of every open trade.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class Scale(nbb.Strategy):
        ...     def next(self, bar):
        ...         if bar.i == 0:
        ...             self.buy(size=10)
        ...         elif bar.i == 5:
        ...             self.close(fraction=0.5)
        >>> nbb.backtest(Scale, nbb.load_sample("daily")).trades["size"].tolist()
        [5.0]
        """
        return self._event("close").close_part(fraction, None, tag)

    @property
    def trades(self) -> list[Trade]:
        """Open trades of a ``separate_trades`` strategy, oldest first (empty otherwise).

        Each :class:`~nbbacktest.engine.positions.Trade` has ``size``,
        ``entry_price``, ``entry_bar``, ``tag``, its own ``sl``/``tp``/``trail``/
        ``trail_pct`` (settable; checked from the next bar) and ``close(fraction)``.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class Ladder(nbb.Strategy):
        ...     separate_trades = True
        ...     def next(self, bar):
        ...         if bar.i in (0, 1):
        ...             self.buy(size=10, tp_pct=0.02 * (bar.i + 1))
        ...         elif bar.i == 60 and self.trades:
        ...             self.trades[0].close()
        >>> trades = nbb.backtest(Ladder, nbb.load_sample("daily")).trades
        >>> len(trades), trades["size"].tolist()
        (2, [10.0, 10.0])
        """
        return list(self._event("trades").trades)

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

    def _event(self, what: str) -> Runner:
        runner = self._runner
        if runner is None:
            raise RuntimeError(
                f"{what}() belongs to event-driven strategies and works only during a"
                " backtest, inside init() or next(bar)"
            )
        return runner


def _rebuild_strategy(cls: type[Strategy], values: dict[str, Any]) -> Strategy:
    return cls._from_values(values)


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
    >>> resolve_strategy("SmaCross", "explore's strategy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    TypeError: explore's strategy must be a Strategy instance such as ... subclass, got str 'SmaCross'
    """
    if isinstance(strategy, Strategy):
        return type(strategy), strategy
    if isinstance(strategy, type) and issubclass(strategy, Strategy) and strategy is not Strategy:
        return strategy, strategy()
    raise TypeError(
        f"{argument} must be a Strategy instance such as SmaCross(fast=10) or a Strategy"
        f" subclass, got {type(strategy).__name__} {strategy!r:.60}"
    )
