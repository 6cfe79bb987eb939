"""The bar-by-bar loop of event-driven strategies.

``next(bar)`` first runs on the first bar at which every indicator made in
``init()`` is defined (not NaN), bar 0 without indicators (see
:meth:`EventRunner.first_bar`), and never before the bar a run trades from
(``PreparedData.trading_from``: the bars before are indicator history). From
then on, each bar ``i``: market orders placed at the previous close fill at this
bar's open; then resting limit/stop orders and the position's
stop-loss/take-profit are checked against this bar's range; then
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
* Trailing stops (``trail=``/``trail_pct=``) move once per bar, after it closes,
  from its high (long) or low (short), and exit like a stop-loss from the next bar
  on (:mod:`nbbacktest.engine.positions`); the tighter of it and the stop-loss acts.
* ``close(fraction=f)`` closes ``f`` of the position's units (of each trade's with
  ``separate_trades``), rounded toward zero with ``fractional=False``; a close that
  rounds to 0 units is rejected and noted. The part closed is its own trade row, at
  the average entry price; the exits stay on the rest.
* Adding to a position (pyramiding) averages its entry price, weighted by units and
  after slippage; an add with exits of its own replaces the position's exits.
* ``separate_trades = True`` on the strategy keeps each filled order as its own
  trade with its own exits (``self.trades``): an order against the open trades closes
  them oldest first, the rest opens a new trade; each closes as its own trade row.
* Sizes: an order that would take the absolute exposure beyond the leverage limit
  (``leverage``, default 1) is reduced to the limit, or rejected when the position
  is already there (:meth:`~nbbacktest.engine.broker.Broker.capped_units`);
  ``Result.adjusted_orders`` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from nbbacktest.engine.broker import Broker
from nbbacktest.engine.orders import Bar, Order, Position
from nbbacktest.engine.positions import Exits, Trade, close_trade, exit_price, restore_average

#: A stop-loss or take-profit given as a price must lie within
#: [low / PRICE_RANGE_FACTOR, high * PRICE_RANGE_FACTOR] of the bar the order is
#: placed on. Outside it the value is almost surely a fraction meant as sl_pct /
#: tp_pct (sl=0.05 on a stock at 100): an 80 % move in one trade is not a level
#: anyone places, and such a stop would never trigger.
PRICE_RANGE_FACTOR = 5.0

__all__ = ["PRICE_RANGE_FACTOR", "EventRunner", "exit_price"]

if TYPE_CHECKING:
    import pandas as pd

    from nbbacktest.engine.strategy import Strategy
    from nbbacktest.engine.types import PreparedData


class EventRunner:
    """Runs one event-driven strategy over one instrument through a Broker."""

    def __init__(
        self, strategy: Strategy, data: PreparedData, broker: Broker, fill: str,
        frame: pd.DataFrame | None = None, leverage: float | None = None, start: int = 0,
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
        # The first bar ``next`` may run on: the bars before are indicator history only.
        self.start = start
        self.i = -1
        self.market: list[Order] = []
        self.resting: list[Order] = []
        # The position's exits; with separate_trades each open trade has its own instead.
        self.exits = Exits()
        self.separate = bool(getattr(strategy, "separate_trades", False))
        self.trades: list[Trade] = []
        self.indicators: list[np.ndarray] = []
        self.position = Position(self)

    # ----------------------------------------------------------- strategy calls
    def check_init(self, what: str) -> None:
        if self.i >= 0:
            raise RuntimeError(f"{what}() is computed once: call it in init(), not in next()")

    def add_indicator(self, values: Any, name: str) -> np.ndarray:
        array = np.asarray(values, dtype=float)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.shape != (self.n,):
            raise ValueError(
                f"indicator {name!r} returned shape {array.shape};"
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
        self.check_prices(order.side, {"sl": order.sl, "tp": order.tp})

    def check_prices(self, side: float, levels: Mapping[str, float | None]) -> None:
        """Refuse stop-loss/take-profit prices that cannot be prices on this data."""
        at = max(self.i, 0)
        low, high = self.low[at] / PRICE_RANGE_FACTOR, self.high[at] * PRICE_RANGE_FACTOR
        verb = "buy" if side > 0 else "sell"
        for label, price in levels.items():
            if price is not None and not low <= price <= high:
                what = "stop-loss" if label == "sl" else "take-profit"
                raise ValueError(
                    f"{verb}({label}={price!r}): {price!r} cannot be a {what} price on this data"
                    f" (bar {at} traded {self.low[at]:g} to {self.high[at]:g}; a price level must"
                    f" lie between {low:g} and {high:g}). For a {what} as a fraction of the fill"
                    f" price, pass {label}_pct={price!r}"
                )

    def exits_view(self) -> Exits | None:
        if self.separate:
            return self.trades[0] if self.trades else None
        return self.exits if self.broker.units else None

    def set_exits(self, trade: Exits | None, levels: dict[str, float | None]) -> None:
        """Change exits of ``trade`` or of the position (see ``Position.set_exits``)."""
        unknown = sorted(set(levels) - {"sl", "tp", "trail", "trail_pct"})
        if unknown:
            raise TypeError(f"set_exits() got unknown exit(s) {unknown}: use sl, tp, trail, trail_pct")
        units = self.broker.units
        targets: list[Exits] = [trade] if trade is not None else (
            list(self.trades) if self.separate else ([self.exits] if units else [])
        )
        if not targets:
            raise RuntimeError("there is no open position to set exits on: pass sl=/tp= to buy()/sell()")
        prices = {k: v for k, v in levels.items() if k in ("sl", "tp") and v is not None}
        side = 1.0 if units > 0 else -1.0
        probe = Order(1 if side > 0 else -1, None, None, None, prices.get("sl"), None, None,
                      trail=levels.get("trail"), trail_pct=levels.get("trail_pct"))
        del probe  # built for its checks of the values only
        for label, price in prices.items():
            if not (isinstance(price, (int, float, np.number)) and price > 0):
                raise ValueError(f"position.{label} = {price!r}: must be a positive price or None")
        self.check_prices(side, prices)
        close = self.close[max(self.i, 0)]
        for exits in targets:
            for label in ("sl", "tp"):
                if label in levels:
                    setattr(exits, label, levels[label])
            if "trail" in levels or "trail_pct" in levels:
                trail, pct = levels.get("trail"), levels.get("trail_pct")
                if trail is None and pct is None:
                    exits.trail = exits.trail_pct = exits.stop = None
                else:
                    # A trailing stop set on an open position starts at this close.
                    exits.arm_trail(side, close, trail, pct, self.i, counts=False)

    def close_part(self, fraction: float, trade: Exits | None, tag: str | None) -> Order:
        order = Order(0, None, None, None, None, None, tag, fraction=fraction)
        order.trade = trade
        return self.submit(order)

    def close_trade_order(self, trade: Trade, fraction: float) -> Order:
        return self.close_part(fraction, trade, None)

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
        for i in range(max(self.first_bar(), self.start), self.n):
            self.i = i
            if self.market:
                self.fill_market(i, opens[i])
            if self.resting or self.exits.armed or self.trades:
                self.check_resting(i, opens[i])
            bar.i = i
            step(bar)
            if fill_at_close and self.market:
                self.fill_market(i, closes[i], at_close=True)
            if self.exits.stop is not None or self.trades:
                self.ratchet(i)

    def ratchet(self, i: int) -> None:
        """Move the trailing stops after bar ``i`` closed."""
        h, lo = self.high[i], self.low[i]
        if self.separate:
            for trade in self.trades:
                trade.ratchet(trade.size, i, h, lo)
        elif self.broker.units:
            self.exits.ratchet(self.broker.units, i, h, lo)

    def finish(self, price: float) -> None:
        """``close_at_end``: close what is open at the last close, reason "end"."""
        bar = self.n - 1
        if self.separate:
            for trade in list(self.trades):
                close_trade(self.broker, self.trades, trade, abs(trade.size), bar, price, "end")
        elif self.broker.units:
            self.broker.to_target(0.0, bar, price, reason="end")

    # ------------------------------------------------------------------ fills
    def fill_market(self, i: int, raw_price: float, at_close: bool = False) -> None:
        orders, self.market = self.market, []
        for order in orders:
            if order.status == "open":
                self.execute(order, i, raw_price, at_close=at_close)

    def execute(
        self, order: Order, i: int, raw_price: float, in_bar: bool = False, at_close: bool = False
    ) -> None:
        """Fill ``order`` at ``raw_price`` on bar ``i``; ``in_bar``: not at the bar's open."""
        if self.separate:
            self.execute_separate(order, i, raw_price, in_bar, at_close)
            return
        broker = self.broker
        held = broker.units
        partial = order.side == 0 and order.fraction < 1.0
        if partial:
            units = self.part_of(held, order, i, raw_price)
            if held and not units:
                return
            broker.trade_units(units, i, raw_price, order.tag)
        elif order.side == 0:
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
        exits = self.exits
        if not units or (order.side == 0 and not partial):
            exits.clear()
        elif partial:
            pass  # the rest of the position keeps its exits
        elif order.has_exits:
            exits.take(order, broker._slipped(raw_price, order.side), i, not (in_bar or at_close))
        elif (units > 0) != (held > 0):
            # A new position (from flat, or reversed) without exits of its own: the old
            # side's stop-loss would sit on the wrong side of the price.
            exits.clear()
        if in_bar and units and ((units > 0) != (held > 0) or abs(units) > abs(held)):
            # Units entered inside the bar: their exits wait for the next bar. (A fill
            # that only reduced the position leaves units held since the open.)
            exits.exits_from = i + 1

    def part_of(self, held: float, order: Order, i: int, raw_price: float) -> float:
        """Units that close ``order.fraction`` of ``held`` (toward zero with whole units).

        A close that rounds to nothing is rejected and noted (``Result.adjusted_orders``).
        """
        units = -held * order.fraction
        if not self.broker.fractional:
            units = float(math.trunc(units))
        if held and not units:
            order.status = "rejected"
            self.broker.notes.append((
                i, -held * order.fraction, 0.0, self.broker._slipped(raw_price, -held), "rejected",
                f"close(fraction={order.fraction:g}) of {abs(held):g} units rounds to 0 whole units",
                order.tag,
            ))
        return units

    def execute_separate(
        self, order: Order, i: int, raw_price: float, in_bar: bool, at_close: bool
    ) -> None:
        """Fill ``order`` with ``separate_trades``: close open trades oldest first, open the rest."""
        broker, trades = self.broker, self.trades
        if order.side == 0:
            targets = list(trades) if order.trade is None else [order.trade]
            if order.trade is not None and order.trade not in trades:
                order.status = "cancelled"  # that trade closed before this order's fill
                return
            closed = False
            for trade in targets:
                units = abs(trade.size) if order.fraction == 1.0 else -self.part_of(
                    abs(trade.size), order, i, raw_price)
                if units:  # one trade rounding to nothing does not stop the others
                    close_trade(broker, trades, trade, units, i, raw_price, "signal")
                    closed = True
            if closed or not targets:
                order.status, order.fill_price, order.fill_bar = "filled", raw_price, i
            return
        side = order.side
        if order.size is None:
            # All-in: close the other side, then add up to exposure 1.
            for trade in [t for t in trades if (t.size > 0) != (side > 0)]:
                close_trade(broker, trades, trade, abs(trade.size), i, raw_price, "signal")
            units = broker.units_for_fraction(1.0, raw_price, side) - broker.units
            if units * side < 0:
                units = 0.0
        elif order.size < 1:
            units = broker.units_for_fraction(order.size, raw_price, side)
        else:
            units = side * order.size
        if not broker.fractional:
            units = float(math.trunc(units))
        for trade in list(trades):
            if not units or (trade.size > 0) == (units > 0):
                break
            take = min(abs(units), abs(trade.size))
            close_trade(broker, trades, trade, take, i, raw_price, "signal")
            units -= math.copysign(take, units)
        if units:
            units = broker.capped_units(units, i, raw_price, self.leverage, order.tag)
            if not units:
                order.status = "rejected"
                return
            price = broker._slipped(raw_price, units)
            broker.entry_cost = 0.0  # read back as this fill's entry commission
            broker.trade_units(units, i, raw_price, order.tag)
            trade = Trade(units, price, i, broker.entry_cost, order.tag)
            trade.closer = self.close_trade_order
            if order.has_exits:
                trade.take(order, price, i, not (in_bar or at_close))
            trade.exits_from = i + 1 if in_bar else i
            trades.append(trade)
            restore_average(broker, trades)
        order.status, order.fill_price, order.fill_bar = "filled", raw_price, i

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
        if self.separate:
            for trade in list(self.trades):
                if trade.armed and i >= trade.exits_from:
                    hit = trade.hit(trade.size, o, h, lo)
                    if hit is not None:
                        close_trade(self.broker, self.trades, trade, abs(trade.size), i, hit[0], hit[1])
            return
        units = self.broker.units
        exits = self.exits
        if units and exits.armed and i >= exits.exits_from:
            hit = exits.hit(units, o, h, lo)
            if hit is not None:
                self.broker.to_target(0.0, i, hit[0], None, hit[1])
                exits.clear()

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

