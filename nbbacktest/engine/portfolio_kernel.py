"""The portfolio simulator's inner loop, compiled by numba.

The fills of a portfolio run are a sequence: each bar's sizes depend on the equity
the previous bars left. Written in numpy calls it costs about 30 us a bar (a
dozen small-array calls a step); as scalar loops compiled by numba, well under
1 us. Compiled code is cached on disk, so a new process (an engine) loads it
instead of compiling.
Without numba the same functions run as plain Python: the same results, slower.
"""

from __future__ import annotations

import numpy as np

from nbbacktest.engine.compiled import njit

__all__ = ["CASH", "EQUITY", "GROSS", "LONG_PNL", "SHORT_PNL", "TRADED", "fill_loop"]


#: Rows of :func:`fill_loop`'s per-bar output.
EQUITY, CASH, LONG_PNL, SHORT_PNL, TRADED, GROSS = range(6)


@njit(cache=True, nogil=True)
def fill_loop(weights: np.ndarray, decision_of: np.ndarray, schedule: bool, prices: np.ndarray,
              close: np.ndarray, delist_bar: np.ndarray, initial_cash: float, rate: float,
              fixed: float, slip: float, fractional: bool, close_at_end: bool, keep_held: bool,
              held_out: np.ndarray, per_bar: np.ndarray, trade_ints: np.ndarray,
              trade_floats: np.ndarray) -> tuple[int, float, int]:
    """A portfolio run, bar by bar and symbol by symbol (the rules of ``portfolio_sim``).

    Written as scalar loops that numba compiles; each symbol's arithmetic is
    ``Broker.follow``'s, in the same order, so one symbol gives the
    single-instrument path's bits. It marks every close itself (each symbol at its
    last close), so a run needs no per-bar price array beyond the universe's own.

    Writes ``per_bar`` (rows :data:`EQUITY`, :data:`CASH`, :data:`LONG_PNL` and
    :data:`SHORT_PNL` (each leg's P&L, commissions included: a symbol's P&L of a
    bar counts in the leg it held at the bar's start, or opened), :data:`TRADED`
    (notional traded), :data:`GROSS` (sum of absolute position values)), the units
    held at each close into ``held_out`` when ``keep_held``, and the trade records
    (ints: symbol, entry bar, exit bar, reason; floats: entry price, exit price,
    size, P&L, return). Returns the number of trades, the commissions paid, and the
    number of bars that end holding a position.
    """
    bars, count = weights.shape
    gross_rate = 1.0 + rate
    units = np.zeros(count)
    traded = np.zeros(count)  # the target each symbol last traded to
    entry_price = np.full(count, np.nan)
    entry_cost = np.zeros(count)
    entry_bar = np.zeros(count, dtype=np.int64)
    desired = np.zeros(count)
    pending = np.zeros(count, dtype=np.bool_)
    need = np.zeros(count, dtype=np.bool_)
    last_close = np.zeros(count)  # each symbol's last close (0 before its first bar)
    value_then = np.zeros(count)  # each position's value at the previous close
    units_then = np.zeros(count)
    flow = np.zeros(count)  # cash paid into each symbol this bar, commissions included
    leaving = np.zeros(bars, dtype=np.bool_)
    for j in range(count):
        if delist_bar[j] >= 0:
            leaving[delist_bar[j]] = True
    any_pending = False
    cash = initial_cash
    paid = 0.0
    n = 0
    in_market = 0
    last = bars - 1
    for f in range(bars):
        d = decision_of[f]
        notional_traded = 0.0
        if d >= 0 or any_pending or leaving[f]:
            any_pending = False
            for j in range(count):
                if d >= 0:
                    w = weights[d, j]
                    desired[j] = w
                    wanted = (w != 0.0 or units[j] != 0.0) if schedule else w != traded[j]
                else:
                    wanted = pending[j]
                if wanted and np.isnan(prices[f, j]):
                    pending[j] = True  # no bar today: it trades on its next bar
                    any_pending = True
                    need[j] = False
                else:
                    pending[j] = False
                    need[j] = wanted
            # 1. Closes: a target of 0 or on the other side.
            for j in range(count):
                u = units[j]
                if need[j] and u != 0.0 and u * desired[j] <= 0.0:
                    price = prices[f, j] * (1.0 - slip if u > 0 else 1.0 + slip)
                    cash, paid, n = _close_one(j, f, price, u, units, entry_price, entry_cost, entry_bar,
                                               cash, paid, rate, fixed, flow, trade_ints, trade_floats, n, 0)
                    notional_traded += abs(u) * price
                if need[j]:
                    traded[j] = desired[j]
            # 2-3. Opens and resizes, each sized from the equity at the fill; a symbol
            # without a bar now is valued at its last close.
            total = 0.0
            for j in range(count):
                raw = prices[f, j]
                total += units[j] * (last_close[j] if np.isnan(raw) else raw)
            cash_then = cash
            for j in range(count):
                w = desired[j]
                if not need[j] or w == 0.0:
                    continue
                raw = prices[f, j]
                u = units[j]
                own = u * raw
                base = cash_then + (total - own)  # equity without this symbol's position
                if u != 0.0:
                    worth = base + own
                    current = own / worth if worth > 0 else (np.inf if u > 0 else -np.inf)
                    if w == current:
                        continue
                    direction = 1.0 if w > current else -1.0
                else:
                    direction = 1.0 if w > 0 else -1.0
                price = raw * (1.0 + slip * direction)
                equity = base + u * price
                if equity <= 0:
                    continue  # nothing left to size a position from
                value = w * equity
                size_wanted = value if value > 0 else -value
                want = (size_wanted - fixed) / (price * gross_rate)
                if not want > 0:
                    want = 0.0
                elif value < 0:
                    want = -want
                if not fractional:
                    want = np.trunc(want)
                qty = want - u
                if not qty * direction > 0:
                    continue
                more = qty if qty > 0 else -qty
                cost = fixed + more * price * rate
                paid += cost
                cash = cash - qty * price - cost
                flow[j] += qty * price + cost
                notional_traded += more * price
                if u == 0.0:
                    units[j] = qty
                    entry_price[j], entry_bar[j], entry_cost[j] = price, f, cost
                    continue
                size = u if u > 0 else -u
                if (qty > 0) == (u > 0):
                    # More of the same side: the entry price is the average paid.
                    entry_price[j] = (entry_price[j] * size + price * more) / (size + more)
                    entry_cost[j] += cost
                    units[j] = u + qty
                    continue
                # Less of it: a trade for the part closed.
                closed = size if size < more else more
                share = closed / size
                part = entry_cost[j] * share
                reduced = u * share
                pnl = reduced * (price - entry_price[j]) - part - cost * (closed / more)
                n = _record(trade_ints, trade_floats, n, j, entry_bar[j], f, 0, entry_price[j], price,
                            reduced, pnl, pnl / (closed * entry_price[j]))
                entry_cost[j] -= part
                after = 0.0 if qty == -u else u + qty
                if after == 0.0 or (after if after > 0 else -after) < 1e-12 * more:
                    after = 0.0
                    entry_price[j], entry_cost[j] = np.nan, 0.0
                units[j] = after
            # A symbol on its last bar before the universe's end is closed at that close.
            if leaving[f]:
                for j in range(count):
                    if delist_bar[j] != f:
                        continue
                    u = units[j]
                    if u != 0.0:
                        price = close[f, j] * (1.0 - slip if u > 0 else 1.0 + slip)
                        cash, paid, n = _close_one(j, f, price, u, units, entry_price, entry_cost,
                                                   entry_bar, cash, paid, rate, fixed, flow, trade_ints,
                                                   trade_floats, n, 1)
                        notional_traded += abs(u) * price
                    traded[j] = 0.0
                    pending[j] = False
        for j in range(count):
            c = close[f, j]
            if not np.isnan(c):
                last_close[j] = c
        if close_at_end and f == last:
            for j in range(count):
                u = units[j]
                if u != 0.0:
                    price = last_close[j] * (1.0 - slip if u > 0 else 1.0 + slip)
                    cash, paid, n = _close_one(j, f, price, u, units, entry_price, entry_cost, entry_bar,
                                               cash, paid, rate, fixed, flow, trade_ints, trade_floats, n, 2)
                    notional_traded += abs(u) * price
        # Mark the close: equity, the legs' P&L, gross exposure.
        total = 0.0
        gross = 0.0
        long_pnl = 0.0
        short_pnl = 0.0
        holding = False
        for j in range(count):
            u = units[j]
            value = u * last_close[j]
            total += value
            gross += value if value > 0 else -value
            side = units_then[j] if units_then[j] != 0.0 else u
            if side != 0.0:
                pnl = value - value_then[j] - flow[j]
                if side > 0:
                    long_pnl += pnl
                else:
                    short_pnl += pnl
            value_then[j] = value
            units_then[j] = u
            flow[j] = 0.0
            if u != 0.0:
                holding = True
            if keep_held:
                held_out[f, j] = u
        per_bar[EQUITY, f] = cash + total
        per_bar[CASH, f] = cash
        per_bar[LONG_PNL, f] = long_pnl
        per_bar[SHORT_PNL, f] = short_pnl
        per_bar[TRADED, f] = notional_traded
        per_bar[GROSS, f] = gross
        if holding:
            in_market += 1
    return n, paid, in_market


@njit(cache=True, nogil=True)
def _close_one(j: int, f: int, price: float, u: float, units: np.ndarray, entry_price: np.ndarray,
               entry_cost: np.ndarray, entry_bar: np.ndarray, cash: float, paid: float, rate: float,
               fixed: float, flow: np.ndarray, trade_ints: np.ndarray, trade_floats: np.ndarray,
               n: int, reason: int) -> tuple[float, float, int]:
    """Close symbol ``j``'s whole position at ``price`` (after slippage)."""
    closed = u if u > 0 else -u
    cost = fixed + closed * price * rate
    paid += cost
    cash = cash - (-u) * price - cost
    flow[j] += (-u) * price + cost
    pnl = u * (price - entry_price[j]) - entry_cost[j] - cost
    n = _record(trade_ints, trade_floats, n, j, entry_bar[j], f, reason, entry_price[j], price, u, pnl,
                pnl / (closed * entry_price[j]))
    units[j] = 0.0
    entry_price[j], entry_cost[j] = np.nan, 0.0
    return cash, paid, n


@njit(cache=True, nogil=True)
def _record(trade_ints: np.ndarray, trade_floats: np.ndarray, n: int, symbol: int, entry: int, exit_: int,
            reason: int, entry_price: float, exit_price: float, size: float, pnl: float, ret: float) -> int:
    trade_ints[0, n], trade_ints[1, n], trade_ints[2, n], trade_ints[3, n] = symbol, entry, exit_, reason
    trade_floats[0, n], trade_floats[1, n], trade_floats[2, n] = entry_price, exit_price, size
    trade_floats[3, n], trade_floats[4, n] = pnl, ret
    return n + 1


