"""The bar-by-bar loop of event-driven strategies.

``next(bar)`` first runs on the first bar at which every indicator made in
``init()`` is defined (not NaN), bar 0 without indicators (see
:meth:`EventRunner.first_bar`). From then on, each bar ``i``: market orders placed
at the previous close fill at this bar's open; then resting limit/stop orders and
the position's stop-loss/take-profit are checked against this bar's range; then
``next(bar)`` runs; with ``fill="close"`` the market orders it placed fill at this
bar's close.

Order fill prices (before slippage):

* limit buy at L: the open if it is at or below L (the bar gapped through), else L
  when the low reaches it; limit sell mirrored.
* stop buy at S: the open if it is at or above S, else S when the high reaches it;
  stop sell mirrored.
* stop-limit buy (stop S, limit L): triggers when the high reaches S and fills in
  that bar at ``max(open, S)`` if that is at or below L; otherwise (the bar opened
  above L, or L < S) it rests as a limit buy at L from the next bar on. Sell
  mirrored: ``min(open, S)`` if at or above L.
* stop-loss and take-profit close the whole position like a stop and a limit
  order; when both are reached inside one bar, the stop-loss is assumed first.
* An entry that fills inside a bar (a limit, stop or stop-limit order at a price
  other than the bar's open) has its stop-loss and take-profit checked from the
  next bar on: the bar's open, high and low may all have come before the entry, so
  no price of that bar can be known to follow it. An entry at the open (a market
  order, or a gap) is checked in its own bar, like any open position. (backtesting.py
  does the same; see its issue #119.)
* Sizes: an order that would take the absolute exposure beyond the leverage limit
  (``leverage``, default 1) is reduced to the limit, or rejected when the position
  is already there (:meth:`~nbbacktest.engine.broker.Broker.capped_units`);
  ``Result.adjusted_orders`` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from nbbacktest.engine.broker import Broker
from nbbacktest.engine.orders import Bar, Order, Position

#: A stop-loss or take-profit given as a price must lie within
#: [low / PRICE_RANGE_FACTOR, high * PRICE_RANGE_FACTOR] of the bar the order is
#: placed on. Outside it the value is almost surely a fraction meant as sl_pct /
#: tp_pct (sl=0.05 on a stock at 100): an 80 % move in one trade is not a level
#: anyone places, and such a stop would never trigger.
PRICE_RANGE_FACTOR = 5.0

if TYPE_CHECKING:
    import pandas as pd

    from nbbacktest.engine.strategy import Strategy
    from nbbacktest.engine.types import PreparedData


class EventRunner:
    """Runs one event-driven strategy over one instrument through a Broker."""

    def __init__(
        self, strategy: Strategy, data: PreparedData, broker: Broker, fill: str,
        frame: pd.DataFrame | None = None, leverage: float | None = None,
    ) -> None:
        self.strategy = strategy
        self.broker = broker
        self.fill_at_close = fill == "close"
        self.leverage = 1.0 if leverage is None else float(leverage)
        self.index = data.index
        # Python lists: indexing one is several times faster than a numpy scalar read.
        self.open = data.open.tolist()
        self.high = data.high.tolist()
        self.low = data.low.tolist()
        self.close = data.close.tolist()
        self.volume = data.volume.tolist()
        # The strategy's own frame (``data.run_frame()``): indicators read what it reads.
        self.frame = data.run_frame() if frame is None else frame
        self.n = len(self.close)
        self.i = -1
        self.market: list[Order] = []
        self.resting: list[Order] = []
        self.sl: float | None = None
        self.tp: float | None = None
        # The first bar on which the stop-loss/take-profit may trigger (see the module docstring).
        self.exits_from = 0
        self.indicators: list[np.ndarray] = []
        self.position = Position(self)

    # ----------------------------------------------------------- strategy calls
    def add_indicator(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> np.ndarray:
        if self.i >= 0:
            raise RuntimeError("indicator() is computed once: call it in init(), not in next()")
        values = fn(self.frame, *args, **kwargs)
        array = np.asarray(values, dtype=float)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.shape != (self.n,):
            raise ValueError(
                f"indicator {getattr(fn, '__name__', fn)!r} returned shape {array.shape};"
                f" it must return one value per bar ({self.n},)"
            )
        self.indicators.append(array)
        return array

    def submit(self, order: Order) -> Order:
        if order.sl is not None or order.tp is not None:
            self.check_levels(order)
        order.placed_bar = self.i
        if order.side == 0 or order.is_market:
            self.market.append(order)
        else:
            self.resting.append(order)
        return order

    def check_levels(self, order: Order) -> None:
        """Refuse a stop-loss/take-profit price that cannot be a price on this data."""
        at = max(self.i, 0)
        low, high = self.low[at] / PRICE_RANGE_FACTOR, self.high[at] * PRICE_RANGE_FACTOR
        verb = "buy" if order.side > 0 else "sell"
        for label, price in (("sl", order.sl), ("tp", order.tp)):
            if price is not None and not low <= price <= high:
                what = "stop-loss" if label == "sl" else "take-profit"
                raise ValueError(
                    f"{verb}({label}={price!r}): {price!r} cannot be a {what} price on this data"
                    f" (bar {at} traded {self.low[at]:g} to {self.high[at]:g}; a price level must"
                    f" lie between {low:g} and {high:g}). For a {what} as a fraction of the fill"
                    f" price, pass {label}_pct={price!r}"
                )

    def open_orders(self) -> list[Order]:
        return [o for o in (*self.market, *self.resting) if o.status == "open"]

    def current_equity(self) -> float:
        return self.broker.equity(self.close[max(self.i, 0)])

    # ------------------------------------------------------------------- loop
    def first_bar(self) -> int:
        """The first bar on which ``next`` runs: where every indicator is defined.

        The largest index of a first non-NaN value over the indicators, 0 without
        indicators, ``n`` (``next`` never runs) when an indicator is all NaN. A NaN
        later on does not stop ``next``. ``rolling(20).mean()`` is first defined
        at bar 19, so ``next`` starts there and its market orders fill at bar 20's open.
        """
        start = 0
        for values in self.indicators:
            defined = np.flatnonzero(~np.isnan(values))
            start = max(start, int(defined[0]) if len(defined) else self.n)
        return start

    def run(self) -> None:
        strategy = self.strategy
        strategy.init()
        step = strategy.next
        bar = Bar(self)
        opens, closes = self.open, self.close
        fill_at_close = self.fill_at_close
        for i in range(self.first_bar(), self.n):
            self.i = i
            if self.market:
                self.fill_market(i, opens[i])
            if self.resting or self.sl is not None or self.tp is not None:
                self.check_resting(i, opens[i])
            bar.i = i
            step(bar)
            if fill_at_close and self.market:
                self.fill_market(i, closes[i])

    # ------------------------------------------------------------------ fills
    def fill_market(self, i: int, raw_price: float) -> None:
        orders, self.market = self.market, []
        for order in orders:
            if order.status == "open":
                self.execute(order, i, raw_price)

    def execute(self, order: Order, i: int, raw_price: float, in_bar: bool = False) -> None:
        """Fill ``order`` at ``raw_price`` on bar ``i``; ``in_bar``: not at the bar's open."""
        broker = self.broker
        held = broker.units
        if order.side == 0:
            broker.to_target(0.0, i, raw_price, order.tag)
        elif order.size is None:
            broker.to_target(float(order.side), i, raw_price, order.tag)
        else:
            if order.size < 1:
                units = broker.units_for_fraction(order.size, raw_price, order.side)
            else:
                units = order.side * order.size
            if not broker.fractional:
                units = float(math.trunc(units))  # whole units first: the cap sees what trades
            if units:
                units = broker.capped_units(units, i, raw_price, self.leverage, order.tag)
                if not units:
                    order.status = "rejected"
                    return
            broker.trade_units(units, i, raw_price, order.tag)
        order.status, order.fill_price, order.fill_bar = "filled", raw_price, i
        units = broker.units
        if not units or order.side == 0:
            self.sl = self.tp = None
        elif order.has_exits:
            self.sl, self.tp = order.exit_levels(broker._slipped(raw_price, order.side))
        elif (units > 0) != (held > 0):
            # A new position (from flat, or reversed) without exits of its own: the old
            # side's stop-loss would sit on the wrong side of the price.
            self.sl = self.tp = None
        if in_bar and units and ((units > 0) != (held > 0) or abs(units) > abs(held)):
            # Units entered inside the bar: their exits wait for the next bar. (A fill
            # that only reduced the position leaves units held since the open.)
            self.exits_from = i + 1

    def check_resting(self, i: int, o: float) -> None:
        h, lo = self.high[i], self.low[i]
        if self.resting:
            waiting = []
            for order in self.resting:
                if order.status != "open":
                    continue
                price = self.resting_fill_price(order, o, h, lo)
                if price is None:
                    waiting.append(order)
                else:
                    self.execute(order, i, price, in_bar=price != o)
            self.resting = waiting
        units = self.broker.units
        if units and (self.sl is not None or self.tp is not None) and i >= self.exits_from:
            hit = exit_price(units, self.sl, self.tp, o, h, lo)
            if hit is not None:
                self.broker.to_target(0.0, i, hit[0], None, hit[1])
                self.sl = self.tp = None

    @staticmethod
    def resting_fill_price(order: Order, o: float, h: float, lo: float) -> float | None:
        buy = order.side > 0
        if not order.triggered:
            stop = order.stop  # set: an order without a stop starts triggered
            if stop is not None and (h >= stop if buy else lo <= stop):
                price = max(o, stop) if buy else min(o, stop)
                limit = order.limit
                if limit is None or (price <= limit if buy else price >= limit):
                    return price
                # Triggered beyond the limit (a gap through it, or a limit on the other
                # side of the stop): whether the bar came back to the limit after the
                # trigger is unknown, so it rests as a limit order from the next bar.
                order.triggered = True
            return None
        limit = order.limit
        if limit is None:  # never: a resting order that is not a stop is a limit order
            return None
        if buy:
            return o if o <= limit else (limit if lo <= limit else None)
        return o if o >= limit else (limit if h >= limit else None)


def exit_price(
    units: float, sl: float | None, tp: float | None, o: float, h: float, lo: float
) -> tuple[float, str] | None:
    """Where a stop-loss/take-profit closes the position in this bar, and which, if at all.

    Examples
    --------
    >>> exit_price(10.0, sl=95.0, tp=110.0, o=100.0, h=104.0, lo=94.0)
    (95.0, 'stop-loss')
    >>> exit_price(10.0, sl=95.0, tp=110.0, o=112.0, h=113.0, lo=111.0)
    (112.0, 'take-profit')
    """
    if units > 0:
        if sl is not None and o <= sl:
            return o, "stop-loss"
        if tp is not None and o >= tp:
            return o, "take-profit"
        if sl is not None and lo <= sl:
            return sl, "stop-loss"
        if tp is not None and h >= tp:
            return tp, "take-profit"
    else:
        if sl is not None and o >= sl:
            return o, "stop-loss"
        if tp is not None and o <= tp:
            return o, "take-profit"
        if sl is not None and h >= sl:
            return sl, "stop-loss"
        if tp is not None and lo <= tp:
            return tp, "take-profit"
    return None

