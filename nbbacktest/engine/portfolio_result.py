"""PortfolioResult: the outcome of one portfolio backtest, pandas views built on first use."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbbacktest.engine import views
from nbbacktest.engine.result import format_stat, stats_html

if TYPE_CHECKING:
    from nbbacktest.engine.portfolio import PortfolioStrategy
    from nbbacktest.engine.portfolio_sim import PortfolioRun
    from nbbacktest.engine.types import Settings
    from nbbacktest.engine.universe import Universe

__all__ = ["EXIT_REASONS", "PortfolioResult"]

#: What closed a portfolio trade, by the code the simulator records.
EXIT_REASONS = ("signal", "delisted", "end")
_CACHED = ("stats", "equity", "drawdown", "cash", "positions", "weights", "target_weights", "turnover",
           "legs", "leg_equity", "trades", "ic", "quantile_returns")


class PortfolioResult:
    """Stats, equity, positions, trades and signal quality of one portfolio backtest.

    Attributes
    ----------
    strategy : PortfolioStrategy
        The parameter set that ran.
    settings : Settings
        Cash, costs and fill rules used.
    seed : int
        The run's seed.
    symbols : pandas.Index
        The universe's symbols, in column order.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Momentum(nbb.PortfolioStrategy):
    ...     def scores(self, universe):
    ...         return universe.close.pct_change(60, fill_method=None)
    >>> result = nbb.backtest(Momentum(long=0.3, short=0.3, rebalance="M"), nbb.load_sample("universe"))
    >>> result.weights.shape, result.ic.name, list(result.legs.columns)
    ((2500, 10), 'ic', ['long', 'short'])
    """

    def __init__(self, strategy: PortfolioStrategy, universe: Universe, settings: Settings, seed: int,
                 run: PortfolioRun) -> None:
        self.strategy = strategy
        self.settings = settings
        self.seed = seed
        self.symbols = universe.symbols
        self._index = universe.index
        self._run = run

    @property
    def params(self) -> dict[str, Any]:
        """Parameter values of the strategy that ran."""
        return self.strategy.param_values

    @cached_property
    def stats(self) -> pd.Series:
        """Every single-instrument metric, plus turnover, average gross exposure, each
        leg's return and, for a ``scores`` strategy, the IC mean, IR, hit rate and the
        top-minus-bottom quantile return per period."""
        return pd.Series(self._run.stats, dtype=object, name=repr(self.strategy))

    def _series(self, values: np.ndarray, name: str) -> pd.Series:
        return pd.Series(values, index=self._index, name=name)

    def _frame(self, values: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(values, index=self._index, columns=self.symbols)

    @property
    def _held(self) -> np.ndarray:
        if self._run.held is None:
            raise ValueError("this run kept no positions (a sweep's run); re-run it with"
                             " sweep.detail(i)")
        return self._run.held

    @cached_property
    def equity(self) -> pd.Series:
        """Equity at each bar's close."""
        return self._series(self._run.equity, "equity")

    @cached_property
    def drawdown(self) -> pd.Series:
        """Drawdown from the running peak at each bar, as a fraction (<= 0)."""
        equity = self._run.equity
        peak = np.maximum.accumulate(np.maximum(equity, self.settings.cash))
        return self._series(equity / peak - 1.0, "drawdown")

    @cached_property
    def cash(self) -> pd.Series:
        """Cash at each bar's close (negative when short proceeds are spent on longs)."""
        return self._series(self._run.cash, "cash")

    @cached_property
    def positions(self) -> pd.DataFrame:
        """Units held of each symbol at each close (time x symbol, negative short)."""
        return self._frame(self._held)

    @cached_property
    def weights(self) -> pd.DataFrame:
        """The weight each symbol holds at each close: its value over equity."""
        with np.errstate(divide="ignore", invalid="ignore"):
            values = self._held * self._run.mark / self._run.equity[:, None]
        return self._frame(np.nan_to_num(values))

    @cached_property
    def target_weights(self) -> pd.DataFrame:
        """The target weights the strategy decided at each close (0 where none)."""
        return self._frame(self._run.targets)

    @cached_property
    def turnover(self) -> pd.Series:
        """Notional traded at each bar over the previous close's equity."""
        return self._series(self._run.turnover, "turnover")

    @cached_property
    def legs(self) -> pd.DataFrame:
        """Each bar's return of the long and the short leg (their P&L, commissions
        included, over the previous close's equity); they add up to the portfolio's."""
        return pd.DataFrame(self._run.legs, index=self._index, columns=["long", "short"])

    @cached_property
    def leg_equity(self) -> pd.DataFrame:
        """Growth of 1 in each leg (compounded :attr:`legs`)."""
        return (1.0 + self.legs).cumprod()

    @cached_property
    def trades(self) -> pd.DataFrame:
        """One row per closed trade (a partial close is a row of its own).

        Columns: symbol, entry_time, exit_time, entry_price, exit_price (after
        slippage), size (units, negative short), pnl (after commissions),
        return_pct, duration, exit_reason ("signal", "delisted", "end").
        """
        t = self._run.trades
        entry = self._index[t["entry_bar"]]
        exit_ = self._index[t["exit_bar"]]
        return pd.DataFrame({
            "symbol": self.symbols[t["symbol"]],
            "entry_time": entry,
            "exit_time": exit_,
            "entry_price": t["entry_price"],
            "exit_price": t["exit_price"],
            "size": t["size"],
            "pnl": t["pnl"],
            "return_pct": t["ret"] * 100.0,
            "duration": exit_ - entry,
            "exit_reason": pd.Categorical.from_codes(t["exit_reason"], pd.Index(EXIT_REASONS)),
        })

    @cached_property
    def ic(self) -> pd.Series:
        """Information coefficient per period: the rank correlation of the scores at a
        decision bar with each symbol's return to the next decision bar (empty for a
        ``weights`` strategy)."""
        bars = self._run.ic_bars
        if bars is None:
            return pd.Series([], index=pd.DatetimeIndex([], tz=self._index.tz), dtype=float, name="ic")
        return pd.Series(self._run.ic, index=self._index[bars], name="ic")

    @cached_property
    def quantile_returns(self) -> pd.DataFrame:
        """Mean next-period return of each score quantile (``q1`` lowest scores), per period."""
        bars = self._run.ic_bars
        values = self._run.quantiles
        if bars is None or values is None:
            return pd.DataFrame(index=pd.DatetimeIndex([], tz=self._index.tz))
        return pd.DataFrame(values, index=self._index[bars],
                            columns=[f"q{i + 1}" for i in range(values.shape[1])])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in _CACHED:
            state.pop(name, None)
        return state

    def __repr__(self) -> str:
        shown = ("return_pct", "sharpe", "max_drawdown_pct", "turnover", "ic_mean")
        body = ", ".join(f"{k}={format_stat(self._run.stats[k], ',.4g')}" for k in shown)
        return f"<PortfolioResult {self.strategy!r} on {len(self.symbols)} symbols: {body}>"

    def plot(self, **options: Any) -> Any:
        """Equity with its long and short legs, drawdown and turnover, as a Plotly figure.

        Needs the display layer (plotly).

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class Hold(nbb.PortfolioStrategy):
        ...     def weights(self, universe):
        ...         return universe.close * 0 + 0.1
        >>> fig = nbb.backtest(Hold(), nbb.load_sample("universe")).plot()
        >>> fig.data[0].name
        'equity'
        """
        return views.view("portfolio_plot")(self, **options)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = {"text/plain": repr(self), "text/html": self._repr_html_()}
        if views.available("portfolio_bundle"):
            bundle.update(views.view("portfolio_bundle")(self))
        return bundle

    def _repr_html_(self) -> str:
        return stats_html(repr(self.strategy), self._run.stats, ",.4g")
