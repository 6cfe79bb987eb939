"""A run's equity curve and its per-bar statistics in compiled passes that allocate nothing.

As numpy operations the per-bar part of :func:`~.metrics.summarize` was a dozen
passes over the curve, half of them writing a temporary the length of the data:
two scratch rows beside the equity, and one more array for the equity itself
(``np.repeat`` of each fill's state). Here the curve is written once, from the
fills' segments, into a row the caller owns, and two read-only loops give every
sum the statistics need:

- :func:`equity_of_segments`: ``cash[k] + units[k] * close[t]`` over segment ``k``;
- :func:`curve_pass`: the bar returns' sum, their product sum with the market's
  centred returns (beta), the downside squares, the peak, the deepest
  ``equity / peak`` and the drawdown periods (start, recovery, depth);
- :func:`deviation_pass`: the squared deviations of the returns from their mean
  (the second pass of a two-pass standard deviation).

Sums run bar after bar in float64; the operations on each value are those the
statistics' table in :mod:`~.metrics` defines, and NaN goes where numpy would
send it (a blown-up account gives NaN ratios, not an error).
"""

from __future__ import annotations

import numpy as np

from nbbacktest.engine.compiled import njit

__all__ = ["NO_MARKET", "curve_pass", "deviation_pass", "equity_of_segments"]

#: ``curve_pass``'s ``close`` for a run without a beta to compute.
NO_MARKET = np.empty(0)


@njit(cache=True, nogil=True, error_model="numpy")
def equity_of_segments(lengths: np.ndarray, units: np.ndarray, cash: np.ndarray,
                       close: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out[t] = cash[k] + units[k] * close[t]`` for the ``lengths[k]`` bars of segment ``k``.

    Examples
    --------
    >>> out = np.empty(4)
    >>> equity_of_segments(np.array([1, 2, 1]), np.array([0.0, 10.0, 0.0]),
    ...                    np.array([100.0, 0.0, 120.0]), np.array([10.0, 10.0, 11.0, 12.0]), out)
    >>> out.tolist()
    [100.0, 100.0, 110.0, 120.0]
    """
    t = 0
    for k in range(len(lengths)):
        held, left = units[k], cash[k]
        for _ in range(lengths[k]):
            out[t] = left + held * close[t]
            t += 1


@njit(cache=True, nogil=True, error_model="numpy")
def curve_pass(equity: np.ndarray, initial_cash: float, close: np.ndarray, mean_q: float,
               times: np.ndarray) -> tuple:  # pragma: no cover - compiled
    """One pass over ``equity``: the sums and extremes :func:`~.metrics.summarize` needs.

    ``r[i] = equity[i] / equity[i - 1] - 1`` for ``i >= 1``; the market's centred
    return beside it is ``close[i] / close[i - 1] - mean_q`` (see
    :class:`~.stat_formulas.Market`; ``close`` empty: no beta). The running peak starts at
    ``initial_cash``; a drawdown period runs from the last bar at the peak (bar 0
    when the curve starts below it) to the next bar back at it, or to the end.

    Returns
    -------
    tuple
        ``(sum_r, sum_r_centred, sum_down_sq, equity_peak, min_ratio, periods,
        longest, total, depth_sum, open_start)``: the sum of ``r``, of ``r`` times
        the centred market return, of ``min(r, 0) ** 2``; ``max(equity)``; ``min(equity /
        peak)``; the number of drawdown periods; the longest and the summed spans of
        the recovered ones in ``times``' units; the sum of their ``min(equity /
        peak)``; and the time the unrecovered last period started (-1: none).
        ``equity_peak`` and ``min_ratio`` are NaN when the curve holds a NaN.

    Examples
    --------
    >>> equity = np.array([100.0, 90.0, 100.0, 100.0, 80.0])
    >>> facts = curve_pass(equity, 100.0, NO_MARKET, 0.0, np.arange(5))
    >>> facts[3:8]  # peak, deepest ratio, 2 periods, one recovered after 2 units
    (100.0, 0.8, 2, 2, 2)
    >>> round(facts[8], 12), facts[9]  # depths 0.9 and 0.8; the last open since time 3
    (1.7, 3)
    """
    n = len(equity)
    beta = len(close) > 0
    sum_r = sum_rc = down_sq = 0.0
    running = equity[0]
    min_ratio = np.inf
    broken = False  # a NaN in the curve or its ratios: numpy's max and min give NaN
    periods = longest = total = 0
    depth_sum = 0.0
    start = -1  # the bar the current drawdown period started at
    depth = np.inf
    previous = equity[0]
    for t in range(n):
        value = equity[t]
        if t > 0:
            r = value / previous - 1.0
            previous = value
            sum_r += r
            if beta:
                sum_rc += r * (close[t] / close[t - 1] - mean_q)
            down = r if not r >= 0.0 else 0.0  # min(r, 0), NaN kept
            down_sq += down * down
        if value > running:
            running = value
        elif value != value:
            broken = True
        peak = running if running > initial_cash else initial_cash
        ratio = value / peak
        if ratio != ratio:
            broken = True
        elif ratio < min_ratio:
            min_ratio = ratio
        if value >= peak:  # at the peak (equity never exceeds it)
            if start >= 0:
                span = times[t] - times[start]
                longest = max(longest, span)
                total += span
                periods += 1
                depth_sum += depth
                start = -1
        elif start < 0:
            start = t - 1 if t > 0 else 0
            depth = ratio
        elif ratio < depth:
            depth = ratio
    open_start = -1
    if start >= 0:
        periods += 1
        depth_sum += depth
        open_start = times[start]
    if broken:
        running = min_ratio = np.nan
    return (sum_r, sum_rc, down_sq, running, min_ratio, periods, longest, total, depth_sum,
            open_start)


@njit(cache=True, nogil=True, error_model="numpy")
def deviation_pass(equity: np.ndarray, mean: float) -> float:  # pragma: no cover - compiled
    """``sum((r[i] - mean) ** 2)`` over the returns ``r[i] = equity[i] / equity[i - 1] - 1``, ``i >= 1``.

    Examples
    --------
    >>> round(deviation_pass(np.array([100.0, 110.0, 99.0]), 0.0), 6)  # 0.1 ** 2 + 0.1 ** 2
    0.02
    """
    out = 0.0
    previous = equity[0]
    for t in range(1, len(equity)):
        value = equity[t]
        deviation = (value / previous - 1.0) - mean
        previous = value
        out += deviation * deviation
    return out
