"""The formulas behind the newer statistics of :mod:`nbbacktest.engine.metrics`.

Drawdown periods (longest, average depth and duration), beta against buy & hold,
SQN, Kelly and trade durations, each a few numpy passes; :func:`~.metrics.summarize`
calls them once per run. What depends on the data set alone (the market's
returns, :class:`Market`) is built once per data set. Like ``metrics``, this needs
numpy and pandas only; the definitions are in ``metrics``' table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nbbacktest.engine.ledger import Ledger, TradeBook

if TYPE_CHECKING:
    from nbbacktest.engine.metrics import Timeline

__all__ = ["Market", "drawdown_periods", "kelly", "sqn", "trade_bars", "trade_durations"]

_NAN = math.nan


class Market:
    """The buy & hold returns of a data set, centred, for every run's beta.

    ``m[i] = close[i + 1] / close[i] - 1`` for the ``n - 1`` bar-to-bar returns;
    ``centred = m - mean(m)`` (worked out as ``q - mean(q)``, ``q = close[i + 1] /
    close[i]``: the 1 cancels) and ``sum_sq = sum(centred ** 2)``. A run's beta is
    then one multiply and one sum (see :func:`~.metrics.summarize`). Four passes
    over the closes, once per data set.

    Examples
    --------
    >>> market = Market(np.array([10.0, 11.0, 9.9]))
    >>> market.centred.round(6).tolist(), round(market.sum_sq, 6)
    ([0.1, -0.1], 0.02)
    """

    __slots__ = ("centred", "sum_sq")

    def __init__(self, close: np.ndarray) -> None:
        close = np.asarray(close, dtype=np.float64)
        n = len(close) - 1
        # A zero or non-finite close gives NaN returns and so a NaN beta: not an error.
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            centred = np.divide(close[1:], close[:-1])
            if n > 0:
                centred -= float(np.add.reduce(centred)) / n
            # einsum sums the squares without a temporary array (no BLAS, no threads):
            # on long data that saves more than the sum costs.
            self.sum_sq = float(np.einsum("i,i->", centred, centred)) if n > 0 else _NAN
        centred.setflags(write=False)
        self.centred = centred


def drawdown_periods(line: Timeline, at_peak: np.ndarray, ratio: np.ndarray) -> tuple[int, int, float]:
    """Longest and mean duration (ns) and mean depth of the drawdown periods.

    ``at_peak[i]`` is True where ``equity[i] >= running peak``; ``ratio`` is
    ``equity / peak``. A period runs from a bar at the peak to the next bar back at
    it (or to the last bar if never recovered; from the first bar if equity is
    already below the initial cash there); its depth is ``min(ratio) - 1`` over it.
    Only the bars where ``at_peak`` flips are looked at: there are far fewer of
    them than bars. Returns ``(0, 0, 0.0)`` without a period.

    Examples
    --------
    >>> from nbbacktest.engine.metrics import Timeline
    >>> import pandas as pd
    >>> line = Timeline(pd.date_range("2024-01-01", periods=5, freq="D"))
    >>> equity = np.array([100.0, 90.0, 100.0, 100.0, 80.0])  # 2 days, then 1 unrecovered
    >>> peak = np.maximum.accumulate(equity)
    >>> longest, mean, depth = drawdown_periods(line, equity >= peak, equity / peak)
    >>> longest // 86_400_000_000_000, mean // 3_600_000_000_000, round(depth, 6)
    (2, 36, -0.15)
    """
    # bar i where at_peak[i] != at_peak[i + 1]: the last bar at a peak before a
    # drawdown, or the last bar under water before a recovery at bar i + 1
    flips = (at_peak[1:] != at_peak[:-1]).nonzero()[0]
    underwater_first = not at_peak[0]
    if not len(flips):
        # Below the initial cash from the first bar to the last, or never below a peak.
        if underwater_first:
            return line.span_ns, line.span_ns, float(np.minimum.reduce(ratio)) - 1.0
        return 0, 0, 0.0
    # Recoveries alternate with drawdown starts, the first one first when bar 0 is
    # under water: make them the recovery bars; then every bound is a bar.
    flips[1 - underwater_first :: 2] += 1
    if underwater_first:
        flips = np.concatenate((np.zeros(1, np.intp), flips))
    per_unit = line.ns_per_unit
    times = line.times[flips]
    # min(ratio) over [start, recovery) of every period (the odd segments are at the peak)
    depths = np.minimum.reduceat(ratio, flips)[0::2]
    starts = times[0::2]
    ends = times[1::2]
    spans = ends - starts[: len(ends)]
    longest = int(np.maximum.reduce(spans)) * per_unit if len(spans) else 0
    total = int(np.add.reduce(spans)) * per_unit if len(spans) else 0
    if len(starts) > len(ends):
        # Never recovered after the last peak.
        last = line.last_ns - int(starts[-1]) * per_unit
        longest = max(longest, last)
        total += last
    count = len(starts)
    return longest, total // count, float(np.add.reduce(depths)) / count - 1.0


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
