"""What an event-driven strategy handles: its orders, its position and the current bar.

``buy``/``sell``/``close`` (:class:`~nbbacktest.engine.strategy.Strategy`) place an
:class:`Order`; ``self.position`` is a :class:`Position`; ``next(bar)`` gets a
:class:`Bar`. Each reads the loop that runs the strategy through :class:`Runner`,
the few members of :class:`~nbbacktest.engine.event_driven.EventRunner` they use;
the fill rules are in :mod:`nbbacktest.engine.event_driven`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from nbbacktest.engine.broker import Broker
    from nbbacktest.engine.positions import Exits, Trade

__all__ = ["Bar", "Order", "Position", "Runner"]


class Runner(Protocol):
    """The event loop as a strategy, its position and its bar see it (``EventRunner``).

    ``i`` is the current bar; the price lists hold one value per bar.
    """

    broker: Broker
    position: Position
    i: int
    index: pd.DatetimeIndex
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float]

    def check_init(self, what: str) -> None:
        """Raise unless the strategy's ``init()`` is running: indicators are made there."""

    def add_indicator(self, values: Any, name: str) -> np.ndarray:
        """Register an indicator's values (one per bar) for the warm-up; the float array."""

    def submit(self, order: Order) -> Order:
        """Queue an order for its next fill."""

    def open_orders(self) -> list[Order]:
        """Orders placed and not yet filled or cancelled."""

    def current_equity(self) -> float:
        """Cash plus the position valued at the current bar's close."""

    def exits_view(self) -> Exits | None:
        """The exits ``position.sl`` etc. read: the position's, or the oldest open trade's."""

    def set_exits(self, trade: Exits | None, levels: dict[str, float | None]) -> None:
        """Change the exits of ``trade``, or of the position (every open trade) when None."""

    def close_part(self, fraction: float, trade: Exits | None, tag: str | None) -> Order:
        """Submit an order closing ``fraction`` of the position, or of ``trade``."""

    @property
    def trades(self) -> list[Trade]:
        """Open trades of a ``separate_trades`` strategy."""


class Order:
    """An order placed by ``buy``/``sell``/``close``.

    ``side`` is 1 (buy), -1 (sell) or 0 (close). ``status`` is "open", "filled",
    "cancelled" or "rejected" (by the leverage limit, or a partial close that rounds
    to 0 units); once filled, ``fill_price`` (raw, before slippage) and ``fill_bar``
    are set. ``trail``/``trail_pct`` give the position a trailing stop (a price
    distance or a fraction; see :mod:`nbbacktest.engine.positions`). A close order
    closes ``fraction`` of the position (1: all of it), or of ``trade`` alone.

    Examples
    --------
    >>> sl, tp = Order(1, None, None, None, None, None, None, sl_pct=0.05, tp_pct=0.1).exit_levels(100.0)
    >>> round(sl, 6), round(tp, 6)
    (95.0, 110.0)
    >>> Order(1, None, None, None, 95.0, None, None, sl_pct=0.05)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: buy(sl=95.0, sl_pct=0.05): give the stop-loss as a price (sl) or as a fraction ..., not both
    """

    __slots__ = (
        "side", "size", "limit", "stop", "sl", "tp", "sl_pct", "tp_pct", "tag", "status",
        "triggered", "fill_price", "fill_bar", "placed_bar", "trail", "trail_pct", "fraction",
        "trade",
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
        trail: float | None = None,
        trail_pct: float | None = None,
        fraction: float = 1.0,
    ) -> None:
        verb = {1: "buy", -1: "sell", 0: "close"}[side]
        if isinstance(fraction, bool) or not (isinstance(fraction, (int, float, np.number))
                                               and 0 < fraction <= 1):
            raise ValueError(f"close(fraction={fraction!r}): the fraction to close must be in (0, 1]")
        self.fraction = float(fraction)
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
        for label, pct, price in (("sl", sl_pct, sl), ("tp", tp_pct, tp)):
            if pct is None:
                continue
            what = "stop-loss" if label == "sl" else "take-profit"
            if price is not None:
                raise ValueError(
                    f"{verb}({label}={price!r}, {label}_pct={pct!r}): give the {what} as a"
                    f" price ({label}) or as a fraction of the fill price ({label}_pct), not both"
                )
            # A long's stop-loss and a short's take-profit lie below the fill: under 100 %.
            below = (label == "sl") == (side > 0)
            if (isinstance(pct, bool) or not isinstance(pct, (int, float, np.number))
                    or not math.isfinite(pct) or not pct > 0 or (below and pct >= 1)):
                bound = "between 0 and 1 (exclusive)" if below else "a positive number"
                raise ValueError(
                    f"{verb}({label}_pct={pct!r}): the {what} as a fraction of the fill price"
                    f" must be {bound}, e.g. {label}_pct=0.05 for 5 %"
                )
        for label, value in (("trail", trail), ("trail_pct", trail_pct)):
            if value is None:
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                    or not math.isfinite(value) or not value > 0
                    or (label == "trail_pct" and value >= 1)):
                raise ValueError(
                    f"{verb}({label}={value!r}): the trailing stop's distance must be a positive"
                    + (" pct below 1, e.g. trail_pct=0.05 for 5 %" if label == "trail_pct"
                       else " price distance, e.g. trail=2.5; for a pct pass trail_pct")
                )
        if trail is not None and trail_pct is not None:
            raise ValueError(f"{verb}(trail={trail!r}, trail_pct={trail_pct!r}): give one of them")
        self.trail, self.trail_pct = trail, trail_pct
        self.trade: Any = None
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
        return not (self.sl is None and self.tp is None and self.sl_pct is None and self.tp_pct is None
                    and self.trail is None and self.trail_pct is None)

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
            for k in ("size", "limit", "stop", "sl", "tp", "sl_pct", "tp_pct", "trail", "trail_pct",
                      "tag")
            if getattr(self, k) is not None
        ]
        return f"<Order {verb}({', '.join(fields)}) {self.status}>"


class Position:
    """The open position seen from ``next``: truthy when not flat.

    Its exits can change while it is open: ``self.position.sl = 95.0``, ``.tp``,
    ``.trail`` (a price distance) or ``.trail_pct`` (a fraction), or several at once
    with :meth:`set_exits`; None removes one. A new level is checked from the next
    bar on. A trailing stop set this way starts at the current close minus the
    distance (a long) and moves from the next bar's extreme on. With
    ``separate_trades`` the setters change every open trade and the getters read
    the oldest one (each :class:`~nbbacktest.engine.positions.Trade` has its own).
    """

    __slots__ = ("_runner",)

    def __init__(self, runner: Runner) -> None:
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

    @property
    def sl(self) -> float | None:
        """The stop-loss price, or None."""
        exits = self._runner.exits_view()
        return None if exits is None else exits.sl

    @sl.setter
    def sl(self, price: float | None) -> None:
        self._runner.set_exits(None, {"sl": price})

    @property
    def tp(self) -> float | None:
        """The take-profit price, or None."""
        exits = self._runner.exits_view()
        return None if exits is None else exits.tp

    @tp.setter
    def tp(self, price: float | None) -> None:
        self._runner.set_exits(None, {"tp": price})

    @property
    def trail(self) -> float | None:
        """The trailing stop's price distance, or None."""
        exits = self._runner.exits_view()
        return None if exits is None else exits.trail

    @trail.setter
    def trail(self, distance: float | None) -> None:
        self._runner.set_exits(None, {"trail": distance})

    @property
    def trail_pct(self) -> float | None:
        """The trailing stop's distance as a fraction, or None."""
        exits = self._runner.exits_view()
        return None if exits is None else exits.trail_pct

    @trail_pct.setter
    def trail_pct(self, fraction: float | None) -> None:
        self._runner.set_exits(None, {"trail_pct": fraction})

    @property
    def stop(self) -> float | None:
        """The trailing stop's current level (read only), or None."""
        exits = self._runner.exits_view()
        return None if exits is None else exits.stop

    def set_exits(self, **levels: float | None) -> None:
        """Change several exits at once: ``set_exits(sl=95.0, tp=None, trail_pct=0.03)``.

        Keywords: ``sl``, ``tp`` (prices), ``trail`` (price distance), ``trail_pct``
        (fraction); None removes that exit. Prices are checked like ``buy(sl=...)``'s.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class BreakEven(nbb.Strategy):
        ...     def next(self, bar):
        ...         if not self.position:
        ...             self.buy(sl_pct=0.05)
        ...         elif self.position.pl_pct > 3 and self.position.sl < self.position.entry_price:
        ...             self.position.set_exits(sl=self.position.entry_price, trail_pct=0.05)
        >>> reasons = set(nbb.backtest(BreakEven, nbb.load_sample("daily")).trades.exit_reason)
        >>> reasons <= {"stop-loss", "trailing-stop"}
        True
        """
        self._runner.set_exits(None, levels)

    def close(self, tag: str | None = None, *, fraction: float = 1.0) -> Order:
        """Same as ``Strategy.close(tag, fraction=fraction)``."""
        return self._runner.close_part(fraction, None, tag)

    def __bool__(self) -> bool:
        return self._runner.broker.units != 0

    def __repr__(self) -> str:
        return f"<Position size={self.size!r} entry_price={self.entry_price!r}>"


class Bar:
    """The current bar inside ``next``: ``i`` plus time, open, high, low, close, volume."""

    __slots__ = ("i", "_runner")

    def __init__(self, runner: Runner) -> None:
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
