"""The fill model shared by the vectorized and the event-driven paths.

Both paths turn decisions into calls of :meth:`Broker.to_target` (move to a target
exposure) or :meth:`Broker.trade_units` (trade a number of units) at a raw price;
the broker applies slippage and commission, sizes the position, books trades and
logs every fill. Equity is then marked at every bar's close from the fill log in one
vectorized pass (:meth:`Broker.mark_to_market`), so the cost of a backtest grows with
the number of fills, not with the number of bars.

Rules (DESIGN §3):

* Slippage moves each fill price against the trade: a buy fills at
  ``p * (1 + slippage)``, a sell at ``p * (1 - slippage)``.
* At a fill price ``p`` a target exposure ``e`` becomes ``e * equity / (p * (1 +
  commission))`` units, equity valued at ``p``, so the position and its commission
  never spend more than the equity. ``fractional=False`` rounds units toward zero.
* A reversal closes the old position, then opens the new one from the equity left,
  at the same raw price.
* Commission is ``commission * |units| * price`` on every fill.
* A trade is the life of a position from flat to flat (or to a reversal); a partial
  reduction books a trade for the part closed. Its P&L includes its share of the
  entry commission and its exit commission; its return is P&L over entry notional.
"""

from __future__ import annotations

import math

import numpy as np

#: Columns of a trade record, in order (see :func:`trade_arrays`).
TRADE_FIELDS = ("entry_bar", "exit_bar", "entry_price", "exit_price", "size", "pnl", "ret", "tag")


class Broker:
    """Cash, position, trade book and fill log of one backtest.

    Examples
    --------
    >>> import numpy as np
    >>> broker = Broker(cash=1000.0, commission=0.0, slippage=0.0, fractional=True)
    >>> broker.to_target(1.0, bar=1, raw_price=10.0)
    >>> broker.units
    100.0
    >>> broker.to_target(0.0, bar=2, raw_price=11.0)
    >>> round(broker.cash, 6), broker.trades[0][5]
    (1100.0, 100.0)
    """

    __slots__ = (
        "initial_cash", "cash", "units", "commission", "slippage", "fractional",
        "entry_price", "entry_bar", "entry_cost", "entry_tag",
        "fill_bars", "fill_units", "fill_cash", "trades",
    )

    def __init__(self, cash: float, commission: float, slippage: float, fractional: bool) -> None:
        self.initial_cash = cash
        self.cash = cash
        self.units = 0.0
        self.commission = commission
        self.slippage = slippage
        self.fractional = fractional
        self.entry_price = math.nan
        self.entry_bar = -1
        self.entry_cost = 0.0
        self.entry_tag: str | None = None
        # The fill log, one entry per fill: bar, units held after it, cash after it.
        self.fill_bars: list[int] = []
        self.fill_units: list[float] = []
        self.fill_cash: list[float] = []
        self.trades: list[tuple] = []

    def equity(self, price: float) -> float:
        """Cash plus the position valued at ``price``."""
        return self.cash + self.units * price

    def exposure(self, price: float) -> float:
        """The position's value as a fraction of equity at ``price`` (0 when flat)."""
        if not self.units:
            return 0.0
        equity = self.cash + self.units * price
        return self.units * price / equity if equity > 0 else math.copysign(math.inf, self.units)

    def to_target(self, exposure: float, bar: int, raw_price: float, tag: str | None = None) -> None:
        """Move the position to ``exposure`` (fraction of equity) at ``raw_price``."""
        self.follow([exposure], [bar], [raw_price], tag)

    def _resize(self, exposure: float, bar: int, raw_price: float, tag: str | None) -> None:
        """Change the size of a position without changing its side (0.5 -> 1)."""
        current = self.exposure(raw_price)
        if exposure == current:
            return
        direction = 1.0 if exposure > current else -1.0
        price = raw_price * (1.0 + self.slippage * direction)
        equity = self.cash + self.units * price
        if equity <= 0:
            return  # nothing left to size a position from
        target = exposure * equity / (price * (1.0 + self.commission))
        if not self.fractional:
            target = float(math.trunc(target))
        delta = target - self.units
        if delta * direction > 0:
            self._fill(delta, bar, price, tag)

    def follow(
        self, targets: list[float], bars: list[int], prices: list[float], tag: str | None = None
    ) -> None:
        """Move to each target exposure in turn, at its bar and raw price.

        The one implementation of target moves: a vectorized run passes all of its
        changes of target in one call, an event-driven order passes one. Closing and
        opening are :meth:`_fill`'s arithmetic written out on local variables,
        because this loop runs once per change of target and is most of a
        backtest's Python time; a resize within one side goes through :meth:`_resize`.
        """
        slippage, commission, fractional = self.slippage, self.commission, self.fractional
        cash, units = self.cash, self.units
        entry_price, entry_bar, entry_cost, entry_tag = (
            self.entry_price, self.entry_bar, self.entry_cost, self.entry_tag
        )
        log_bar, log_units, log_cash = self.fill_bars.append, self.fill_units.append, self.fill_cash.append
        book = self.trades.append
        for exposure, bar, raw in zip(targets, bars, prices):
            if units:
                if exposure and (exposure > 0) == (units > 0):
                    # Same side, new size: rare; _resize works on the attributes.
                    self.cash, self.units = cash, units
                    self.entry_price, self.entry_bar = entry_price, entry_bar
                    self.entry_cost, self.entry_tag = entry_cost, entry_tag
                    self._resize(exposure, bar, raw, tag)
                    cash, units = self.cash, self.units
                    entry_price, entry_bar = self.entry_price, self.entry_bar
                    entry_cost, entry_tag = self.entry_cost, self.entry_tag
                    continue
                # Close the whole position (the reduce branch of _fill with closed == |units|).
                price = raw * (1.0 + (slippage if units < 0 else -slippage))
                qty = -units
                cost = (qty if qty > 0 else -qty) * price * commission
                cash = cash - qty * price - cost
                closed = abs(units)
                pnl = units * (price - entry_price) - entry_cost - cost
                book((entry_bar, bar, entry_price, price, units, pnl, pnl / (closed * entry_price), entry_tag))
                units = 0.0
                entry_price, entry_cost = math.nan, 0.0
                log_bar(bar)
                log_units(0.0)
                log_cash(cash)
            if not exposure:
                continue
            direction = 1.0 if exposure > 0 else -1.0
            price = raw * (1.0 + slippage * direction)
            if cash <= 0:
                continue  # nothing left to size a position from
            target = exposure * cash / (price * (1.0 + commission))
            if not fractional:
                target = float(math.trunc(target))
            if target * direction > 0:
                cost = (target if target > 0 else -target) * price * commission
                cash = cash - target * price - cost
                units = target
                entry_price, entry_bar, entry_cost, entry_tag = price, bar, cost, tag
                log_bar(bar)
                log_units(units)
                log_cash(cash)
        self.cash, self.units = cash, units
        self.entry_price, self.entry_bar, self.entry_cost, self.entry_tag = (
            entry_price, entry_bar, entry_cost, entry_tag
        )

    def trade_units(self, units: float, bar: int, raw_price: float, tag: str | None = None) -> None:
        """Buy (``units > 0``) or sell a number of units at ``raw_price``.

        An order that crosses zero closes the position first, then opens the rest.
        """
        if not self.fractional:
            units = float(math.trunc(units))
        if not units:
            return
        price = self._slipped(raw_price, units)
        held = self.units
        if held and (held > 0) != (units > 0) and abs(units) > abs(held):
            self._fill(-held, bar, price, tag)
            units += held
        self._fill(units, bar, price, tag)

    def units_for_fraction(self, fraction: float, raw_price: float, direction: float) -> float:
        """Units worth ``fraction`` of equity at the slipped price, after commission."""
        price = raw_price * (1.0 + self.slippage * direction)
        equity = self.cash + self.units * price
        if equity <= 0:
            return 0.0
        return direction * fraction * equity / (price * (1.0 + self.commission))

    def _slipped(self, raw_price: float, units: float) -> float:
        return raw_price * (1.0 + self.slippage) if units > 0 else raw_price * (1.0 - self.slippage)

    def _fill(self, qty: float, bar: int, price: float, tag: str | None) -> None:
        # The hot path of every backtest: locals only, one log append per fill.
        cost = (qty if qty > 0 else -qty) * price * self.commission
        cash = self.cash - qty * price - cost
        self.cash = cash
        held = self.units
        if not held:
            self.entry_price, self.entry_bar, self.entry_cost, self.entry_tag = price, bar, cost, tag
            held = qty
        elif (qty > 0) == (held > 0):
            total = abs(held) + abs(qty)
            self.entry_price = (self.entry_price * abs(held) + price * abs(qty)) / total
            self.entry_cost += cost
            held += qty
        else:
            closed = min(abs(qty), abs(held))
            share = closed / abs(held)
            size = held * share
            entry_cost = self.entry_cost * share
            entry_price = self.entry_price
            pnl = size * (price - entry_price) - entry_cost - cost * (closed / abs(qty))
            self.trades.append(
                (self.entry_bar, bar, entry_price, price, size, pnl, pnl / (closed * entry_price),
                 self.entry_tag)
            )
            self.entry_cost -= entry_cost
            held = 0.0 if qty == -held else held + qty
            if held == 0.0 or abs(held) < 1e-12 * abs(qty):
                held = 0.0
                self.entry_price, self.entry_cost = math.nan, 0.0
        self.units = held
        self.fill_bars.append(bar)
        self.fill_units.append(held)
        self.fill_cash.append(cash)

    def mark_to_market(self, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Equity and units held at every bar's close, from the fill log.

        The state after the last fill at or before bar ``t`` holds at ``t``'s close.
        """
        n = len(close)
        count = len(self.fill_bars)
        if not count:
            return np.full(n, self.initial_cash), np.zeros(n)
        # Segment k runs from fill k to the next fill; segment 0 is the initial state.
        bounds = np.empty(count + 2, dtype=np.intp)
        bounds[0], bounds[-1] = 0, n
        bounds[1:-1] = np.fromiter(self.fill_bars, np.intp, count)
        lengths = np.diff(bounds)
        units = np.empty(count + 1)
        units[0] = 0.0
        units[1:] = np.fromiter(self.fill_units, float, count)
        cash = np.empty(count + 1)
        cash[0] = self.initial_cash
        cash[1:] = np.fromiter(self.fill_cash, float, count)
        held = np.repeat(units, lengths)
        return np.repeat(cash, lengths) + held * close, held

    def trade_pnl_and_returns(self) -> tuple[np.ndarray, np.ndarray]:
        """P&L and return of every closed trade: all the metrics need of the book."""
        trades = self.trades
        count = len(trades)
        pnl = np.fromiter([t[5] for t in trades], float, count)
        return pnl, np.fromiter([t[6] for t in trades], float, count)


def trade_arrays(trades: list[tuple]) -> dict[str, np.ndarray]:
    """A trade book (``Broker.trades``) as one numpy array per field of :data:`TRADE_FIELDS`."""
    columns = list(zip(*trades)) if trades else [()] * len(TRADE_FIELDS)
    arrays = {
        field: np.array(column, dtype=np.int64 if field.endswith("_bar") else float)
        for field, column in zip(TRADE_FIELDS[:-1], columns[:-1])
    }
    arrays["tag"] = np.array(columns[-1], dtype=object)
    return arrays
