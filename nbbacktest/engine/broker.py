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
from collections.abc import Callable

import numpy as np

#: From this many bars on, :meth:`Ledger.equity_into` gathers segment states into
#: scratch rows instead of repeating them into fresh arrays (128 KiB of float64 and
#: more come from fresh pages of memory, each costing a page fault).
_GATHER_MIN_BARS = 16_384

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
        return self.ledger(len(close)).mark_to_market(close)

    def trade_pnl_and_returns(self) -> tuple[np.ndarray, np.ndarray]:
        """P&L and return of every closed trade: all the metrics need of the book."""
        trades = self.trades
        count = len(trades)
        pnl = np.fromiter([t[5] for t in trades], float, count)
        return pnl, np.fromiter([t[6] for t in trades], float, count)

    def ledger(self, n: int) -> Ledger:
        """The fill log and the trade book as a :class:`Ledger` over ``n`` bars."""
        pnl, returns = self.trade_pnl_and_returns()
        return Ledger(
            self.initial_cash, n, np.fromiter(self.fill_bars, np.intp, len(self.fill_bars)),
            self.fill_units, self.fill_cash, pnl, returns, self.trades,
        )


class Ledger:
    """What a finished run leaves: the state held from each fill on, and the trades.

    Fill ``k`` happened at bar ``bars[k]`` (non-decreasing) and left ``units[k]``
    held and ``cash[k]`` in cash, until the next fill. Equity and the position are
    built from these segments in a few vectorized passes, so a backtest's cost grows
    with the number of fills, not bars. Several fills may share a bar (a reversal);
    the last one holds at its close.

    ``trades`` is the trade book (records in :data:`TRADE_FIELDS` order), or a
    function that builds it: a sweep reads only ``pnl`` and ``returns``.

    Examples
    --------
    >>> ledger = Ledger(100.0, 4, np.array([1, 3]), [10.0, 0.0], [0.0, 120.0],
    ...                 np.array([20.0]), np.array([0.2]), [])
    >>> equity, held = ledger.mark_to_market(np.array([10.0, 10.0, 11.0, 12.0]))
    >>> equity.tolist(), held.tolist(), ledger.bars_in_market()
    ([100.0, 100.0, 110.0, 120.0], [0.0, 10.0, 10.0, 0.0], 2)
    """

    __slots__ = ("initial_cash", "n", "bars", "units", "cash", "pnl", "returns", "_trades",
                 "_lengths", "_held")

    def __init__(
        self,
        initial_cash: float,
        n: int,
        bars: np.ndarray,
        units: list[float],
        cash: list[float],
        pnl: np.ndarray,
        returns: np.ndarray,
        trades: list[tuple] | Callable[[], list[tuple]],
    ) -> None:
        count = len(bars)
        self.initial_cash, self.n = initial_cash, n
        self.bars = bars
        # Segment 0 is the state before the first fill.
        self.units = np.empty(count + 1)
        self.units[0] = 0.0
        self.units[1:] = units
        self.cash = np.empty(count + 1)
        self.cash[0] = initial_cash
        self.cash[1:] = cash
        self.pnl, self.returns = pnl, returns
        self._trades = trades
        bounds = np.empty(count + 2, dtype=np.intp)
        bounds[0], bounds[-1] = 0, n
        bounds[1:-1] = bars
        self._lengths = np.subtract(bounds[1:], bounds[:-1])
        self._held: np.ndarray | None = None

    def mark_to_market(
        self, close: np.ndarray, scratch: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Equity and units held at every bar's close, as new arrays.

        ``equity = cash + units * close`` per bar, the state of each bar's segment.
        ``scratch``, a float64 row of at least ``n`` values, takes the temporary.
        """
        held = self.held()
        equity = np.repeat(self.cash, self._lengths)
        equity += np.multiply(held, close, out=None if scratch is None else scratch[: self.n])
        return equity, held

    def equity_into(self, close: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Equity at every bar's close, written into scratch rows: a sweep's run keeps nothing.

        ``rows`` are three float64 rows of at least ``n`` values; the equity is a
        view of the last one, the first two are left free. On long series this
        allocates nothing per bar: fresh multi-megabyte temporaries cost more in page
        faults than the arithmetic (the allocator hands them back to the system and
        maps them again on the next run). Same bits as :meth:`mark_to_market`.
        """
        n = self.n
        if n < _GATHER_MIN_BARS:
            # Small arrays come from the allocator's free lists: repeat is cheaper.
            equity = rows[2, :n]
            np.multiply(np.repeat(self.units, self._lengths), close, out=equity)
            np.add(np.repeat(self.cash, self._lengths), equity, out=equity)
            return equity
        bars, units, cash = self.bars, self.units, self.cash
        if len(bars) > 1 and not (bars[1:] != bars[:-1]).all():
            # Fills sharing a bar: only the last one's state holds at the close.
            last = np.empty(len(bars), dtype=bool)
            last[:-1] = bars[1:] != bars[:-1]
            last[-1] = True
            bars = bars[last]
            units = np.concatenate((units[:1], units[1:][last]))
            cash = np.concatenate((cash[:1], cash[1:][last]))
        # segment[t] = number of fills at or before bar t: the state holding at t.
        segment = rows[1, :n].view(np.int64)
        segment.fill(0)
        segment[bars] = 1
        np.cumsum(segment, out=segment)
        held, equity = rows[0, :n], rows[2, :n]
        np.take(units, segment, out=held, mode="clip")
        np.multiply(held, close, out=held)
        np.take(cash, segment, out=equity, mode="clip")
        equity += held
        return equity

    def held(self) -> np.ndarray:
        """Units held at every bar's close."""
        if self._held is None:
            self._held = np.repeat(self.units, self._lengths)
        return self._held

    def bars_in_market(self) -> int:
        """How many bars end with a position held."""
        return int(np.add.reduce(self._lengths[self.units != 0.0]))

    @property
    def trades(self) -> list[tuple]:
        """The closed trades, records in :data:`TRADE_FIELDS` order."""
        if callable(self._trades):
            self._trades = self._trades()
        return self._trades


def follow_changes(
    broker: Broker, targets: np.ndarray, bars: np.ndarray, raw_prices: np.ndarray, n: int
) -> Ledger:
    """Move a fresh broker to each target exposure in turn: the vectorized runs' fills.

    ``targets[k]`` is the k-th change of target, filled at bar ``bars[k]``
    (increasing) at ``raw_prices[k]``. Gives the same fills, bit for bit, as
    :meth:`Broker.follow`: this loop repeats its cash and units arithmetic on local
    floats and logs one state per change (a reversal's two fills share a bar, so the
    first state never holds at a close). Without resizes every position opens at
    one change and closes at the next, so the trades are then worked out for all
    changes at once (see :func:`_closed_positions`). The first same-side resize
    (0.5 -> 1) hands the remaining changes to :meth:`Broker.follow`.

    Examples
    --------
    >>> broker = Broker(cash=1000.0, commission=0.0, slippage=0.0, fractional=True)
    >>> ledger = follow_changes(broker, np.array([1.0, 0.0]), np.array([1, 2]),
    ...                         np.array([10.0, 11.0]), 3)
    >>> ledger.pnl.tolist(), ledger.trades
    ([100.0], [(1, 2, 10.0, 11.0, 100.0, 100.0, 0.1, None)])
    """
    commission, slippage, fractional = broker.commission, broker.slippage, broker.fractional
    if slippage:
        # The slipped prices of Broker.follow, for every change at once:
        # raw * (1 + slippage * direction), direction +1 buying and -1 selling.
        buy_array = raw_prices * (1.0 + slippage)
        sell_array = raw_prices * (1.0 - slippage)
        buy_prices, sell_prices = buy_array.tolist(), sell_array.tolist()
    else:
        buy_array = sell_array = raw_prices  # raw * 1.0 == raw
        buy_prices = sell_prices = raw_prices.tolist()
    gross = 1.0 + commission
    cash, units = broker.cash, 0.0
    entry_price = entry_cost = 0.0
    unit_log: list[float] = []
    cash_log: list[float] = []
    log_units, log_cash = unit_log.append, cash_log.append
    for exposure, buy, sell in zip(targets.tolist(), buy_prices, sell_prices):
        if units:
            if exposure and (exposure > 0) == (units > 0):
                break  # same side, new size: Broker.follow from here on
            # Close the whole position: cost = |qty| * price * commission and
            # cash -= qty * price + cost, with qty = -units.
            if units > 0:
                notional = units * sell
                cash = cash + notional - notional * commission
            else:
                notional = -units * buy
                cash = cash - notional - notional * commission
            units = 0.0
        if exposure and not cash <= 0:
            # Open: target = exposure * equity / (price * (1 + commission)).
            if exposure > 0:
                target = exposure * cash / (buy * gross)
                if not fractional:
                    target = float(math.trunc(target))
                if target > 0:
                    notional = target * buy
                    cash = cash - notional - notional * commission
                    units = target
            else:
                target = exposure * cash / (sell * gross)
                if not fractional:
                    target = float(math.trunc(target))
                if target < 0:
                    notional = -target * sell
                    cash = cash + notional - notional * commission
                    units = target
        log_units(units)
        log_cash(cash)
    done = len(unit_log)
    if done < len(targets):
        bars_done = bars[:done]
    else:
        bars_done = bars
    ledger = Ledger(broker.initial_cash, n, bars_done, unit_log, cash_log, None, None, [])
    closed = _closed_positions(ledger.units[1:], bars_done, buy_array, sell_array, commission)
    if done == len(targets):
        ledger.pnl, ledger.returns = closed[5], closed[6]
        ledger._trades = lambda: _records(closed)
        return ledger
    # Hand over: the broker takes the state, the log and the book so far. The
    # position open now opened at the last change done.
    broker.cash, broker.units = cash, units
    price = buy_prices[done - 1] if units > 0 else sell_prices[done - 1]
    broker.entry_price, broker.entry_bar, broker.entry_tag = price, int(bars[done - 1]), None
    broker.entry_cost = (units if units > 0 else -units) * price * commission
    broker.fill_bars = bars_done.tolist()
    broker.fill_units, broker.fill_cash = unit_log, cash_log
    broker.trades = _records(closed)
    broker.follow(targets[done:].tolist(), bars[done:].tolist(), raw_prices[done:].tolist())
    return broker.ledger(n)


def _closed_positions(
    units: np.ndarray,
    bars: np.ndarray,
    buy_prices: np.ndarray,
    sell_prices: np.ndarray,
    commission: float,
) -> tuple[np.ndarray, ...]:
    """The trades of :func:`follow_changes`, one numpy column per field but the tag.

    ``units[k]`` is held after change ``k``. A position held after change ``j``
    opened there and closes at change ``j + 1`` (there are no resizes), so each
    field comes from a few vectorized operations: the same IEEE operations, in
    the same order, as :meth:`Broker.follow`'s per-fill arithmetic, hence the same bits.
    """
    # Changes after which a position is held and that are followed by its close.
    opened = np.flatnonzero(units[:-1])
    closing = opened + 1
    size = units[opened]
    if buy_prices is sell_prices:
        entry, exit_ = buy_prices[opened], buy_prices[closing]
    else:
        long = size > 0
        entry = np.where(long, buy_prices[opened], sell_prices[opened])
        exit_ = np.where(long, sell_prices[closing], buy_prices[closing])
    magnitude = np.abs(size)
    entry_notional = magnitude * entry
    # pnl = units * (exit - entry) - entry cost - exit cost, costs |units| * price * commission
    pnl = size * (exit_ - entry)
    pnl -= entry_notional * commission
    pnl -= magnitude * exit_ * commission
    # return = pnl / (|units| * entry price)
    return bars[opened], bars[closing], entry, exit_, size, pnl, pnl / entry_notional


def _records(columns: tuple[np.ndarray, ...]) -> list[tuple]:
    """Trade records (:data:`TRADE_FIELDS` order, no tag) from :func:`_closed_positions`."""
    return [(*fields, None) for fields in zip(*(column.tolist() for column in columns))]


def trade_arrays(trades: list[tuple]) -> dict[str, np.ndarray]:
    """A trade book (``Broker.trades``) as one numpy array per field of :data:`TRADE_FIELDS`."""
    columns = list(zip(*trades)) if trades else [()] * len(TRADE_FIELDS)
    arrays = {
        field: np.array(column, dtype=np.int64 if field.endswith("_bar") else float)
        for field, column in zip(TRADE_FIELDS[:-1], columns[:-1])
    }
    arrays["tag"] = np.array(columns[-1], dtype=object)
    return arrays
