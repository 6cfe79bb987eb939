"""The vectorized runs' fills in one compiled loop: :func:`.broker.follow_changes_paid`'s core.

A vectorized run changes its target exposure at a few bars; each change closes
what is held and opens the new side, with :meth:`.broker.Broker.follow`'s cash and
units arithmetic. In Python that loop was a quarter of a sweep's per-point time on
hourly data (thousands of changes a run); compiled, it is a small fraction of it.
The operations on each value are those of ``Broker.follow``, in the same order
(numba does not fuse a multiply and an add), so the fills have the same bits.
"""

from __future__ import annotations

import numpy as np

from nbbacktest.engine.compiled import njit

__all__ = ["follow_pass"]


@njit(cache=True, nogil=True, error_model="numpy")
def follow_pass(targets: np.ndarray, buy: np.ndarray, sell: np.ndarray, cash: float,
                commission: float, fractional: bool, unit_log: np.ndarray, cash_log: np.ndarray,
                pnl_log: np.ndarray, return_log: np.ndarray) -> tuple:  # pragma: no cover - compiled
    """Fill each change of target in turn, until one that only resizes a position.

    ``targets[k]`` is the k-th target exposure, bought at ``buy[k]`` and sold at
    ``sell[k]`` (slipped prices). After change ``k`` the units held and the cash
    go to ``unit_log[k]`` and ``cash_log[k]``; each closed trade's P&L and return to
    ``pnl_log`` and ``return_log`` (each at least ``len(targets)`` long).

    Returns
    -------
    tuple
        ``(done, trades, cash, units, entry_price, entry_cost, paid)``: the changes
        filled (fewer than ``len(targets)`` when change ``done`` keeps the side and
        changes the size, which :meth:`.broker.Broker.follow` fills), the trades
        closed, and the state after the last change filled.

    Examples
    --------
    >>> logs = [np.empty(2) for _ in range(4)]
    >>> follow_pass(np.array([1.0, 0.0]), np.array([10.0, 11.0]), np.array([10.0, 11.0]),
    ...             1000.0, 0.0, True, *logs)
    (2, 1, 1100.0, 0.0, 10.0, 0.0, 0.0)
    >>> logs[2][:1].tolist()  # the trade's P&L
    [100.0]
    """
    gross = 1.0 + commission
    units = entry_price = entry_cost = paid = 0.0
    trades = 0
    done = 0
    for k in range(len(targets)):
        exposure = targets[k]
        if units != 0.0:
            if exposure != 0.0 and (exposure > 0.0) == (units > 0.0):
                break  # same side, new size: Broker.follow from here on
            # Close the whole position: cost = |qty| * price * commission and
            # cash -= qty * price + cost, with qty = -units.
            if units > 0.0:
                notional = units * sell[k]
                cost = notional * commission
                paid += cost
                cash = cash + notional - cost
                pnl = units * (sell[k] - entry_price) - entry_cost - cost
                pnl_log[trades] = pnl
                return_log[trades] = pnl / (units * entry_price)
            else:
                notional = -units * buy[k]
                cost = notional * commission
                paid += cost
                cash = cash - notional - cost
                pnl = units * (buy[k] - entry_price) - entry_cost - cost
                pnl_log[trades] = pnl
                return_log[trades] = pnl / (-units * entry_price)
            trades += 1
            units = 0.0
        if exposure != 0.0 and not cash <= 0.0:
            # Open: target = exposure * equity / (price * (1 + commission)).
            if exposure > 0.0:
                target = exposure * cash / (buy[k] * gross)
                if not fractional:
                    target = np.trunc(target)
                if target > 0.0:
                    notional = target * buy[k]
                    entry_cost = notional * commission
                    paid += entry_cost
                    cash = cash - notional - entry_cost
                    units, entry_price = target, buy[k]
            else:
                target = exposure * cash / (sell[k] * gross)
                if not fractional:
                    target = np.trunc(target)
                if target < 0.0:
                    notional = -target * sell[k]
                    entry_cost = notional * commission
                    paid += entry_cost
                    cash = cash + notional - entry_cost
                    units, entry_price = target, sell[k]
        unit_log[k] = units
        cash_log[k] = cash
        done = k + 1
    return done, trades, cash, units, entry_price, entry_cost, paid
