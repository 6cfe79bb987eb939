"""The portfolio simulator: many symbols, one cash balance, the single-instrument fill model.

The rules, symbol by symbol, are those of the single-instrument path (DESIGN §3),
and the README writes them out; at a bar where some symbols fill:

1. Each symbol whose new target is 0 or on the other side closes its whole
   position at its fill price (after slippage), paying commission.
2. Equity at the fill, ``E = cash + sum(units * price)``, values every symbol at
   its raw fill price (a symbol with no bar that day at its last close).
3. Each symbol with a nonzero target moves to ``w * E_s / (p * (1 + commission))``
   units, ``p`` its fill price after slippage in the trade's direction and
   ``E_s`` the equity with that symbol valued at ``p``; a resize to the weight
   it already holds is no trade. ``fractional=False`` rounds units toward zero.

So one symbol at weight 1 trades exactly as the single-instrument path does.
A symbol trades when its target changes (``rebalance="change"``), or on every
decision bar of a schedule. A symbol with no bar on its fill bar trades on its
next bar. A symbol that delists (its last bar before the universe's last)
is closed at its last close. Equity is marked at every close, a symbol without
a bar at its last close.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd

from nbbacktest.engine.costs import Costs
from nbbacktest.engine.metrics import summarize
from nbbacktest.engine.portfolio import (
    PortfolioStrategy,
    check_portfolio_params,
    check_weights,
    construct_weights,
    decision_bars,
    rolling_betas,
    target_frame,
)
from nbbacktest.engine.portfolio_kernel import CASH, EQUITY, GROSS, LONG_PNL, SHORT_PNL, TRADED, fill_loop
from nbbacktest.engine.stat_formulas import Market
from nbbacktest.engine.timeline import Timeline
from nbbacktest.engine.types import Settings
from nbbacktest.engine.universe import Universe
from nbbacktest.errors import ParamError, StrategyError

__all__ = [
    "PORTFOLIO_TRADE_FIELDS", "PortfolioRun", "UniverseFacts", "information_coefficients",
    "quantile_returns", "simulate_portfolio",
]

#: Columns of a portfolio trade record, in order.
PORTFOLIO_TRADE_FIELDS = ("symbol", "entry_bar", "exit_bar", "entry_price", "exit_price", "size",
                          "pnl", "ret", "exit_reason")
#: Score quantiles reported (quintiles: the usual resolution of a factor's monotonicity).
QUANTILES = 5
_REASONS = ("signal", "delisted", "end")


class UniverseFacts:
    """What every run on one universe shares, kept per universe: a few numbers per
    symbol and per bar, nothing of the universe's size (an engine holds the
    universe itself once per host, shared).

    ``first`` and ``last`` are each symbol's first and last bar, ``delist_bar``
    the bar a symbol delists at (-1 when it trades to the end); the benchmark
    is the equal-weighted index of the listed symbols (buy & hold, beta).
    """

    __slots__ = ("first", "last", "delist_bar", "timeline", "buy_hold_pct", "market", "index_level")

    def __init__(self, universe: Universe) -> None:
        close = universe.block[3]
        listed = ~np.isnan(close)
        bars = close.shape[0]
        ever = listed.any(axis=0)
        self.first = np.where(ever, listed.argmax(axis=0), bars)
        self.last = last = np.where(ever, bars - 1 - listed[::-1].argmax(axis=0), -1)
        self.delist_bar = np.where((last >= 0) & (last < bars - 1), last, -1).astype(np.int64)
        with np.errstate(all="ignore"):
            growth = close[1:] / close[:-1]
            ok = np.isfinite(growth)
            counted = ok.sum(axis=1)
            mean = np.where(counted > 0, np.where(ok, growth - 1.0, 0.0).sum(axis=1) / np.maximum(counted, 1),
                            0.0)
        level = np.concatenate(([1.0], np.cumprod(1.0 + mean)))
        self.index_level = level
        self.timeline = Timeline(universe.index)
        self.buy_hold_pct = (level[-1] - 1.0) * 100.0
        self.market = Market(level)

    def alive(self) -> np.ndarray:
        """bool ``(bars, symbols)``: each symbol's listed span, first to last bar."""
        steps = np.arange(len(self.index_level))[:, None]
        return (steps >= self.first) & (steps <= self.last)

    @classmethod
    def of(cls, universe: Universe) -> UniverseFacts:
        facts = _FACTS.get(id(universe))
        if facts is None or facts[0] is not universe:
            facts = (universe, cls(universe))
            if len(_FACTS) >= 8:
                _FACTS.pop(next(iter(_FACTS)))
            _FACTS[id(universe)] = facts
        return facts[1]


_FACTS: dict[int, tuple[Universe, UniverseFacts]] = {}


@dataclass
class PortfolioRun:
    """The raw outcome of one portfolio simulation: per-bar arrays, trades and the stats.

    ``held`` (units at each close) is kept for a backtest's result, not in a sweep.
    """

    equity: np.ndarray
    cash: np.ndarray
    targets: np.ndarray
    turnover: np.ndarray
    legs: np.ndarray
    trades: dict[str, np.ndarray]
    stats: dict[str, Any]
    held: np.ndarray | None = None
    #: Each symbol's last close at every bar (what ``held`` is valued at), kept with ``held``.
    mark: np.ndarray | None = None
    ic: np.ndarray | None = None
    ic_bars: np.ndarray | None = None
    quantiles: np.ndarray | None = None


def simulate_portfolio(
    strategy: PortfolioStrategy, universe: Universe, settings: Settings, seed: int, *,
    private: bool = False, keep_held: bool = True,
) -> PortfolioRun:
    """Run a portfolio strategy over a universe: equity, positions, trades, stats.

    ``private=True`` runs the instance as it is (made for this run alone, as a
    sweep's point is); ``keep_held=False`` keeps no units per bar and symbol (a
    sweep reads the stats only).

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.universe import as_universe
    >>> class EqualWeight(nbb.PortfolioStrategy):
    ...     def weights(self, universe):
    ...         return universe.close * 0 + 0.1
    >>> run = simulate_portfolio(EqualWeight(), as_universe(nbb.load_sample("universe")), Settings(), 0)
    >>> run.stats["trades"], round(float(run.held[-1].sum() > 0), 1)
    (0, 1.0)
    """
    cls = type(strategy)
    values = strategy.param_values
    check_portfolio_params(values, settings.leverage, cls.__name__)
    worker = cast(PortfolioStrategy, strategy if private else cls._from_values(values))
    worker._seed = seed
    facts = UniverseFacts.of(universe)
    listed = ~np.isnan(universe.block[3])
    mode = cls._mode
    scores = None
    if mode == "weights":
        weights = target_frame(_call(worker, "weights", universe), universe, f"{cls.__name__}.weights()",
                               allow_nan=False)
    elif mode == "scores":
        scores = target_frame(_call(worker, "scores", universe), universe, f"{cls.__name__}.scores()")
        betas = None
        if values["neutral"] == "beta":
            benchmark = _call(worker, "benchmark", universe)
            betas = rolling_betas(universe.returns.to_numpy(), np.asarray(benchmark, dtype=np.float64))
        weights = construct_weights(scores, listed, long=values["long"], short=values["short"],
                                    weighting=values["weighting"], gross=values["gross"],
                                    neutral=values["neutral"], betas=betas)
    else:
        raise TypeError(f"PortfolioStrategy {cls.__name__!r} defines neither weights(universe) nor"
                        " scores(universe): define one of them")
    weights[~facts.alive()] = 0.0  # no position before a listing or after a delisting
    check_weights(weights, universe, settings.leverage, f"{cls.__name__}.weights()")
    decisions = decision_bars(universe.index, values.get("rebalance", "change"), settings.fill)
    run = _simulate(weights, decisions, universe, facts, settings, keep_held)
    # one forward fill of the closes serves the result's weights and the IC
    mark = last_closes(universe) if keep_held or scores is not None else None
    if keep_held:
        run.mark = mark
    if scores is not None:
        mark = cast(np.ndarray, mark)
        bars = np.arange(len(universe.index)) if decisions is None else decisions
        bars = bars[bars < len(universe.index) - 1]
        run.ic_bars = bars
        run.ic = information_coefficients(scores, mark, listed, bars)
        run.quantiles = quantile_returns(scores, mark, listed, bars)
        run.stats.update(_signal_stats(run.ic, run.quantiles))
    else:
        run.stats.update(_signal_stats(np.zeros(0), np.zeros((0, QUANTILES))))
    return run


def _call(worker: PortfolioStrategy, method: str, universe: Universe) -> Any:
    try:
        return getattr(worker, method)(universe)
    except Exception as error:
        raise StrategyError(f"{worker!r}: {method} raised {type(error).__name__}: {error}") from error


def _simulate(weights: np.ndarray, decisions: np.ndarray | None, universe: Universe,
              facts: UniverseFacts, settings: Settings, keep_held: bool) -> PortfolioRun:
    bars, count = weights.shape
    lag = 1 if settings.fill == "next_open" else 0
    if decisions is None:
        changed = np.empty(bars, dtype=bool)
        changed[0] = bool(np.any(weights[0] != 0.0))
        np.any(weights[1:] != weights[:-1], axis=1, out=changed[1:])
        decided = np.flatnonzero(changed)
    else:
        decided = decisions
    decided = decided[decided + lag < bars]
    decision_of = np.full(bars, -1, dtype=np.int64)
    decision_of[decided + lag] = decided
    costs = Costs.parse(settings.commission)
    if costs.fn is not None:
        raise ParamError("a portfolio backtest takes commission as a fraction or a (fixed, fraction)"
                         " pair; a callable cost(size, price) is for single-instrument runs")
    held = np.empty((bars, count) if keep_held else (0, 0))
    per_bar = np.empty((6, bars))
    capacity = 2 * count * (len(decided) + int((facts.delist_bar >= 0).sum()) + 1)
    trade_ints = np.empty((4, capacity), dtype=np.int64)
    trade_floats = np.empty((5, capacity))
    block = universe.block
    n_trades, paid, in_market = fill_loop(
        weights, decision_of, decisions is not None, block[0] if lag else block[3], block[3],
        facts.delist_bar, float(settings.cash), float(costs.rate), float(costs.fixed),
        float(settings.fill_slippage), bool(settings.fractional), bool(settings.close_at_end),
        keep_held, held, per_bar, trade_ints, trade_floats,
    )
    ints = ("symbol", "entry_bar", "exit_bar", "exit_reason")
    floats = ("entry_price", "exit_price", "size", "pnl", "ret")
    trades = {name: trade_ints[i, :n_trades] for i, name in enumerate(ints)}
    trades.update({name: trade_floats[i, :n_trades] for i, name in enumerate(floats)})
    order = np.lexsort((trades["symbol"], trades["exit_bar"]))
    trades = {name: trades[name][order] for name in PORTFOLIO_TRADE_FIELDS}
    equity = per_bar[EQUITY]
    previous = np.concatenate(([float(settings.cash)], equity[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        legs = np.nan_to_num(per_bar[[LONG_PNL, SHORT_PNL]].T / previous[:, None])
        turnover = np.nan_to_num(per_bar[TRADED] / previous)
        exposure = per_bar[GROSS] / equity
    timeline = facts.timeline
    stats = summarize(
        timeline, equity, float(settings.cash), facts.buy_hold_pct, in_market,
        trades["pnl"], trades["ret"], market=facts.market, entry_bars=trades["entry_bar"],
        exit_bars=trades["exit_bar"], commissions=paid,
    )
    years = timeline.years
    stats.update({
        "turnover": float(turnover.sum() / years) if years > 0 else math.nan,
        "avg_gross_pct": float(np.mean(exposure[np.isfinite(exposure)]) * 100.0)
        if np.isfinite(exposure).any() else math.nan,
        "long_return_pct": float((np.prod(1.0 + legs[:, 0]) - 1.0) * 100.0),
        "short_return_pct": float((np.prod(1.0 + legs[:, 1]) - 1.0) * 100.0),
    })
    return PortfolioRun(equity=equity, cash=per_bar[CASH], targets=weights, turnover=turnover, legs=legs,
                        trades=trades, stats=stats, held=held if keep_held else None)


def last_closes(universe: Universe) -> np.ndarray:
    """Each symbol's last close at every bar, 0 before its first (what equity is marked at).

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.universe import as_universe
    >>> last_closes(as_universe(nbb.load_sample("universe"))).shape
    (2500, 10)
    """
    return np.nan_to_num(pd.DataFrame(universe.block[3]).ffill().to_numpy(), nan=0.0)


def _forward_returns(mark: np.ndarray, listed: np.ndarray, bars: np.ndarray) -> np.ndarray:
    """Each symbol's close-to-close return from each decision bar to the next (the last: to the end)."""
    ends = np.append(bars[1:], len(mark) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        forward = mark[ends] / mark[bars] - 1.0
    forward[~(listed[bars] & np.isfinite(forward) & (mark[bars] > 0))] = np.nan
    return forward


def information_coefficients(scores: np.ndarray, mark: np.ndarray, listed: np.ndarray,
                             bars: np.ndarray) -> np.ndarray:
    """Rank correlation (Spearman) of each decision bar's scores with the next period's returns.

    NaN for a period with fewer than 3 symbols that have both.

    Examples
    --------
    >>> mark = np.array([[1.0, 1.0, 1.0], [1.1, 1.0, 0.9]])
    >>> scores = np.array([[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    >>> information_coefficients(scores, mark, np.ones((2, 3), bool), np.array([0])).tolist()
    [1.0]
    """
    if not len(bars):
        return np.zeros(0)
    forward = _forward_returns(mark, listed, bars)
    score = scores[bars]
    both = np.isfinite(score) & np.isfinite(forward)
    a = _row_ranks(np.where(both, score, np.nan))
    b = _row_ranks(np.where(both, forward, np.nan))
    n = both.sum(axis=1)
    with np.errstate(all="ignore"):
        count = np.maximum(n, 1)[:, None]
        a = np.nan_to_num(a - np.nansum(a, axis=1, keepdims=True) / count)
        b = np.nan_to_num(b - np.nansum(b, axis=1, keepdims=True) / count)
        ic = (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    ic[n < 3] = np.nan
    return ic


def quantile_returns(scores: np.ndarray, mark: np.ndarray, listed: np.ndarray, bars: np.ndarray,
                     quantiles: int = QUANTILES) -> np.ndarray:
    """Mean next-period return of each score quantile (1 = lowest scores), per decision bar.

    Examples
    --------
    >>> mark = np.array([[1.0] * 5, [0.9, 0.95, 1.0, 1.05, 1.1]])
    >>> scores = np.array([[1.0, 2, 3, 4, 5], [0.0] * 5])
    >>> quantile_returns(scores, mark, np.ones((2, 5), bool), np.array([0])).round(2).tolist()
    [[-0.1, -0.05, 0.0, 0.05, 0.1]]
    """
    out = np.full((len(bars), quantiles), np.nan)
    if not len(bars):
        return out
    forward = _forward_returns(mark, listed, bars)
    score = scores[bars]
    both = np.isfinite(score) & np.isfinite(forward)
    ranks = _row_ranks(np.where(both, score, np.nan))
    n = both.sum(axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        # fewer symbols than quantiles: spread them from the lowest to the highest, so
        # that both ends always hold the extreme scores
        bucket = np.where(n >= quantiles, np.floor((ranks - 1.0) * quantiles / n),
                          np.floor((ranks - 1.0) * (quantiles - 1) / np.maximum(n - 1, 1) + 0.5))
    for q in range(quantiles):
        inside = both & (bucket == q)
        total = np.where(inside, forward, 0.0).sum(axis=1)
        count = inside.sum(axis=1)
        with np.errstate(all="ignore"):
            out[:, q] = np.where(count > 0, total / count, np.nan)
    return out


def _row_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) along each row, NaN kept."""
    return pd.DataFrame(values).rank(axis=1, method="average").to_numpy(copy=True)


def _signal_stats(ic: np.ndarray, quantiles: np.ndarray) -> dict[str, float]:
    finite = ic[np.isfinite(ic)]
    if len(finite):
        mean = float(finite.mean())
        spread = float(finite.std(ddof=1)) if len(finite) > 1 else math.nan
        ir = mean / spread if spread and math.isfinite(spread) and spread > 0 else math.nan
        hit = float((finite > 0).mean() * 100.0)
    else:
        mean = ir = hit = math.nan
    if len(quantiles) and np.isfinite(quantiles[:, [0, -1]]).any():
        top_values = quantiles[:, -1][np.isfinite(quantiles[:, -1])]
        bottom_values = quantiles[:, 0][np.isfinite(quantiles[:, 0])]
        top = float(top_values.mean()) if len(top_values) else math.nan
        bottom = float(bottom_values.mean()) if len(bottom_values) else math.nan
        spread_pct = float((top - bottom) * 100.0)
    else:
        spread_pct = math.nan
    return {"ic_mean": mean, "ic_ir": ir, "ic_hit_pct": hit, "quantile_spread_pct": spread_pct}
