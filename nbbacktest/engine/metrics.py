"""Performance statistics of one backtest, from plain numpy arrays.

Compare backtesting.py's ``_stats.py``: a test or a script calls
:func:`compute_stats`, which checks its inputs and calls :func:`summarize`. The
simulator calls :func:`summarize` itself, once per backtest inside sweeps of many
thousands of backtests: what depends only on the bar times (a :class:`Timeline`,
with the start/end Timestamps) is built once per data set, and the per-run work
is two compiled passes over the equity curve that allocate nothing
(:mod:`~nbbacktest.engine.curve_kernel`).

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
``avg_drawdown_pct``       mean over those drawdown periods of each one's depth,
                           ``min(equity / peak - 1) * 100`` within it; 0.0 without
``avg_drawdown_duration``  mean duration of those periods (to the ns); ``Timedelta(0)``
                           without a drawdown
``beta``                   ``sum((r_i - mean) * (m_i - mean(m))) / sum((m_i - mean(m))
                           ** 2)`` over the ``n - 1`` bar-to-bar returns, ``r_i =
                           equity[i] / equity[i-1] - 1`` and ``m_i = close[i] /
                           close[i-1] - 1`` (buy & hold); NaN if ``n < 3`` or ``m`` is
                           constant
``alpha_pct``              ``return_pct - beta * buy_hold_return_pct`` (Jensen's alpha
                           over the whole run, risk-free rate 0)
``trades``                 number of closed trades (``int``)
``win_rate_pct``           ``count(trade_pnl > 0) / trades * 100``
``best_trade_pct``         ``max(trade_returns) * 100``
``worst_trade_pct``        ``min(trade_returns) * 100``
``avg_trade_pct``          ``mean(trade_returns) * 100``
``max_trade_duration``     ``max(time[exit_bar] - time[entry_bar])`` over closed trades
``avg_trade_duration``     ``mean(time[exit_bar] - time[entry_bar])`` (to the ns)
``profit_factor``          ``sum(pnl[pnl > 0]) / |sum(pnl[pnl < 0])|``; inf with
                           gains and no losses, 0.0 with losses and no gains, NaN
                           with neither
``expectancy``             ``mean(trade_pnl)``: money won or lost per trade, after costs
``sqn``                    ``sqrt(trades) * mean(pnl) / std(pnl, ddof=1)`` (Van Tharp's
                           system quality number); NaN under two trades or a zero std
``kelly``                  ``w - (1 - w) / (mean(pnl[pnl > 0]) / |mean(pnl[pnl < 0])|)``
                           with ``w = win_rate_pct / 100``; NaN without a win or a loss
``commissions``            total commission paid on every fill (an open position's
                           entry too), as the simulator counted it
``exposure_time_pct``      ``mean(in_market) * 100``
========================== ==========================================================

Trade statistics are NaN (durations NaT) when there are no trades.

Where backtesting.py differs (its ``_stats.py``; ours are kept): its Sharpe and
volatility compound daily geometric returns over 252 or 365 days, ours are per-bar
arithmetic returns annualised with the measured bars per year; its profit factor
sums trade returns in percent, ours money P&L; its exposure counts bars from a
trade's entry to its exit bar, ours bars that end holding a position; its beta uses
log returns, ours simple ones; its average trade is a geometric mean of returns, ours
arithmetic. Every float is a Python
``float`` and ``trades`` a Python ``int``, so result rows compare and pickle
cleanly. Sums are numpy's pairwise reductions (no BLAS, no threads), so equal
inputs give bit-identical outputs in every process.

Bar times are int64 nanoseconds. pandas 3 often stores a DatetimeIndex in
microseconds, so pass ``index.as_unit("ns").asi8`` (or the DatetimeIndex itself),
never a bare ``index.asi8``.
"""

from __future__ import annotations

import math
from datetime import tzinfo

import numpy as np
import pandas as pd

from nbbacktest.engine.curve_kernel import NO_MARKET, curve_pass, deviation_pass
from nbbacktest.engine.stat_formulas import Market, drawdown_facts, kelly, sqn, trade_durations
from nbbacktest.engine.timeline import Timeline, _bar_times, periods_per_year

__all__ = [
    "ALL_STAT_LABELS",
    "NUMERIC_STATS",
    "Market",
    "PORTFOLIO_STAT_LABELS",
    "PORTFOLIO_STAT_NAMES",
    "STAT_KINDS",
    "STAT_LABELS",
    "STAT_NAMES",
    "Timeline",
    "buy_and_hold_pct",
    "compute_stats",
    "periods_per_year",
    "summarize",
]

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
    "avg_drawdown_pct": "Avg. Drawdown [%]",
    "avg_drawdown_duration": "Avg. Drawdown Duration",
    "alpha_pct": "Alpha [%]",
    "beta": "Beta",
    "trades": "# Trades",
    "win_rate_pct": "Win Rate [%]",
    "best_trade_pct": "Best Trade [%]",
    "worst_trade_pct": "Worst Trade [%]",
    "avg_trade_pct": "Avg. Trade [%]",
    "max_trade_duration": "Max. Trade Duration",
    "avg_trade_duration": "Avg. Trade Duration",
    "profit_factor": "Profit Factor",
    "expectancy": "Expectancy [$]",
    "sqn": "SQN",
    "kelly": "Kelly Criterion",
    "commissions": "Commissions [$]",
    "exposure_time_pct": "Exposure Time [%]",
}
STAT_NAMES: tuple[str, ...] = tuple(STAT_LABELS)
#: How a stat is stored and shown where it is not a float (every stat not named here
#: is one): "int" (a count), "timedelta" (``pd.Timedelta``), "data" (a ``pd.Timestamp``
#: or ``pd.Timedelta`` that depends on the data set alone, the same for every run on
#: it) or "object" (anything else, kept as it is). A sweep's table, its checkpoint and
#: a resume read a stat's kind from here: a new stat needs its label, its kind when
#: not a float, and its value in :func:`summarize`, and nothing else.
STAT_KINDS: dict[str, str] = {
    "start": "data",
    "end": "data",
    "duration": "data",
    "max_drawdown_duration": "timedelta",
    "avg_drawdown_duration": "timedelta",
    "max_trade_duration": "timedelta",
    "avg_trade_duration": "timedelta",
    "trades": "int",
}
NUMERIC_STATS: tuple[str, ...] = tuple(
    k for k in STAT_NAMES if STAT_KINDS.get(k, "float") in ("float", "int")
)
#: What a portfolio run (``nbb.PortfolioStrategy``) adds to the stats above: all floats.
#: The IC stats are NaN for a strategy that sets weights itself (it has no scores).
PORTFOLIO_STAT_LABELS: dict[str, str] = {
    "turnover": "Turnover (Ann.) [x]",
    "avg_gross_pct": "Avg. Gross Exposure [%]",
    "long_return_pct": "Long Leg Return [%]",
    "short_return_pct": "Short Leg Return [%]",
    "ic_mean": "IC Mean",
    "ic_ir": "IC IR",
    "ic_hit_pct": "IC > 0 [%]",
    "quantile_spread_pct": "Top - Bottom Quantile [%]",
}
PORTFOLIO_STAT_NAMES: tuple[str, ...] = STAT_NAMES + tuple(PORTFOLIO_STAT_LABELS)
#: Labels of every stat a run of either kind can have.
ALL_STAT_LABELS: dict[str, str] = {**STAT_LABELS, **PORTFOLIO_STAT_LABELS}

_NAN = math.nan
_ZERO_TD = pd.Timedelta(0)


def _check_1d(name: str, arr: np.ndarray, n: int) -> None:
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"`{name}` has shape {arr.shape} but `equity` has {n} bars; index, equity, "
            "close and in_market must hold one value per bar."
        )


def buy_and_hold_pct(close: np.ndarray) -> float:
    """``(close[-1] / close[0] - 1) * 100``; NaN if ``close[0] == 0``.

    Examples
    --------
    >>> buy_and_hold_pct(np.array([10.0, 9.0, 12.5]))
    25.0
    """
    c0 = float(close[0])
    return (float(close[-1]) / c0 - 1.0) * 100.0 if c0 != 0.0 else _NAN


def compute_stats(
    index: np.ndarray,
    equity: np.ndarray,
    initial_cash: float,
    close: np.ndarray,
    in_market: np.ndarray,
    trade_pnl: np.ndarray,
    trade_returns: np.ndarray,
    tz: str | tzinfo | None = None,
    trade_bars: tuple[np.ndarray, np.ndarray] | None = None,
    commissions: float = 0.0,
) -> dict[str, object]:
    """Compute the performance statistics of one backtest.

    The formulas are listed in this module's docstring. Degenerate inputs (one
    bar, flat equity, no trades) give NaN where a statistic is undefined instead
    of raising. This checks its inputs, then calls :func:`summarize`, which the
    simulator calls directly with a :class:`Timeline` built once per data set.

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
    trade_bars : (numpy.ndarray, numpy.ndarray), optional
        Entry and exit bar positions of each closed trade, for the trade
        durations (NaT without them).
    commissions : float, optional
        Total commissions paid, reported as ``commissions`` (default 0.0).

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
    times, _, _ = _bar_times(index)  # the dtype error comes first
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
    _check_1d("index", times, n)
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
    entry = exit_ = None
    if trade_bars is not None:
        entry, exit_ = (np.asarray(bars, dtype=np.intp) for bars in trade_bars)
        if entry.shape != trade_pnl.shape or exit_.shape != trade_pnl.shape:
            raise ValueError(
                f"`trade_bars` holds {entry.shape} entry and {exit_.shape} exit bars for "
                f"{trade_pnl.shape[0]} trades; both must hold one bar position per closed trade."
            )
    return summarize(
        Timeline(index, tz),
        equity,
        initial_cash,
        buy_and_hold_pct(close),
        int(np.count_nonzero(in_market)),
        trade_pnl,
        trade_returns,
        market=Market(close),
        entry_bars=entry,
        exit_bars=exit_,
        commissions=float(commissions),
    )


def summarize(
    line: Timeline,
    equity: np.ndarray,
    initial_cash: float,
    buy_hold_pct: float,
    bars_in_market: int,
    trade_pnl: np.ndarray,
    trade_returns: np.ndarray,
    *,
    market: Market | None = None,
    entry_bars: np.ndarray | None = None,
    exit_bars: np.ndarray | None = None,
    commissions: float = 0.0,
) -> dict[str, object]:
    """The statistics of :func:`compute_stats` from inputs already checked.

    The per-run hot path of backtests and sweeps: ``line`` and ``buy_hold_pct``
    depend only on the data set, so the simulator computes them once per data set.

    Parameters
    ----------
    line : Timeline
        The bar times.
    equity : numpy.ndarray
        float64 equity at each bar's close, ``line.n`` values.
    initial_cash : float
        Cash before the first bar, a positive finite Python float.
    buy_hold_pct : float
        The buy & hold return in percent (see :func:`buy_and_hold_pct`).
    bars_in_market : int
        How many bars end holding a position.
    trade_pnl, trade_returns : numpy.ndarray
        float64 P&L and return of each closed trade.
    market : Market, optional
        The data set's buy & hold returns, for ``beta`` and ``alpha_pct`` (NaN without).
    entry_bars, exit_bars : numpy.ndarray, optional
        Bar positions of each closed trade's entry and exit, for the trade durations.
    commissions : float, optional
        Total commissions paid.

    Returns
    -------
    dict[str, object]
        As :func:`compute_stats`.

    Examples
    --------
    >>> line = Timeline(pd.date_range("2024-01-01", periods=3, freq="D"))
    >>> st = summarize(line, np.array([100.0, 90.0, 99.0]), 100.0, 5.0, 2,
    ...                np.array([-1.0]), np.array([-0.01]))
    >>> round(st["max_drawdown_pct"], 6), st["max_drawdown_duration"], st["exposure_time_pct"]
    (-10.0, Timedelta('2 days 00:00:00'), 66.66666666666667)
    """
    n = line.n
    years = line.years
    sqrt_bpy = line.sqrt_bars_per_year

    final = float(equity[-1])  # equity_final
    ratio = final / initial_cash
    # return_pct = (equity[-1] / initial_cash - 1) * 100
    return_pct = (ratio - 1.0) * 100.0

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

    # The per-bar part: two compiled passes over the curve (see curve_kernel), no temporary.
    r0 = float(equity[0]) / initial_cash - 1.0
    beta_market = market if market is not None and market.sum_sq > 0.0 else None
    if beta_market is not None and len(beta_market.close) != n:
        raise ValueError(f"the market has {len(beta_market.close)} closes for {n} bars of equity")
    (sum_r, sum_rc, down_sq, equity_peak, min_ratio, periods, longest, total, depth_sum,
     open_start) = curve_pass(equity, initial_cash,
                              NO_MARKET if beta_market is None else beta_market.close,
                              0.0 if beta_market is None else beta_market.mean_q, line.times)
    # r[0] = equity[0] / initial_cash - 1 joins the n - 1 bar-to-bar returns of the curve.
    mean_r = (r0 + sum_r) / n
    if n > 1:
        # beta = sum((r_i - mean) * c_i) / sum(c_i ** 2), c the centred market returns:
        # sum(c) is 0, so sum(r_i * c_i) is the covariance's sum.
        beta = _NAN if beta_market is None else sum_rc / beta_market.sum_sq
        d0 = r0 - mean_r  # x * x, not x ** 2: a float ** overflow raises
        # std(r, ddof=1), two passes for accuracy
        std_r = math.sqrt((d0 * d0 + deviation_pass(equity, mean_r)) / (n - 1))
    else:
        std_r = beta = _NAN
        down_sq = 0.0
    # downside deviation = sqrt(mean(min(r, 0) ** 2))
    down_r0 = min(r0, 0.0)
    down_dev = math.sqrt((down_r0 * down_r0 + down_sq) / n)
    # max_drawdown_pct = (min(equity / running peak) - 1) * 100, the peak from initial_cash on
    max_dd = (min_ratio - 1.0) * 100.0

    # volatility_ann_pct = std(r, ddof=1) * sqrt(bpy) * 100
    vol = std_r * sqrt_bpy * 100.0
    # sharpe = mean(r) / std(r, ddof=1) * sqrt(bpy)
    sharpe = mean_r / std_r * sqrt_bpy if std_r != 0.0 else _NAN
    # sortino = mean(r) / downside deviation * sqrt(bpy)
    sortino = mean_r / down_dev * sqrt_bpy if down_dev != 0.0 else _NAN
    if max_dd < 0.0:
        # calmar = cagr_pct / |max_drawdown_pct|
        calmar = cagr / -max_dd
        longest, mean_ns, depth = drawdown_facts(line, periods, longest, total, depth_sum, open_start)
        dd_duration, avg_dd_duration = pd.Timedelta(longest), pd.Timedelta(mean_ns)
        avg_dd = depth * 100.0
    else:
        # A never-falling curve: exactly 0.0 (never -0.0), NaN stays NaN.
        max_dd = 0.0 if max_dd == max_dd else _NAN
        avg_dd = 0.0 if max_dd == max_dd else _NAN
        calmar = _NAN
        dd_duration = avg_dd_duration = _ZERO_TD

    n_trades = int(trade_pnl.shape[0])
    if n_trades:
        wins = trade_pnl > 0.0
        n_wins = int(np.count_nonzero(wins))
        # win_rate_pct = count(pnl > 0) / trades * 100
        win_rate = n_wins * 100.0 / n_trades
        gains = float(np.add.reduce(trade_pnl[wins]))
        lost = trade_pnl[trade_pnl < 0.0]
        losses = -float(np.add.reduce(lost))
        # expectancy = mean(pnl); sqn, kelly: see stat_formulas
        expectancy = float(np.add.reduce(trade_pnl)) / n_trades
        sqn_ = sqn(trade_pnl, expectancy)
        kelly_ = kelly(n_wins / n_trades, gains / n_wins if n_wins else _NAN,
                       -losses / len(lost) if len(lost) else _NAN)
        max_trade: object
        avg_trade: object
        if entry_bars is not None and exit_bars is not None:
            longest_trade, mean_trade = trade_durations(line, entry_bars, exit_bars)
            max_trade, avg_trade = pd.Timedelta(longest_trade), pd.Timedelta(mean_trade)
        else:
            max_trade = avg_trade = pd.NaT
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
        win_rate = profit_factor = best = worst = avg = expectancy = sqn_ = kelly_ = _NAN
        max_trade = avg_trade = pd.NaT

    return {
        "start": line.start,
        "end": line.end,
        "duration": line.duration,  # end - start
        "equity_final": final,
        "equity_peak": equity_peak,
        "return_pct": return_pct,
        "buy_hold_return_pct": buy_hold_pct,
        "periods_per_year": line.bars_per_year,
        "cagr_pct": cagr,
        "volatility_ann_pct": vol,
        "sharpe": sharpe,
        "sortino": sortino,
        "max_drawdown_pct": max_dd,
        "calmar": calmar,
        "max_drawdown_duration": dd_duration,
        "avg_drawdown_pct": avg_dd,
        "avg_drawdown_duration": avg_dd_duration,
        # alpha_pct = return_pct - beta * buy_hold_return_pct
        "alpha_pct": return_pct - beta * buy_hold_pct if beta == beta else _NAN,
        "beta": beta,
        "trades": n_trades,
        "win_rate_pct": win_rate,
        "best_trade_pct": best,
        "worst_trade_pct": worst,
        "avg_trade_pct": avg,
        "max_trade_duration": max_trade,
        "avg_trade_duration": avg_trade,
        "profit_factor": profit_factor,
        "expectancy": expectancy,
        "sqn": sqn_,
        "kelly": kelly_,
        "commissions": commissions,
        # exposure_time_pct = mean(in_market) * 100
        "exposure_time_pct": bars_in_market * 100.0 / n,
    }
