"""Performance statistics of one backtest, from plain numpy arrays.

This module needs nothing but numpy and pandas (compare backtesting.py's
``_stats.py``): the simulator, a test or a script call :func:`compute_stats` the
same way. It runs once per backtest inside sweeps of many thousands of backtests,
so the hot path works on numpy arrays only and builds pandas objects just for the
few scalar outputs.

Definitions
-----------
``n`` is the number of bars. ``r`` are the per-bar simple returns of the series
``[initial_cash, equity[0], ..., equity[n-1]]``, i.e. ``n`` returns, the first one
being ``equity[0] / initial_cash - 1``. ``bpy`` is the number of bars per year.
``years = (end - start) / 365.25 days``.

========================== ==========================================================
key                        formula
========================== ==========================================================
``start``, ``end``         ``pd.Timestamp`` of the first / last bar (in ``tz`` if given)
``duration``               ``end - start`` (``pd.Timedelta``)
``equity_final``           ``equity[-1]``
``equity_peak``            ``max(equity)``
``return_pct``             ``(equity[-1] / initial_cash - 1) * 100``
``buy_hold_return_pct``    ``(close[-1] / close[0] - 1) * 100``; NaN if ``close[0] == 0``
``periods_per_year``       ``bpy = (n - 1) / years``; NaN if ``n < 2`` or ``years == 0``
``cagr_pct``               ``((equity[-1] / initial_cash) ** (1 / years) - 1) * 100``;
                           NaN if ``years == 0``; -100 if ``equity[-1] <= 0``
``volatility_ann_pct``     ``std(r, ddof=1) * sqrt(bpy) * 100``; NaN if ``n < 2``
``sharpe``                 ``mean(r) / std(r, ddof=1) * sqrt(bpy)`` (risk-free rate 0);
                           NaN if the std is 0 or undefined
``sortino``                ``mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(bpy)``;
                           NaN if the downside deviation is 0
``max_drawdown_pct``       ``min(equity / peak - 1) * 100`` with ``peak`` the running
                           max of ``[initial_cash, equity...]``; always ``<= 0``
``calmar``                 ``cagr_pct / |max_drawdown_pct|``; NaN if the drawdown is 0
``max_drawdown_duration``  longest time from a bar at the running peak to the first
                           later bar back at or above it (or to the last bar if never
                           recovered; from the first bar if it is already below
                           ``initial_cash``); ``Timedelta(0)`` without a drawdown
``trades``                 number of closed trades (``int``)
``win_rate_pct``           ``count(trade_pnl > 0) / trades * 100``
``best_trade_pct``         ``max(trade_returns) * 100``
``worst_trade_pct``        ``min(trade_returns) * 100``
``avg_trade_pct``          ``mean(trade_returns) * 100``
``profit_factor``          ``sum(pnl[pnl > 0]) / |sum(pnl[pnl < 0])|``; inf with
                           gains and no losses, 0.0 with losses and no gains, NaN
                           with neither
``exposure_time_pct``      ``mean(in_market) * 100``
========================== ==========================================================

Trade statistics are NaN when there are no trades. Every float is a Python
``float`` and ``trades`` a Python ``int``, so result rows compare and pickle
cleanly. Sums are numpy's pairwise reductions (no BLAS, no threads), so equal
inputs give bit-identical outputs in every process.

Bar times are int64 nanoseconds. pandas 3 often stores a DatetimeIndex in
microseconds, so pass ``index.as_unit("ns").asi8`` (or the DatetimeIndex itself),
never a bare ``index.asi8``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["NUMERIC_STATS", "STAT_LABELS", "STAT_NAMES", "compute_stats", "periods_per_year"]

STAT_LABELS: dict[str, str] = {
    "start": "Start",
    "end": "End",
    "duration": "Duration",
    "equity_final": "Equity Final [$]",
    "equity_peak": "Equity Peak [$]",
    "return_pct": "Return [%]",
    "buy_hold_return_pct": "Buy & Hold Return [%]",
    "periods_per_year": "Bars per Year",
    "cagr_pct": "CAGR [%]",
    "volatility_ann_pct": "Volatility (Ann.) [%]",
    "sharpe": "Sharpe ratio",
    "sortino": "Sortino ratio",
    "max_drawdown_pct": "Max. Drawdown [%]",
    "calmar": "Calmar ratio",
    "max_drawdown_duration": "Max. Drawdown Duration",
    "trades": "# Trades",
    "win_rate_pct": "Win Rate [%]",
    "best_trade_pct": "Best Trade [%]",
    "worst_trade_pct": "Worst Trade [%]",
    "avg_trade_pct": "Avg. Trade [%]",
    "profit_factor": "Profit Factor",
    "exposure_time_pct": "Exposure Time [%]",
}
STAT_NAMES: tuple[str, ...] = tuple(STAT_LABELS)
_NON_NUMERIC = frozenset({"start", "end", "duration", "max_drawdown_duration"})
NUMERIC_STATS: tuple[str, ...] = tuple(k for k in STAT_NAMES if k not in _NON_NUMERIC)

_NAN = math.nan
# A Julian year, so that hourly 24/7 data gives exactly 24 * 365.25 = 8766 bars/year.
_NS_PER_YEAR = 365.25 * 86_400 * 1_000_000_000
_ZERO_TD = pd.Timedelta(0)


def _as_ns(index: object) -> tuple[np.ndarray, object]:
    """Return ``index`` as int64 nanoseconds, and the tz it carries (if any)."""
    if isinstance(index, pd.DatetimeIndex):
        # pandas 3 often stores microseconds: convert, don't reinterpret.
        return index.as_unit("ns").asi8, index.tz
    arr = np.asarray(index)
    kind = arr.dtype.kind
    if kind == "M":
        if arr.dtype != np.dtype("M8[ns]"):
            arr = arr.astype("M8[ns]")
        return arr.view(np.int64), None
    if kind in "iu":
        return arr.astype(np.int64, copy=False), None
    raise ValueError(
        f"`index` must be datetime64 or int64 nanoseconds, got dtype {arr.dtype}; "
        "pass `df.index.as_unit('ns').asi8` or `df.index.values`."
    )


def _check_1d(name: str, arr: np.ndarray, n: int) -> None:
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"`{name}` has shape {arr.shape} but `equity` has {n} bars; index, equity, "
            "close and in_market must hold one value per bar."
        )


def periods_per_year(index_ns: np.ndarray) -> float:
    """Bars per year of a time index: ``(n - 1) / years spanned``.

    Parameters
    ----------
    index_ns : numpy.ndarray
        Bar times as int64 nanoseconds or ``datetime64``, increasing.

    Returns
    -------
    float
        ``(n - 1) / ((index[-1] - index[0]) / 365.25 days)``; NaN when there are
        fewer than two bars or they span no time.

    Examples
    --------
    >>> idx = pd.date_range("2024-01-01", periods=24 * 365 + 1, freq="h")
    >>> round(periods_per_year(idx.as_unit("ns").asi8), 2)
    8766.0
    """
    t, _ = _as_ns(index_ns)
    n = t.shape[0]
    if n < 2:
        return _NAN
    span = int(t[-1]) - int(t[0])
    if span <= 0:
        return _NAN
    # (n - 1) intervals over span / (365.25 d) years
    return (n - 1) * _NS_PER_YEAR / span


def _max_drawdown_duration_ns(t: np.ndarray, at_peak: np.ndarray) -> int:
    """Longest span from a bar at the running peak to the next bar back at it.

    ``at_peak[i]`` is True where ``equity[i] >= running peak``. A drawdown that is
    never recovered ends at the last bar; one that starts on the first bar (equity
    already below the initial cash) starts at the first bar's time.
    """
    n = at_peak.shape[0]
    peaks = at_peak.nonzero()[0]
    if peaks.shape[0] == 0:
        # Below the initial cash from the first bar to the last.
        return int(t[-1]) - int(t[0])
    longest = 0
    first, last = int(peaks[0]), int(peaks[-1])
    if first > 0:
        # Underwater from bar 0 until the first recovery.
        longest = int(t[first]) - int(t[0])
    if last < n - 1:
        # Never recovered after the last peak.
        longest = max(longest, int(t[-1]) - int(t[last]))
    if peaks.shape[0] > 1:
        tp = t[peaks]
        spans = tp[1:] - tp[:-1]
        # Consecutive peak bars enclose no drawdown.
        spans[(peaks[1:] - peaks[:-1]) == 1] = 0
        longest = max(longest, int(np.maximum.reduce(spans)))
    return longest


def compute_stats(
    index: np.ndarray,
    equity: np.ndarray,
    initial_cash: float,
    close: np.ndarray,
    in_market: np.ndarray,
    trade_pnl: np.ndarray,
    trade_returns: np.ndarray,
    tz: object | None = None,
) -> dict[str, object]:
    """Compute the performance statistics of one backtest.

    The formulas are listed in this module's docstring. Degenerate inputs (one
    bar, flat equity, no trades) give NaN where a statistic is undefined instead
    of raising.

    Parameters
    ----------
    index : numpy.ndarray
        Bar times, ``datetime64`` or int64 nanoseconds since the epoch (UTC
        instants when ``tz`` is given, as in ``DatetimeIndex.asi8``). A
        ``pd.DatetimeIndex`` is accepted too; its tz is used when ``tz`` is None.
    equity : numpy.ndarray
        Equity at each bar's close, float64, ``n >= 1`` values.
    initial_cash : float
        Cash before the first bar, ``> 0``.
    close : numpy.ndarray
        Close prices, ``n`` values, for the buy & hold return.
    in_market : numpy.ndarray
        Bool, True where a position is held at the bar's close, ``n`` values.
    trade_pnl : numpy.ndarray
        Profit or loss, in money and after costs, of each closed trade.
    trade_returns : numpy.ndarray
        Return of each closed trade as a fraction (0.05 is +5 %), same length as
        ``trade_pnl``.
    tz : str or tzinfo, optional
        Time zone of the returned ``start`` and ``end`` Timestamps.

    Returns
    -------
    dict[str, object]
        One value per key of :data:`STAT_NAMES`, in that order: ``pd.Timestamp``
        for start/end, ``pd.Timedelta`` for the durations, ``int`` for trades and
        Python ``float`` for everything else.

    Raises
    ------
    ValueError
        If ``equity`` is empty, if index, equity, close and in_market differ in
        length, if trade_pnl and trade_returns differ in length, if ``index`` is
        not a time array, or if ``initial_cash`` is not a positive finite number.

    Examples
    --------
    >>> idx = pd.date_range("2024-01-01", periods=4, freq="D").as_unit("ns").asi8
    >>> st = compute_stats(
    ...     idx,
    ...     equity=np.array([100.0, 110.0, 99.0, 121.0]),
    ...     initial_cash=100.0,
    ...     close=np.array([10.0, 11.0, 10.0, 12.0]),
    ...     in_market=np.array([True, True, True, False]),
    ...     trade_pnl=np.array([21.0]),
    ...     trade_returns=np.array([0.21]),
    ... )
    >>> round(st["return_pct"], 6), round(st["max_drawdown_pct"], 6), st["trades"]
    (21.0, -10.0, 1)
    >>> st["max_drawdown_duration"]
    Timedelta('2 days 00:00:00')
    """
    t, index_tz = _as_ns(index)
    if tz is None:
        tz = index_tz
    equity = np.asarray(equity, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    in_market = np.asarray(in_market)
    trade_pnl = np.asarray(trade_pnl, dtype=np.float64)
    trade_returns = np.asarray(trade_returns, dtype=np.float64)

    if equity.ndim != 1:
        raise ValueError(f"`equity` must be 1-D, got shape {equity.shape}.")
    n = equity.shape[0]
    if n == 0:
        raise ValueError("`equity` is empty: compute_stats needs at least one bar.")
    _check_1d("index", t, n)
    _check_1d("close", close, n)
    _check_1d("in_market", in_market, n)
    if trade_pnl.ndim != 1 or trade_returns.shape != trade_pnl.shape:
        raise ValueError(
            f"`trade_pnl` has shape {trade_pnl.shape} but `trade_returns` has shape "
            f"{trade_returns.shape}; both must hold one value per closed trade."
        )
    initial_cash = float(initial_cash)
    if not (initial_cash > 0.0 and math.isfinite(initial_cash)):
        raise ValueError(f"`initial_cash` must be a positive finite number, got {initial_cash!r}.")

    t0 = int(t[0])
    t1 = int(t[-1])
    span_ns = t1 - t0
    years = span_ns / _NS_PER_YEAR
    # bpy = (n - 1) bars / years spanned
    bpy = (n - 1) * _NS_PER_YEAR / span_ns if n > 1 and span_ns > 0 else _NAN
    sqrt_bpy = math.sqrt(bpy) if bpy == bpy else _NAN

    final = float(equity[-1])  # equity_final
    ratio = final / initial_cash
    # return_pct = (equity[-1] / initial_cash - 1) * 100
    return_pct = (ratio - 1.0) * 100.0
    c0 = float(close[0])
    # buy_hold_return_pct = (close[-1] / close[0] - 1) * 100
    buy_hold = (float(close[-1]) / c0 - 1.0) * 100.0 if c0 != 0.0 else _NAN

    # cagr_pct = ((equity[-1] / initial_cash) ** (1 / years) - 1) * 100
    if years <= 0.0:
        cagr = _NAN
    elif final <= 0.0:
        cagr = -100.0
    else:
        try:
            cagr = (ratio ** (1.0 / years) - 1.0) * 100.0
        except OverflowError:  # huge growth over a tiny span
            cagr = math.inf

    # r[0] = equity[0] / initial_cash - 1 is kept apart so that the other n - 1
    # returns need no concatenated copy of the equity.
    r0 = float(equity[0]) / initial_cash - 1.0
    # Zero or non-finite equity (a blown-up account) gives inf/NaN returns and so
    # NaN ratios: that is the answer, not an error.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # r[i] = equity[i] / equity[i-1] - 1 for i >= 1
        r = equity[1:] / equity[:-1]
        r -= 1.0
        mean_r = (r0 + float(np.add.reduce(r))) / n
        if n > 1:
            # std(r, ddof=1), two-pass for accuracy
            buf = np.subtract(r, mean_r)
            buf *= buf
            d0 = r0 - mean_r  # x * x, not x ** 2: a float ** overflow raises
            std_r = math.sqrt((d0 * d0 + float(np.add.reduce(buf))) / (n - 1))
            # downside deviation = sqrt(mean(min(r, 0) ** 2))
            np.minimum(r, 0.0, out=buf)
            buf *= buf
            down_sq = float(np.add.reduce(buf))
        else:
            std_r = _NAN
            down_sq = 0.0
        down_r0 = min(r0, 0.0)
        down_dev = math.sqrt((down_r0 * down_r0 + down_sq) / n)

        peak = np.maximum.accumulate(equity)
        equity_peak = float(peak[-1])  # == max(equity)
        if float(peak[0]) < initial_cash:
            # The running peak starts at initial_cash.
            np.maximum(peak, initial_cash, out=peak)
        # min(equity / peak - 1) == min(equity / peak) - 1 as x -> x - 1 is monotone
        max_dd = (float(np.minimum.reduce(equity / peak)) - 1.0) * 100.0

    # volatility_ann_pct = std(r, ddof=1) * sqrt(bpy) * 100
    vol = std_r * sqrt_bpy * 100.0
    # sharpe = mean(r) / std(r, ddof=1) * sqrt(bpy)
    sharpe = mean_r / std_r * sqrt_bpy if std_r != 0.0 else _NAN
    # sortino = mean(r) / downside deviation * sqrt(bpy)
    sortino = mean_r / down_dev * sqrt_bpy if down_dev != 0.0 else _NAN
    if max_dd < 0.0:
        # calmar = cagr_pct / |max_drawdown_pct|
        calmar = cagr / -max_dd
        dd_duration = pd.Timedelta(_max_drawdown_duration_ns(t, equity >= peak))
    else:
        # A never-falling curve: exactly 0.0 (never -0.0), NaN stays NaN.
        max_dd = 0.0 if max_dd == max_dd else _NAN
        calmar = _NAN
        dd_duration = _ZERO_TD

    n_trades = int(trade_pnl.shape[0])
    if n_trades:
        wins = trade_pnl > 0.0
        # win_rate_pct = count(pnl > 0) / trades * 100
        win_rate = int(np.count_nonzero(wins)) * 100.0 / n_trades
        gains = float(np.add.reduce(trade_pnl[wins]))
        losses = -float(np.add.reduce(trade_pnl[trade_pnl < 0.0]))
        # profit_factor = sum of gains / |sum of losses|
        if losses > 0.0:
            profit_factor = gains / losses
        else:
            profit_factor = math.inf if gains > 0.0 else _NAN
        # best / worst / avg_trade_pct = max / min / mean of trade_returns * 100
        best = float(np.maximum.reduce(trade_returns)) * 100.0
        worst = float(np.minimum.reduce(trade_returns)) * 100.0
        avg = float(np.add.reduce(trade_returns)) / n_trades * 100.0
    else:
        win_rate = profit_factor = best = worst = avg = _NAN

    return {
        "start": pd.Timestamp(t0, tz=tz),
        "end": pd.Timestamp(t1, tz=tz),
        "duration": pd.Timedelta(span_ns),  # end - start
        "equity_final": final,
        "equity_peak": equity_peak,
        "return_pct": return_pct,
        "buy_hold_return_pct": buy_hold,
        "periods_per_year": bpy,
        "cagr_pct": cagr,
        "volatility_ann_pct": vol,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown_pct": max_dd,
        "calmar": calmar,
        "max_drawdown_duration": dd_duration,
        "trades": n_trades,
        "win_rate_pct": win_rate,
        "best_trade_pct": best,
        "worst_trade_pct": worst,
        "avg_trade_pct": avg,
        "profit_factor": profit_factor,
        # exposure_time_pct = mean(in_market) * 100
        "exposure_time_pct": int(np.count_nonzero(in_market)) * 100.0 / n,
    }
