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
from nbbacktest.engine.portfolio_kernel import fill_loop
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
    """What every run on one universe shares, computed once per universe.

    ``mark`` holds each symbol's last close at every bar (0 before its listing),
    ``alive`` its listed span (first to last bar), ``delist`` the bars at which
    a symbol delists, ``benchmark`` the equal-weighted index of the listed
    symbols (buy & hold, beta), and the timeline.
    """

    __slots__ = ("mark", "alive", "delist_bar", "timeline", "buy_hold_pct", "market", "index_level",
                 "returns", "_fills")

    def __init__(self, universe: Universe) -> None:
        close = universe.block[3]
        listed = universe.listed
        bars, count = close.shape
        mark = np.nan_to_num(pd.DataFrame(close).ffill().to_numpy(), nan=0.0)
        self.mark = mark
        ever = listed.any(axis=0)
        first = np.where(ever, listed.argmax(axis=0), bars)
        last = np.where(ever, bars - 1 - listed[::-1].argmax(axis=0), -1)
        steps = np.arange(bars)[:, None]
        self.alive = (steps >= first) & (steps <= last)
        self.delist_bar = np.where((last >= 0) & (last < bars - 1), last, -1).astype(np.int64)
        with np.errstate(all="ignore"):
            returns = np.full((bars, count), np.nan)
            returns[1:] = close[1:] / close[:-1] - 1.0
        self.returns = returns
        mean = np.nanmean(np.where(np.isfinite(returns), returns, np.nan)[1:], axis=1) \
            if bars > 1 else np.zeros(0)
        level = np.concatenate(([1.0], np.cumprod(1.0 + np.nan_to_num(mean))))
        self.index_level = level
        self.timeline = Timeline(universe.index)
        self.buy_hold_pct = (level[-1] - 1.0) * 100.0
        self.market = Market(level)
        self._fills: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def fill_prices(self, universe: Universe, lag: int) -> tuple[np.ndarray, np.ndarray]:
        """Where each symbol can fill, and the price it is valued at on a fill bar.

        ``lag`` 1 fills at the open (a symbol with no bar then is valued at its
        previous close), 0 at the close.
        """
        found = self._fills.get(lag)
        if found is None:
            prices = universe.block[0] if lag else universe.block[3]
            tradable = ~np.isnan(prices)
            before = np.vstack([self.mark[:1] * 0.0, self.mark[:-1]]) if lag else self.mark
            found = self._fills[lag] = (tradable, np.where(tradable, prices, before))
        return found

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
    """The raw outcome of one portfolio simulation: per-bar arrays, trades and the stats."""

    equity: np.ndarray
    cash: np.ndarray
    held: np.ndarray
    mark: np.ndarray
    targets: np.ndarray
    flows: np.ndarray
    turnover: np.ndarray
    legs: np.ndarray
    trades: dict[str, np.ndarray]
    stats: dict[str, Any]
    ic: np.ndarray | None = None
    ic_bars: np.ndarray | None = None
    quantiles: np.ndarray | None = None


def simulate_portfolio(
    strategy: PortfolioStrategy, universe: Universe, settings: Settings, seed: int, *,
    private: bool = False,
) -> PortfolioRun:
    """Run a portfolio strategy over a universe: equity, positions, trades, stats.

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
            betas = rolling_betas(facts.returns, np.asarray(benchmark, dtype=np.float64))
        weights = construct_weights(scores, universe.listed, long=values["long"], short=values["short"],
                                    weighting=values["weighting"], gross=values["gross"],
                                    neutral=values["neutral"], betas=betas)
    else:
        raise TypeError(f"PortfolioStrategy {cls.__name__!r} defines neither weights(universe) nor"
                        " scores(universe): define one of them")
    weights[~facts.alive] = 0.0  # no position before a listing or after a delisting
    check_weights(weights, universe, settings.leverage, f"{cls.__name__}.weights()")
    decisions = decision_bars(universe.index, values.get("rebalance", "change"), settings.fill)
    run = _simulate(weights, decisions, universe, facts, settings)
    if scores is not None:
        bars = np.arange(len(universe.index)) if decisions is None else decisions
        bars = bars[bars < len(universe.index) - 1]
        run.ic_bars = bars
        run.ic = information_coefficients(scores, facts.mark, universe.listed, bars)
        run.quantiles = quantile_returns(scores, facts.mark, universe.listed, bars)
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
              facts: UniverseFacts, settings: Settings) -> PortfolioRun:
    bars, count = weights.shape
    lag = 1 if settings.fill == "next_open" else 0
    prices = universe.block[0] if lag else universe.block[3]
    tradable, value_at = facts.fill_prices(universe, lag)
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
    held = np.empty((bars, count))
    cash = np.empty(bars)
    flows = np.zeros((bars, count))
    traded = np.zeros(bars)
    capacity = 2 * count * (len(decided) + int((facts.delist_bar >= 0).sum()) + 1)
    trade_ints = np.empty((4, capacity), dtype=np.int64)
    trade_floats = np.empty((5, capacity))
    n_trades, paid = fill_loop(
        weights, decision_of, decisions is not None, prices, tradable, value_at, universe.block[3],
        facts.mark, facts.delist_bar, float(settings.cash), float(costs.rate), float(costs.fixed),
        float(settings.fill_slippage), bool(settings.fractional), bool(settings.close_at_end),
        held, cash, flows, traded, trade_ints, trade_floats,
    )
    trades = {name: trade_ints[i, :n_trades] for i, name in enumerate(("symbol", "entry_bar", "exit_bar",
                                                                           "exit_reason"))}
    trades.update({name: trade_floats[i, :n_trades] for i, name in enumerate(("entry_price", "exit_price",
                                                                               "size", "pnl", "ret"))})
    order = np.lexsort((trades["symbol"], trades["exit_bar"]))
    trades = {name: trades[name][order] for name in PORTFOLIO_TRADE_FIELDS}
    return _mark(weights, facts, settings, held, cash, flows, traded, trades, paid)


def _mark(weights: np.ndarray, facts: UniverseFacts, settings: Settings, held: np.ndarray,
          cash: np.ndarray, flows: np.ndarray, traded: np.ndarray, trades: dict[str, np.ndarray],
          paid: float) -> PortfolioRun:
    bars, count = weights.shape
    value = held * facts.mark
    equity = cash + value.sum(axis=1)
    # Each bar's P&L per symbol: change of its value less what was paid into it.
    pnl = np.empty((bars, count))
    pnl[0] = value[0] - flows[0]
    pnl[1:] = value[1:] - value[:-1] - flows[1:]
    before = np.vstack([np.zeros((1, count)), held[:-1]])
    side = np.where(before != 0.0, before, held)
    previous = np.concatenate(([float(settings.cash)], equity[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        legs = np.column_stack([np.where(side > 0, pnl, 0.0).sum(axis=1),
                                np.where(side < 0, pnl, 0.0).sum(axis=1)]) / previous[:, None]
        turnover = traded / previous
    legs = np.nan_to_num(legs)
    turnover = np.nan_to_num(turnover)
    timeline = facts.timeline
    in_market = int(np.count_nonzero(held.any(axis=1)))
    stats = summarize(
        timeline, equity, float(settings.cash), facts.buy_hold_pct, in_market,
        trades["pnl"], trades["ret"], market=facts.market, entry_bars=trades["entry_bar"],
        exit_bars=trades["exit_bar"], commissions=paid,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        exposure = np.abs(value).sum(axis=1) / equity
    years = timeline.years
    stats.update({
        "turnover": float(turnover.sum() / years) if years > 0 else math.nan,
        "avg_gross_pct": float(np.nanmean(exposure) * 100.0),
        "long_return_pct": float((np.prod(1.0 + legs[:, 0]) - 1.0) * 100.0),
        "short_return_pct": float((np.prod(1.0 + legs[:, 1]) - 1.0) * 100.0),
    })
    return PortfolioRun(equity=equity, cash=cash, held=held, mark=facts.mark, targets=weights, flows=flows,
                        turnover=turnover, legs=legs, trades=trades, stats=stats)


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
        bucket = np.floor((ranks - 1.0) * quantiles / n)
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
        top = float(np.mean(quantiles[:, -1][np.isfinite(quantiles[:, -1])]))
        bottom = float(np.mean(quantiles[:, 0][np.isfinite(quantiles[:, 0])]))
        spread_pct = float((top - bottom) * 100.0)
    else:
        spread_pct = math.nan
    return {"ic_mean": mean, "ic_ir": ir, "ic_hit_pct": hit, "quantile_spread_pct": spread_pct}
