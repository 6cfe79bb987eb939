"""The bar-by-bar loop of event-driven strategies.

Each bar ``i``: market orders placed at the previous close fill at this bar's open;
then resting limit/stop orders and the position's stop-loss/take-profit are checked
against this bar's range; then ``next(bar)`` runs; with ``fill="close"`` the market
orders it placed fill at this bar's close.

Order fill prices (before slippage):

* limit buy at L: the open if it is at or below L (the bar gapped through), else L
  when the low reaches it; limit sell mirrored.
* stop buy at S: the open if it is at or above S, else S when the high reaches it;
  stop sell mirrored. A stop-limit order becomes a limit order on the bar its stop
  triggers and can fill from the next bar on.
* stop-loss and take-profit close the whole position like a stop and a limit
  order; when both are reached inside one bar, the stop-loss is assumed first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from nbbacktest.engine.broker import Broker
from nbbacktest.engine.strategy import Bar, Order, Position

if TYPE_CHECKING:
    import pandas as pd

    from nbbacktest.engine.backtest import PreparedData
    from nbbacktest.engine.strategy import Strategy


class EventRunner:
    """Runs one event-driven strategy over one instrument through a Broker."""

    def __init__(
        self, strategy: Strategy, data: PreparedData, broker: Broker, fill: str,
        frame: pd.DataFrame | None = None,
    ) -> None:
        self.strategy = strategy
        self.broker = broker
        self.fill_at_close = fill == "close"
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
        order.placed_bar = self.i
        if order.side == 0 or order.is_market:
            self.market.append(order)
        else:
            self.resting.append(order)
        return order

    def open_orders(self) -> list[Order]:
        return [o for o in (*self.market, *self.resting) if o.status == "open"]

    def current_equity(self) -> float:
        return self.broker.equity(self.close[max(self.i, 0)])

    # ------------------------------------------------------------------- loop
    def first_bar(self) -> int:
        """The first bar at which every indicator is defined."""
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
                self.check_resting(i)
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

    def execute(self, order: Order, i: int, raw_price: float) -> None:
        broker = self.broker
        if order.side == 0:
            broker.to_target(0.0, i, raw_price, order.tag)
        elif order.size is None:
            broker.to_target(float(order.side), i, raw_price, order.tag)
        elif order.size < 1:
            units = broker.units_for_fraction(order.size, raw_price, order.side)
            broker.trade_units(units, i, raw_price, order.tag)
        else:
            broker.trade_units(order.side * order.size, i, raw_price, order.tag)
        order.status, order.fill_price, order.fill_bar = "filled", raw_price, i
        if not broker.units or order.side == 0:
            self.sl = self.tp = None
        elif order.sl is not None or order.tp is not None:
            self.sl, self.tp = order.sl, order.tp

    def check_resting(self, i: int) -> None:
        o, h, lo = self.open[i], self.high[i], self.low[i]
        if self.resting:
            waiting = []
            for order in self.resting:
                if order.status != "open":
                    continue
                price = self.resting_fill_price(order, o, h, lo)
                if price is None:
                    waiting.append(order)
                else:
                    self.execute(order, i, price)
            self.resting = waiting
        units = self.broker.units
        if units and (self.sl is not None or self.tp is not None):
            price = exit_price(units, self.sl, self.tp, o, h, lo)
            if price is not None:
                self.broker.to_target(0.0, i, price, None)
                self.sl = self.tp = None

    @staticmethod
    def resting_fill_price(order: Order, o: float, h: float, lo: float) -> float | None:
        buy = order.side > 0
        if not order.triggered:
            stop = order.stop
            if buy and h >= stop or not buy and lo <= stop:
                if order.limit is not None:
                    order.triggered = True  # a stop-limit rests as a limit from the next bar
                    return None
                return max(o, stop) if buy else min(o, stop)
            return None
        limit = order.limit
        if buy:
            return o if o <= limit else (limit if lo <= limit else None)
        return o if o >= limit else (limit if h >= limit else None)


def exit_price(
    units: float, sl: float | None, tp: float | None, o: float, h: float, lo: float
) -> float | None:
    """Where a stop-loss/take-profit closes the position in this bar, if at all."""
    if units > 0:
        if sl is not None and o <= sl:
            return o
        if tp is not None and o >= tp:
            return o
        if sl is not None and lo <= sl:
            return sl
        if tp is not None and h >= tp:
            return tp
    else:
        if sl is not None and o >= sl:
            return o
        if tp is not None and o <= tp:
            return o
        if sl is not None and h >= sl:
            return sl
        if tp is not None and lo <= tp:
            return tp
    return None

