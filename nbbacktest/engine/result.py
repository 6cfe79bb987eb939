"""Result: the outcome of one backtest, small, picklable, built lazily.

The simulator leaves numpy arrays behind; pandas objects are built on first access
so that a sweep's thousands of runs pay nothing for views they never look at.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nbbacktest.engine import views
from nbbacktest.engine.ledger import NOTE_FIELDS, trade_arrays
from nbbacktest.engine.metrics import ALL_STAT_LABELS

if TYPE_CHECKING:
    from nbbacktest.engine.strategy import Strategy
    from nbbacktest.engine.types import Run, Settings

_CACHED = ("stats", "equity", "drawdown", "position", "trades", "adjusted_orders")


class Result:
    """Stats, equity curve and trades of one backtest.

    Attributes
    ----------
    strategy : Strategy
        The parameter set that ran.
    params : dict
        Its parameter values.
    settings : Settings
        Cash, costs and fill rules used.
    seed : int
        The run's seed (``strategy.seed`` during the run).

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Hold(nbb.Strategy):
    ...     def signals(self, data):
    ...         return data["Close"] * 0 + 1
    >>> result = nbb.backtest(Hold, nbb.load_sample("daily"))
    >>> result.stats["trades"], len(result.equity) == len(nbb.load_sample("daily"))
    (0, True)
    """

    def __init__(
        self, strategy: Strategy, index: pd.DatetimeIndex, settings: Settings, seed: int, run: Run
    ) -> None:
        self.strategy = strategy
        self.settings = settings
        self.seed = seed
        self._index = index
        self._equity = run.equity
        self._held = run.held
        self._trades = run.trades
        self._notes = run.notes
        self._stats = run.stats

    @property
    def params(self) -> dict[str, Any]:
        """Parameter values of the strategy that ran."""
        return self.strategy.param_values

    @cached_property
    def stats(self) -> pd.Series:
        """Every metric of DESIGN §3, keyed by name (see ``STAT_LABELS`` for labels)."""
        return pd.Series(self._stats, dtype=object, name=repr(self.strategy))

    @cached_property
    def equity(self) -> pd.Series:
        """Equity at each bar's close."""
        return pd.Series(self._equity, index=self._index, name="equity")

    @cached_property
    def drawdown(self) -> pd.Series:
        """Drawdown from the running peak at each bar, as a fraction (<= 0)."""
        peak = np.maximum.accumulate(np.maximum(self._equity, self.settings.cash))
        return pd.Series(self._equity / peak - 1.0, index=self._index, name="drawdown")

    @cached_property
    def position(self) -> pd.Series:
        """Units held at each bar's close (negative short)."""
        return pd.Series(self._held, index=self._index, name="position")

    @cached_property
    def trades(self) -> pd.DataFrame:
        """One row per closed trade.

        Columns: entry_time, exit_time, entry_price, exit_price (after slippage),
        size (units, negative short), pnl (after commissions), return_pct, duration,
        tag, exit_reason ("signal": a change of target or an order of the strategy;
        "stop-loss"; "take-profit"; "trailing-stop"; "end": ``close_at_end`` at the
        last close). A partial close or a trade of ``separate_trades`` is a row of its own.
        """
        t = trade_arrays(self._trades)
        entry_time = self._index[t["entry_bar"]]
        exit_time = self._index[t["exit_bar"]]
        return pd.DataFrame(
            {
                "entry_time": entry_time,
                "exit_time": exit_time,
                "entry_price": t["entry_price"],
                "exit_price": t["exit_price"],
                "size": t["size"],
                "pnl": t["pnl"],
                "return_pct": t["ret"] * 100.0,
                "duration": exit_time - entry_time,
                "tag": t["tag"],
                "exit_reason": t["exit_reason"],
            }
        )

    @cached_property
    def adjusted_orders(self) -> pd.DataFrame:
        """Event-driven orders the leverage limit reduced or rejected, one row each.

        Columns: time (the fill's bar), requested and filled (units, negative
        selling), price (the fill price after slippage they were sized at), action
        ("reduced" or "rejected"), reason, tag. Empty when every
        order filled as placed (always for vectorized strategies, whose signals are
        checked against the limit before the run).

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> class AllIn(nbb.Strategy):
        ...     def next(self, bar):
        ...         if bar.i == 0:
        ...             self.buy(size=10**9)
        >>> nbb.backtest(AllIn, nbb.load_sample("daily")).adjusted_orders.action.tolist()
        ['reduced']
        """
        rows = list(zip(*self._notes)) if self._notes else [()] * len(NOTE_FIELDS)
        columns = dict(zip(NOTE_FIELDS, rows))
        bars = np.array(columns.pop("bar"), dtype=np.int64)
        frame = pd.DataFrame({"time": self._index[bars]})
        for name in NOTE_FIELDS[1:]:
            numeric = name in ("requested", "filled", "price")
            frame[name] = pd.Series(columns[name], dtype=float if numeric else object)
        return frame

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in _CACHED:
            state.pop(name, None)
        return state

    def __repr__(self) -> str:
        shown = ("return_pct", "sharpe", "max_drawdown_pct", "trades", "win_rate_pct")
        body = ", ".join(f"{k}={format_stat(self._stats[k])}" for k in shown)
        return f"<Result {self.strategy!r}: {body}>"

    def plot(self, **options: Any) -> Any:
        """Equity with drawdown underneath and trade markers, as a Plotly figure.

        Needs the display layer (plotly). ``options`` go to
        ``nbbacktest.display.charts.result_figure``.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> from nbbacktest.engine.examples import SmaCross
        >>> fig = nbb.backtest(SmaCross(), nbb.load_sample("daily")).plot()
        >>> fig.data[0].name
        'equity'
        """
        return views.view("result_plot")(self, **options)

    def stats_table(self) -> Any:
        """The stats as a Plotly table (needs the display layer)."""
        return views.view("stats_table")(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        # The stats table and chart when the display layer can load; text and HTML always.
        bundle = {"text/plain": repr(self), "text/html": self._repr_html_()}
        if views.available("result_bundle"):
            bundle.update(views.view("result_bundle")(self))
        return bundle

    def _repr_html_(self) -> str:
        return stats_html(repr(self.strategy), self._stats)


def stats_html(title: str, stats: Mapping[str, Any], number_format: str = ",.2f") -> str:
    """A run's stats as a small HTML table under its title: the rich display without plotly.

    Examples
    --------
    >>> page = stats_html("SmaCross()", {"sharpe": 1.23456, "trades": 3})
    >>> "<b>SmaCross()</b>" in page, ">Sharpe ratio<" in page, ">1.23<" in page
    (True, True, True)
    """
    rows = "".join(
        f"<tr><th style='text-align:left'>{html.escape(ALL_STAT_LABELS.get(k, k))}</th>"
        f"<td style='text-align:right'>{html.escape(format_stat(v, number_format))}</td></tr>"
        for k, v in stats.items()
    )
    return f"<div><b>{html.escape(title)}</b><table>{rows}</table></div>"


def format_stat(value: Any, number_format: str = ",.2f") -> str:
    """A stat as text: floats in ``number_format`` (NaN and inf as they are), the rest as ``str``."""
    if isinstance(value, float):
        return format(value, number_format) if np.isfinite(value) else str(value)
    return str(value)
