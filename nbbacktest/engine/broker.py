"""The fill model shared by the vectorized and the event-driven paths.

Both paths turn decisions into calls of :meth:`Broker.to_target` (move to a target
exposure) or :meth:`Broker.trade_units` (trade a number of units) at a raw price;
the broker applies slippage and commission, sizes the position, books trades and
logs every fill. A vectorized run knows all its changes of target up front and
moves through them in :func:`follow_changes`, the same arithmetic on local floats
with less bookkeeping. Either way a :class:`Ledger` of states remains, from which
equity is marked at every bar's close in a few vectorized passes, so the cost of a
backtest grows with the number of fills, not with the number of bars.

Rules (DESIGN §3):

* Slippage moves each fill price against the trade: a buy fills at
  ``p * (1 + slippage)``, a sell at ``p * (1 - slippage)``.
* At a fill price ``p`` a target exposure ``e`` becomes ``e * equity / (p * (1 +
  commission))`` units, equity valued at ``p``, so the position and its commission
  never spend more than the equity. ``fractional=False`` rounds units toward zero.
* A reversal closes the old position, then opens the new one from the equity left,
  at the same raw price.
* Commission is ``commission * |units| * price`` on every fill, or what a
  :class:`~nbbacktest.engine.costs.Costs` charges (a fixed fee per fill, or a
  callable); sizing then leaves room for it (``Costs.units``). :attr:`Broker.paid`
  totals the commissions.
* A spread reaches the broker as slippage: ``Settings.fill_slippage``.
* A trade is the life of a position from flat to flat (or to a reversal); a partial
  reduction books a trade for the part closed. Its P&L includes its share of the
  entry commission and its exit commission; its return is P&L over entry notional.
  Its ``exit_reason`` says what closed it (see :data:`EXIT_REASONS`).
* An event-driven order that would take the absolute exposure beyond the leverage
  limit is reduced to the limit, or rejected when nothing is left below it (see
  :meth:`Broker.capped_units`); :attr:`Broker.notes` records each one.
"""

from __future__ import annotations

import math

import numpy as np

from nbbacktest.engine.costs import CommissionSpec, Costs
from nbbacktest.engine.fill_kernel import follow_pass
from nbbacktest.engine.ledger import Ledger, TradeBook

__all__ = ["EXIT_REASONS", "Broker", "follow_changes", "follow_changes_paid"]

#: Why a trade closed: a change of target or an order of the strategy (a partial close
#: too), its stop-loss, its take-profit, its trailing stop, or ``close_at_end`` at the
#: last close. (A rejected order opens no trade: ``Result.adjusted_orders`` lists it.)
EXIT_REASONS = ("signal", "stop-loss", "take-profit", "trailing-stop", "end")


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
    >>> round(broker.cash, 6), broker.trades[0][5], broker.trades[0][8]
    (1100.0, 100.0, 'signal')
    """

    __slots__ = (
        "initial_cash", "cash", "units", "commission", "slippage", "fractional",
        "entry_price", "entry_bar", "entry_cost", "entry_tag",
        "fill_bars", "fill_units", "fill_cash", "trades", "notes", "costs", "paid",
    )

    def __init__(
        self, cash: float, commission: CommissionSpec | Costs, slippage: float, fractional: bool
    ) -> None:
        self.initial_cash = cash
        self.cash = cash
        self.units = 0.0
        costs = Costs.parse(commission)
        # A fraction alone stays on the float arithmetic; other forms go through Costs.
        self.commission = costs.rate
        self.costs: Costs | None = None if costs.plain else costs
        self.paid = 0.0  # commissions paid so far
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
        # Orders reduced or rejected by the leverage limit, in ``ledger.NOTE_FIELDS`` order.
        self.notes: list[tuple] = []

    def equity(self, price: float) -> float:
        """Cash plus the position valued at ``price``."""
        return self.cash + self.units * price

    def exposure(self, price: float) -> float:
        """The position's value as a fraction of equity at ``price`` (0 when flat)."""
        if not self.units:
            return 0.0
        equity = self.cash + self.units * price
        return self.units * price / equity if equity > 0 else math.copysign(math.inf, self.units)

    def to_target(
        self, exposure: float, bar: int, raw_price: float, tag: str | None = None,
        reason: str = "signal",
    ) -> None:
        """Move the position to ``exposure`` (fraction of equity) at ``raw_price``.

        ``tag`` labels a position it opens; ``reason`` a trade it closes.
        """
        self.follow([exposure], [bar], [raw_price], tag, reason)

    def follow(
        self, targets: list[float], bars: list[int], prices: list[float], tag: str | None = None,
        reason: str = "signal",
    ) -> None:
        """Move to each target exposure in turn, at its bar and raw price.

        The general implementation of target moves: an event-driven order passes one
        change, a vectorized run with resizes the rest of its changes (see
        :func:`follow_changes`). Resizing, closing and opening are :meth:`_fill`'s
        arithmetic written out on local variables, because this loop runs once per
        change of target and is most of a backtest's Python time.
        """
        slippage, commission, fractional = self.slippage, self.commission, self.fractional
        cash, units, costs, paid = self.cash, self.units, self.costs, self.paid
        entry_price, entry_bar, entry_cost, entry_tag = (
            self.entry_price, self.entry_bar, self.entry_cost, self.entry_tag
        )
        log_bar, log_units, log_cash = self.fill_bars.append, self.fill_units.append, self.fill_cash.append
        book = self.trades.append
        for exposure, bar, raw in zip(targets, bars, prices):
            if units:
                if exposure and (exposure > 0) == (units > 0):
                    # Same side, new size (0.5 -> 1): sized from the exposure held now,
                    # valued at the raw price (see exposure()).
                    value = units * raw
                    worth = cash + value
                    current = value / worth if worth > 0 else math.copysign(math.inf, units)
                    if exposure == current:
                        continue
                    direction = 1.0 if exposure > current else -1.0
                    price = raw * (1.0 + slippage * direction)
                    equity = cash + units * price
                    if equity <= 0:
                        continue  # nothing left to size a position from
                    if costs is None:
                        target = exposure * equity / (price * (1.0 + commission))
                    else:
                        target = costs.units(exposure * equity, price)
                    if not fractional:
                        target = float(math.trunc(target))
                    qty = target - units
                    if not qty * direction > 0:
                        continue
                    # |units| and |qty| without abs() calls: negation is exact
                    size = units if units > 0 else -units
                    more = qty if qty > 0 else -qty
                    cost = more * price * commission if costs is None else costs.charge(more, price)
                    paid += cost
                    cash = cash - qty * price - cost
                    if (qty > 0) == (units > 0):
                        # More of the same side: the entry price is the average paid.
                        entry_price = (entry_price * size + price * more) / (size + more)
                        entry_cost += cost
                        units += qty
                    else:
                        # Less of it: a trade for the part closed (the reduce branch of _fill).
                        closed = size if size < more else more  # min(|qty|, |units|)
                        share = closed / size
                        part = entry_cost * share
                        reduced = units * share
                        pnl = reduced * (price - entry_price) - part - cost * (closed / more)
                        book((entry_bar, bar, entry_price, price, reduced, pnl,
                              pnl / (closed * entry_price), entry_tag, reason))
                        entry_cost -= part
                        units = 0.0 if qty == -units else units + qty
                        if units == 0.0 or (units if units > 0 else -units) < 1e-12 * more:
                            units = 0.0
                            entry_price, entry_cost = math.nan, 0.0
                    log_bar(bar)
                    log_units(units)
                    log_cash(cash)
                    continue
                # Close the whole position (the reduce branch of _fill with closed == |units|).
                price = raw * (1.0 + (slippage if units < 0 else -slippage))
                qty = -units
                closed = qty if qty > 0 else -qty  # |units|
                cost = closed * price * commission if costs is None else costs.charge(closed, price)
                paid += cost
                cash = cash - qty * price - cost
                pnl = units * (price - entry_price) - entry_cost - cost
                book((entry_bar, bar, entry_price, price, units, pnl, pnl / (closed * entry_price),
                      entry_tag, reason))
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
            if costs is None:
                target = exposure * cash / (price * (1.0 + commission))
            else:
                target = costs.units(exposure * cash, price)
            if not fractional:
                target = float(math.trunc(target))
            if target * direction > 0:
                size = target if target > 0 else -target
                cost = size * price * commission if costs is None else costs.charge(size, price)
                paid += cost
                cash = cash - target * price - cost
                units = target
                entry_price, entry_bar, entry_cost, entry_tag = price, bar, cost, tag
                log_bar(bar)
                log_units(units)
                log_cash(cash)
        self.cash, self.units, self.paid = cash, units, paid
        self.entry_price, self.entry_bar, self.entry_cost, self.entry_tag = (
            entry_price, entry_bar, entry_cost, entry_tag
        )

    def trade_units(
        self, units: float, bar: int, raw_price: float, tag: str | None = None,
        reason: str = "signal",
    ) -> None:
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
            self._fill(-held, bar, price, tag, reason)
            units += held
        self._fill(units, bar, price, tag, reason)

    def capped_units(
        self, units: float, bar: int, raw_price: float, leverage: float, tag: str | None = None
    ) -> float:
        """``units`` to trade, reduced so that the position stays within ``leverage``.

        The limit is the one a target exposure obeys (see :meth:`follow`): at the
        slipped price ``p`` at most ``leverage * equity / (p * (1 + commission))``
        units, equity valued at ``p`` (after the close's commission for an order
        that reverses the position). An order that only reduces the position, or
        stays within the limit, is returned unchanged; one beyond it is reduced to
        the limit, or to 0 (rejected) when the position is already there. Each
        reduction or rejection is appended to :attr:`notes`.

        Examples
        --------
        >>> broker = Broker(cash=1000.0, commission=0.0, slippage=0.0, fractional=True)
        >>> broker.capped_units(500.0, bar=1, raw_price=10.0, leverage=1.0)
        100.0
        >>> broker.notes
        [(1, 500.0, 100.0, 10.0, 'reduced', 'exposure 5 would exceed the leverage limit 1', None)]
        """
        if not units:
            return units
        held = self.units
        after = held + units
        if not after or (held and (after > 0) == (held > 0) and abs(after) <= abs(held)):
            return units  # reduces the position (or closes it): always allowed
        price = self._slipped(raw_price, units)
        gross = 1.0 + self.commission
        costs = self.costs
        worth = self.cash + held * price
        if held and (after > 0) != (held > 0):
            # the close pays its commission first
            worth -= (abs(held) * price * self.commission if costs is None
                      else costs.charge(abs(held), price))
        if costs is None:
            most = leverage * worth / (price * gross) if worth > 0 else 0.0
        else:
            most = costs.units(leverage * worth, price) if worth > 0 else 0.0
        if not self.fractional:
            most = float(math.trunc(most))
        # A hair of tolerance: an order sized at the limit by the user's own
        # arithmetic must not be reduced by a rounding error.
        if abs(after) <= most * (1.0 + 1e-9):
            return units
        allowed = math.copysign(most, after) - held
        if held and (after > 0) == (held > 0) and abs(held) >= most * (1.0 - 1e-9):
            allowed = 0.0  # already at the limit: nothing more on this side
        wanted = after * price / worth if worth > 0 else math.inf
        self.notes.append((
            bar, units, allowed, price, "reduced" if allowed else "rejected",
            f"exposure {abs(wanted):.3g} would exceed the leverage limit {leverage:g}", tag,
        ))
        return allowed

    def units_for_fraction(self, fraction: float, raw_price: float, direction: float) -> float:
        """Units worth ``fraction`` of equity at the slipped price, after commission."""
        price = raw_price * (1.0 + self.slippage * direction)
        equity = self.cash + self.units * price
        if equity <= 0:
            return 0.0
        if self.costs is not None:
            return self.costs.units(direction * fraction * equity, price)
        return direction * fraction * equity / (price * (1.0 + self.commission))

    def _slipped(self, raw_price: float, units: float) -> float:
        return raw_price * (1.0 + self.slippage) if units > 0 else raw_price * (1.0 - self.slippage)

    def _fill(self, qty: float, bar: int, price: float, tag: str | None, reason: str = "signal") -> None:
        # The hot path of every backtest: locals only, one log append per fill.
        size = qty if qty > 0 else -qty
        costs = self.costs
        cost = size * price * self.commission if costs is None else costs.charge(size, price)
        self.paid += cost
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
                 self.entry_tag, reason)
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
        return self.ledger(len(close)).mark_to_market(close)

    def trade_pnl_and_returns(self) -> tuple[np.ndarray, np.ndarray]:
        """P&L and return of every closed trade: all the metrics need of the book."""
        trades = self.trades
        count = len(trades)
        pnl = np.fromiter([t[5] for t in trades], float, count)
        return pnl, np.fromiter([t[6] for t in trades], float, count)

    def ledger(self, n: int, start: int = 0) -> Ledger:
        """The fill log and the trade book as a :class:`Ledger` over ``n`` bars.

        ``start``: the first bar the run traded on (no fill before it); the ledger
        then covers bars ``start`` to ``n - 1``, their positions counted from it.
        """
        pnl, returns = self.trade_pnl_and_returns()
        bars = np.fromiter(self.fill_bars, np.intp, len(self.fill_bars))
        trades, notes = self.trades, self.notes
        if start:
            bars -= start
            trades = [(entry - start, exit_ - start, *rest) for entry, exit_, *rest in trades]
            notes = [(bar - start, *rest) for bar, *rest in notes]
        ledger = Ledger(self.initial_cash, n - start, bars, self.fill_units, self.fill_cash,
                        pnl, returns, trades)
        ledger.notes = notes
        return ledger

def follow_changes(
    cash: float,
    commission: CommissionSpec | Costs,
    slippage: float,
    fractional: bool,
    targets: np.ndarray,
    bars: np.ndarray,
    raw_prices: np.ndarray,
    n: int,
    end: bool = False,
) -> Ledger:
    """The :class:`Ledger` of :func:`follow_changes_paid` (its commissions total dropped).

    Examples
    --------
    >>> follow_changes(1000.0, 0.01, 0.0, True, np.array([1.0]), np.array([1]),
    ...                np.array([10.0]), 2).units.tolist()
    [0.0, 99.00990099009901]
    """
    return follow_changes_paid(cash, commission, slippage, fractional, targets, bars, raw_prices,
                               n, end)[0]


def follow_changes_paid(
    cash: float,
    commission: CommissionSpec | Costs,
    slippage: float,
    fractional: bool,
    targets: np.ndarray,
    bars: np.ndarray,
    raw_prices: np.ndarray,
    n: int,
    end: bool = False,
) -> tuple[Ledger, float]:
    """Move a fresh :class:`Broker` to each target exposure in turn: the vectorized runs' fills.

    Returns the ledger and the commissions paid (:attr:`Broker.paid`, summed in
    the same order, so the same bits as the event path's for the same fills).
    A commission other than a plain fraction (a fixed fee, a callable) fills every
    change through :meth:`Broker.follow` instead, as the event path does.

    ``targets[k]`` is the k-th change of target, filled at bar ``bars[k]``
    (increasing) at ``raw_prices[k]``. Gives the same fills, bit for bit, as
    :meth:`Broker.follow`: a compiled loop (:func:`.fill_kernel.follow_pass`) repeats
    its cash and units arithmetic and logs one state per change (a reversal's two
    fills share a bar, so the first state never holds at a close). Without resizes
    every position opens at one change and closes at the next: the loop works out
    each trade's P&L, and the trade records wait in a :class:`TradeBook` until asked
    for. The first same-side resize (0.5 -> 1) hands the remaining changes to
    :meth:`Broker.follow`.
    ``end=True`` says the last change is ``close_at_end``'s: a trade it closes has
    the exit reason "end", every other one "signal".

    Examples
    --------
    >>> ledger = follow_changes(1000.0, 0.0, 0.0, True, np.array([1.0, 0.0]),
    ...                         np.array([1, 2]), np.array([10.0, 11.0]), 3)
    >>> ledger.pnl.tolist(), ledger.trades
    ([100.0], [(1, 2, 10.0, 11.0, 100.0, 100.0, 0.1, None, 'signal')])
    """
    if not isinstance(commission, (float, int)):
        costs = Costs.parse(commission)
        if not costs.plain:
            broker = Broker(cash, costs, slippage, fractional)
            rest = len(targets) - 1 if end else len(targets)
            broker.follow(targets[:rest].tolist(), bars[:rest].tolist(), raw_prices[:rest].tolist())
            if end:
                broker.follow(targets[rest:].tolist(), bars[rest:].tolist(),
                              raw_prices[rest:].tolist(), reason="end")
            return broker.ledger(n), broker.paid
        commission = costs.rate
    initial_cash = cash
    if slippage:
        # The slipped prices of Broker.follow, for every change at once:
        # raw * (1 + slippage * direction), direction +1 buying and -1 selling.
        buy_array = raw_prices * (1.0 + slippage)
        sell_array = raw_prices * (1.0 - slippage)
    else:
        buy_array = sell_array = raw_prices  # raw * 1.0 == raw
    count = len(targets)
    unit_log, cash_log, pnl_log, return_log = np.empty((4, count))
    done, trades, cash, units, entry_price, entry_cost, paid = follow_pass(
        np.ascontiguousarray(targets, dtype=np.float64), np.ascontiguousarray(buy_array, dtype=np.float64),
        np.ascontiguousarray(sell_array, dtype=np.float64), float(cash), float(commission),
        bool(fractional), unit_log, cash_log, pnl_log, return_log)
    bars_done = bars[:done] if done < count else bars
    ledger = Ledger(initial_cash, n, bars_done, unit_log[:done], cash_log[:done],
                    pnl_log[:trades].copy(), return_log[:trades].copy(), [])
    end_at = count - 1 if end else -1
    book = TradeBook(bars_done, ledger.units[1:], buy_array, sell_array, commission, end_at)
    if done == count:
        ledger.trades = book
        return ledger, paid
    # Hand over: a broker takes the state, the log and the book so far. The
    # position open now opened at the last change done.
    broker = Broker(initial_cash, commission, slippage, fractional)
    broker.cash, broker.units, broker.paid = cash, units, paid
    broker.entry_price, broker.entry_bar = entry_price, int(bars[done - 1])
    broker.entry_cost, broker.entry_tag = entry_cost, None
    broker.fill_bars = bars_done.tolist()
    broker.fill_units, broker.fill_cash = unit_log[:done].tolist(), cash_log[:done].tolist()
    broker.trades = list(book)
    rest = len(targets) - 1 if end else len(targets)
    broker.follow(targets[done:rest].tolist(), bars[done:rest].tolist(), raw_prices[done:rest].tolist())
    if end:
        broker.follow(targets[rest:].tolist(), bars[rest:].tolist(), raw_prices[rest:].tolist(),
                      reason="end")
    return broker.ledger(n), broker.paid


