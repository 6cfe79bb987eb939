"""The formulas behind the newer statistics of :mod:`nbbacktest.engine.metrics`.

Drawdown periods (longest, average depth and duration, from what
:func:`~.curve_kernel.curve_pass` counts), beta against buy & hold, SQN, Kelly and
trade durations; :func:`~.metrics.summarize` calls them once per run. What depends
on the data set alone (the market's returns, :class:`Market`) is built once per
data set. The definitions are in ``metrics``' table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nbbacktest.engine.curve_kernel import NO_MARKET, curve_pass
from nbbacktest.engine.ledger import Ledger, TradeBook

if TYPE_CHECKING:
    from nbbacktest.engine.metrics import Timeline

__all__ = ["Market", "drawdown_facts", "drawdown_periods", "kelly", "sqn", "trade_bars", "trade_durations"]

_NAN = math.nan


class Market:
    """The buy & hold returns of a data set, for every run's beta.

    ``m[i] = close[i + 1] / close[i] - 1`` for the ``n - 1`` bar-to-bar returns;
    their centred values ``m - mean(m)`` are worked out as ``q - mean(q)``, ``q =
    close[i + 1] / close[i]`` (the 1 cancels), and ``sum_sq = sum(centred ** 2)``.
    Only ``close``, ``mean_q`` and ``sum_sq`` are kept: a run's pass over its curve
    (:func:`~.curve_kernel.curve_pass`) works each centred return out again, with
    the same operations, instead of reading a kept array the length of the data.

    Examples
    --------
    >>> market = Market(np.array([10.0, 11.0, 9.9]))
    >>> market.centred.round(6).tolist(), round(market.sum_sq, 6)
    ([0.1, -0.1], 0.02)
    """

    __slots__ = ("close", "mean_q", "sum_sq")

    def __init__(self, close: np.ndarray) -> None:
        self.close = np.ascontiguousarray(close, dtype=np.float64)
        n = len(self.close) - 1
        # A zero or non-finite close gives NaN returns and so a NaN beta: not an error.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            q = np.divide(self.close[1:], self.close[:-1])
            self.mean_q = float(np.add.reduce(q)) / n if n > 0 else _NAN
            centred = np.subtract(q, self.mean_q, out=q)
            # einsum sums the squares without a temporary array (no BLAS, no threads).
            self.sum_sq = float(np.einsum("i,i->", centred, centred)) if n > 0 else _NAN

    @property
    def centred(self) -> np.ndarray:
        """The centred market returns, ``close[i + 1] / close[i] - mean_q``, as a new array."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.divide(self.close[1:], self.close[:-1]) - self.mean_q


def drawdown_periods(line: Timeline, equity: np.ndarray, initial_cash: float) -> tuple[int, int, float]:
    """Longest and mean duration (ns) and mean depth of the drawdown periods of ``equity``.

    The running peak starts at ``initial_cash``. A period runs from a bar at the
    peak to the next bar back at it (or to the last bar if never recovered; from
    the first bar if equity is already below the initial cash there); its depth is
    ``min(equity / peak) - 1`` over it. Returns ``(0, 0, 0.0)`` without a period.

    Examples
    --------
    >>> from nbbacktest.engine.metrics import Timeline
    >>> import pandas as pd
    >>> line = Timeline(pd.date_range("2024-01-01", periods=5, freq="D"))
    >>> equity = np.array([100.0, 90.0, 100.0, 100.0, 80.0])  # 2 days, then 1 unrecovered
    >>> longest, mean, depth = drawdown_periods(line, equity, 100.0)
    >>> longest // 86_400_000_000_000, mean // 3_600_000_000_000, round(depth, 6)
    (2, 36, -0.15)
    """
    facts = curve_pass(np.asarray(equity, dtype=np.float64), float(initial_cash), NO_MARKET, 0.0,
                       line.times)
    return drawdown_facts(line, *facts[5:])


def drawdown_facts(line: Timeline, periods: int, longest: int, total: int, depth_sum: float,
                   open_start: int) -> tuple[int, int, float]:
    """:func:`drawdown_periods` from what :func:`.curve_kernel.curve_pass` counted.

    ``longest`` and ``total`` span the recovered periods in ``line.times``' units;
    ``open_start`` is when the unrecovered last period started (-1: none).

    Examples
    --------
    >>> from nbbacktest.engine.metrics import Timeline
    >>> import pandas as pd
    >>> line = Timeline(pd.date_range("2024-01-01", periods=3, freq="D"))
    >>> drawdown_facts(line, 0, 0, 0, 0.0, -1)
    (0, 0, 0.0)
    """
    per_unit = line.ns_per_unit
    longest, total = longest * per_unit, total * per_unit
    if open_start >= 0:  # never recovered after the last peak
        last = line.last_ns - open_start * per_unit
        longest, total = max(longest, last), total + last
    if not periods:
        return 0, 0, 0.0
    return longest, total // periods, depth_sum / periods - 1.0


def sqn(pnl: np.ndarray, mean: float) -> float:
    """System quality number: ``sqrt(trades) * mean(pnl) / std(pnl, ddof=1)``.

    NaN with fewer than two trades or when every P&L is the same.

    Examples
    --------
    >>> round(sqn(np.array([10.0, -5.0, 25.0]), 10.0), 6)  # sqrt(3) * 10 / 15
    1.154701
    """
    n = len(pnl)
    if n < 2:
        return _NAN
    deviation = pnl - mean
    std = math.sqrt(float(np.add.reduce(deviation * deviation)) / (n - 1))
    return math.sqrt(n) * mean / std if std > 0.0 else _NAN


def kelly(win_rate: float, mean_win: float, mean_loss: float) -> float:
    """Kelly criterion: ``w - (1 - w) / (mean win / |mean loss|)``, ``w`` the win rate.

    ``mean_win`` is the mean P&L of winning trades, ``mean_loss`` that of losing
    ones (negative); NaN without a win or without a loss.

    Examples
    --------
    >>> kelly(0.5, 20.0, -10.0)   # 0.5 - 0.5 / 2
    0.25
    """
    if not (mean_win > 0.0 and mean_loss < 0.0):
        return _NAN
    return win_rate - (1.0 - win_rate) / (mean_win / -mean_loss)


def trade_durations(line: Timeline, entry: np.ndarray, exit_: np.ndarray) -> tuple[int, int]:
    """The longest and the mean of ``time[exit_bar] - time[entry_bar]``, in nanoseconds.

    The spans are taken in the index's stored unit and scaled once (the same
    integers as scaling each); the mean is rounded down to the nanosecond. At least
    one trade.

    Examples
    --------
    >>> from nbbacktest.engine.metrics import Timeline
    >>> import pandas as pd
    >>> line = Timeline(pd.date_range("2024-01-01", periods=4, freq="h"))
    >>> longest, mean = trade_durations(line, np.array([0, 1]), np.array([3, 2]))
    >>> longest // 3_600_000_000_000, mean // 60_000_000_000   # 3 h and 90 min
    (3, 120)
    """
    times = line.times
    spans = times[exit_]
    spans -= times[entry]
    per_unit = line.ns_per_unit
    # The total in Python ints: 1,300 trades of 70 days in nanoseconds pass int64's limit.
    total = sum(spans.tolist())
    return int(np.maximum.reduce(spans)) * per_unit, total * per_unit // len(spans)


def trade_bars(ledger: Ledger) -> tuple[np.ndarray, np.ndarray]:
    """The entry and exit bar of every closed trade of a run, in book order.

    A :class:`TradeBook` (a vectorized run without resizes) holds a position from
    one change of target to the next: the trades are read off the ledger's states,
    without building the records. Any other book is read record by record.

    Examples
    --------
    >>> ledger = Ledger(100.0, 4, np.array([1, 3]), [10.0, 0.0], [0.0, 120.0],
    ...                 np.array([20.0]), np.array([0.2]), [(1, 3, 10.0, 12.0, 10.0, 20.0, 0.2,
    ...                 None, "signal")])
    >>> trade_bars(ledger)
    (array([1]), array([3]))
    """
    trades: Sequence[tuple] = ledger.trades
    if isinstance(trades, TradeBook):
        # units[k + 1] is held after change k; a position held after change j closes at j + 1.
        opened = ledger.units[1:-1].nonzero()[0]
        bars = ledger.bars
        return bars[opened], bars[opened + 1]
    count = len(trades)
    entry = np.fromiter([t[0] for t in trades], np.intp, count)
    return entry, np.fromiter([t[1] for t in trades], np.intp, count)
