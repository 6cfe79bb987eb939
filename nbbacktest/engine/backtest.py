"""Run one strategy over one instrument: ``backtest()`` and the core it shares with sweeps."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast, overload

import numpy as np
import pandas as pd

from nbbacktest.engine.broker import Broker, follow_changes_paid
from nbbacktest.engine.caches import scratch_row
from nbbacktest.engine.costs import CommissionSpec
from nbbacktest.engine.data import is_universe, validated_values
from nbbacktest.engine.event_driven import EventRunner
from nbbacktest.engine.ledger import Ledger
from nbbacktest.engine.metrics import summarize
from nbbacktest.engine.period_returns import period_returns_into
from nbbacktest.engine.portfolio import PortfolioStrategy, is_portfolio
from nbbacktest.engine.result import Result
from nbbacktest.engine.signals import signal_exposures
from nbbacktest.engine.stat_formulas import trade_bars
from nbbacktest.engine.strategy import Strategy, resolve_strategy
from nbbacktest.engine.types import PreparedData, Run, Settings
from nbbacktest.engine.universe import as_universe
from nbbacktest.errors import DataError, StrategyError

if TYPE_CHECKING:
    from nbbacktest.engine.portfolio_result import PortfolioResult

__all__ = [
    "PreparedData", "Run", "RunSeeds", "Settings", "backtest", "backtest_portfolio", "derive_seed",
    "follow_targets",
    "simulate", "simulate_stats", "start_bar",
]


def derive_seed(base_seed: int, params: Mapping[str, Any], symbol: str | None = None) -> int:
    """The seed of one run: a hash of the sweep's seed, the params and the symbol.

    The same point gets the same seed in any process, on any engine, in any order.

    Examples
    --------
    >>> derive_seed(0, {"fast": 10, "slow": 30}) == derive_seed(0, {"slow": 30, "fast": 10})
    True
    """
    key = repr((int(base_seed), sorted(params.items()), symbol)).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


class RunSeeds:
    """:func:`derive_seed` for many runs: ``seeds(names, values, symbol)``.

    The hashed text of every run of one class on one symbol comes from one format
    string, built on first use: about 1 us a run. Engines derive the seeds of the
    points they run, so a sweep's client never waits for a whole grid's seeds.

    Examples
    --------
    >>> seeds = RunSeeds(0)
    >>> seeds(("fast", "slow"), (10, 30)) == derive_seed(0, {"fast": 10, "slow": 30})
    True
    """

    __slots__ = ("base_seed", "_templates")

    def __init__(self, base_seed: int) -> None:
        self.base_seed = int(base_seed)
        self._templates: dict[tuple[tuple[str, ...], str | None], str] = {}

    def __call__(self, names: tuple[str, ...], values: Sequence[Any], symbol: str | None = None) -> int:
        template = self._templates.get((names, symbol))
        if template is None:
            template = self._templates[(names, symbol)] = self._template(names, symbol)
        digest = hashlib.blake2b(template.format(*values).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    def _template(self, names: tuple[str, ...], symbol: str | None) -> str:
        # repr((seed, sorted(params.items()), symbol)) as a format string: the
        # names' order is the same for every run, so it is sorted once.
        def literal(text: str) -> str:
            return text.replace("{", "{{").replace("}", "}}")

        order = sorted(range(len(names)), key=names.__getitem__)
        pairs = ", ".join(f"({literal(repr(names[i]))}, {{{i}!r}})" for i in order)
        return f"({self.base_seed!r}, [{pairs}], {literal(repr(symbol))})"


def simulate(strategy: Strategy, data: PreparedData, settings: Settings, seed: int) -> Run:
    """Run ``strategy`` on prepared data: equity, position, trades and stats.

    The strategy runs on a private copy, so the caller's instance never holds state.
    Exceptions raised by user code come back as :class:`StrategyError` from the cause.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> data = PreparedData.from_frame(nbb.load_sample("daily"))
    >>> run = simulate(SmaCross(), data, Settings(), seed=0)
    >>> len(run.equity) == len(data), run.stats["trades"] == len(run.trades)
    (True, True)
    """
    ledger, paid = _fill(strategy, data, settings, seed)
    bars = data.window  # what the run trades on (every bar, unless it trades from a start)
    equity, held = ledger.mark_to_market(bars.close, scratch_row(len(bars.close)))
    stats = summarize(
        bars.timeline, equity, settings.cash, bars.buy_hold_pct, ledger.bars_in_market(),
        ledger.pnl, ledger.returns, **_trade_facts(ledger, paid, bars),
    )
    return Run(equity, held, stats, ledger)


def simulate_stats(
    strategy: Strategy, data: PreparedData, settings: Settings, seed: int, *, private: bool = False,
    returns_out: np.ndarray | None = None, bars_per_period: int = 1,
) -> dict[str, Any]:
    """The stats of :func:`simulate`, bit for bit, keeping nothing else: a sweep's hot path.

    The equity lives in a scratch row reused by the next run on this thread, and
    the trade records are never built. ``private=True`` says the instance was made
    for this run alone (a sweep's point), so it runs as it is instead of on a copy.
    ``returns_out``, when given, receives the run's returns, ``bars_per_period``
    bars compounded per value (see :mod:`nbbacktest.engine.period_returns`), after
    the stats are computed (they do not change).

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> data = PreparedData.from_frame(nbb.load_sample("daily"))
    >>> stats = simulate_stats(SmaCross(), data, Settings(), 0)
    >>> stats == simulate(SmaCross(), data, Settings(), 0).stats
    True
    """
    ledger, paid = _fill(strategy, data, settings, seed, private)
    bars = data.window
    equity = ledger.equity_into(bars.close, scratch_row(len(bars.close)))
    stats = summarize(
        bars.timeline, equity, settings.cash, bars.buy_hold_pct, ledger.bars_in_market(),
        ledger.pnl, ledger.returns, **_trade_facts(ledger, paid, bars),
    )
    if returns_out is not None:
        period_returns_into(equity, settings.cash, returns_out, bars_per_period)
    return stats


def _trade_facts(ledger: Ledger, paid: float, data: PreparedData) -> dict[str, Any]:
    """``summarize``'s keywords beyond the equity: the market, trade bars, commissions."""
    entry, exit_ = trade_bars(ledger)
    return {"market": data.market, "entry_bars": entry, "exit_bars": exit_, "commissions": paid}


def _fill(strategy: Strategy, data: PreparedData, settings: Settings, seed: int,
          private: bool = False) -> tuple[Ledger, float]:
    """Run the strategy's body on a private copy: the fills and trades it leaves, and
    the commissions paid (summed fill by fill, in the same order on both paths).

    Data that trades from a start (``PreparedData.trading_from``) gives the strategy
    every bar, then trades the window only: the signals before it count as flat, and
    ``next`` runs from its first bar on. The ledger covers the window's bars.
    """
    cls = type(strategy)
    worker = strategy if private else cls._from_values(strategy.param_values)
    worker._seed = seed
    worker._prepared = data  # self.I's memo is per prepared data
    frame = worker.data = data.run_frame()
    mode = cls._mode
    if mode == "vector":
        try:
            raw = worker.signals(frame)
        except Exception as error:
            raise StrategyError(_failure(strategy, "signals", error)) from error
        exposures = signal_exposures(
            raw, data.index, leverage=settings.leverage, name=f"{cls.__name__}.signals()"
        )
        return _follow_targets(exposures[data.start:], data.window, settings)
    if mode == "event":
        broker = Broker(settings.cash, settings.costs, settings.fill_slippage, settings.fractional)
        runner = EventRunner(worker, data, broker, settings.fill, frame, settings.leverage,
                             start=data.start)
        worker._runner = runner
        try:
            runner.run()
        except Exception as error:
            raise StrategyError(_failure(strategy, "next", error)) from error
        n = len(data.close)
        if settings.close_at_end and broker.units:
            runner.finish(float(data.close[-1]))  # each open trade closes as its own row
        return broker.ledger(n, start=data.start), broker.paid
    raise TypeError(
        f"Strategy {cls.__name__!r} defines neither signals(data) (vectorized) nor"
        " next(bar) (event-driven): define one of them"
    )


def _failure(strategy: Strategy, where: str, error: BaseException) -> str:
    return f"{strategy!r}: {where} raised {type(error).__name__}: {error}"


def follow_targets(exposures: np.ndarray, data: PreparedData, settings: Settings) -> Ledger:
    """Trade only where the target exposure changes (a held position is not rebalanced).

    With ``close_at_end`` a last change to flat at the last close closes what is
    still open (a no-op when flat). A commission other than a plain fraction (a
    fixed fee, a callable) fills through :meth:`Broker.follow`, as the event path does.
    """
    return _follow_targets(exposures, data, settings)[0]


def _follow_targets(
    exposures: np.ndarray, data: PreparedData, settings: Settings
) -> tuple[Ledger, float]:
    n = len(exposures)
    # The target before bar 0 is flat.
    decided = (exposures[1:] != exposures[:-1]).nonzero()[0]
    decided += 1
    if exposures[0] != 0.0:
        decided = np.concatenate((np.zeros(1, np.intp), decided))
    if settings.fill == "next_open":
        if len(decided) and decided[-1] == n - 1:
            decided = decided[:-1]  # decided at the last close: no next open
        bars = decided + 1
        prices = data.open[bars]
    else:
        bars = decided
        prices = data.close[bars]
    targets = exposures[decided]
    if settings.close_at_end:
        targets = np.append(targets, 0.0)
        bars = np.append(bars, n - 1)
        prices = np.append(prices, data.close[-1])
    return follow_changes_paid(
        settings.cash, settings.commission, settings.fill_slippage, settings.fractional,
        targets, bars, prices, n, end=settings.close_at_end,
    )


@overload
def backtest(
    strategy: PortfolioStrategy | type[PortfolioStrategy],
    data: Any,
    *,
    cash: float = ...,
    commission: CommissionSpec = ...,
    slippage: float = ...,
    fill: str = ...,
    fractional: bool = ...,
    leverage: float | None = ...,
    close_at_end: bool = ...,
    spread: float = ...,
    seed: int = ...,
    trade_start: int | str | pd.Timestamp | None = ...,
) -> PortfolioResult: ...


@overload
def backtest(
    strategy: Strategy | type[Strategy],
    data: Any,
    *,
    cash: float = ...,
    commission: CommissionSpec = ...,
    slippage: float = ...,
    fill: str = ...,
    fractional: bool = ...,
    leverage: float | None = ...,
    close_at_end: bool = ...,
    spread: float = ...,
    seed: int = ...,
    trade_start: int | str | pd.Timestamp | None = ...,
) -> Result: ...


def backtest(
    strategy: Strategy | type[Strategy],
    data: pd.DataFrame,
    *,
    cash: float = 10_000.0,
    commission: CommissionSpec = 0.0,
    slippage: float = 0.0,
    fill: str = "next_open",
    fractional: bool = True,
    leverage: float | None = None,
    close_at_end: bool = False,
    spread: float = 0.0,
    seed: int = 0,
    trade_start: int | str | pd.Timestamp | None = None,
) -> Result | PortfolioResult:
    """Backtest one strategy on one instrument.

    Parameters
    ----------
    strategy : Strategy or Strategy subclass
        The instance to run (a class runs with its default parameters).
    data : DataFrame
        OHLC(V) bars on a DatetimeIndex (see :func:`nbbacktest.load_ohlcv`).
    cash, commission, slippage, fill, fractional, leverage, close_at_end, spread
        See :class:`Settings`: ``commission`` is a fraction, ``(fixed, fraction)``
        or a callable ``cost(size, price)``.
    seed : int
        Base seed; the run's seed (``strategy.seed``) is derived from it and the
        params, exactly as in a sweep with the same seed.
    trade_start : int, str or Timestamp, optional
        Trade from this bar on (a bar number, or the first bar at or after a
        time): the bars before are warm-up history that the strategy's
        indicators see, but the run holds no position and takes no fill before
        it, and equity, trades and stats cover the bars from it on.

    Returns
    -------
    Result
        ``stats``, ``equity``, ``trades``, ``params``, ``strategy``.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class SmaCross(nbb.Strategy):
    ...     fast, slow = 10, 30
    ...     def signals(self, data):
    ...         close = data["Close"]
    ...         return (close.rolling(self.fast).mean() > close.rolling(self.slow).mean()).astype(float)
    >>> result = nbb.backtest(SmaCross(), nbb.load_sample("daily"), commission=0.002)
    >>> result.stats["trades"] > 0
    True
    >>> late = nbb.backtest(SmaCross(), nbb.load_sample("daily"), trade_start="2022-01-01")
    >>> str(late.equity.index[0].date())
    '2022-01-03'
    """
    strategy = resolve_strategy(strategy)[1]
    settings = Settings(cash, commission, slippage, fill, fractional, leverage, close_at_end, spread)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if is_portfolio(strategy):
        if trade_start is not None:
            raise TypeError("trade_start is for single-instrument strategies; a portfolio strategy"
                            " trades from its first decision (give its scores NaN before that)")
        return backtest_portfolio(cast(PortfolioStrategy, strategy), data, settings, seed)
    if not isinstance(data, pd.DataFrame) and is_universe(data):
        raise DataError(
            "backtest() runs one instrument but data is a universe of"
            f" {len(data)} symbols: pass one frame such as data[{next(iter(data))!r}],"
            " or use nbb.sweep() to run every symbol"
        )
    prepared = PreparedData.from_frame(*validated_values(data, "data", remember=True))
    if trade_start is not None:
        prepared = prepared.trading_from(start_bar(prepared.index, trade_start))
    run_seed = derive_seed(seed, strategy.param_values)
    run = simulate(strategy, prepared, settings, run_seed)
    return Result(strategy, prepared.window.index, settings, run_seed, run)


def backtest_portfolio(
    strategy: PortfolioStrategy, data: Any, settings: Settings, seed: int
) -> PortfolioResult:
    """:func:`backtest` of a portfolio strategy: one run over the whole universe.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> class Hold(nbb.PortfolioStrategy):
    ...     def weights(self, universe):
    ...         return universe.close * 0 + 0.1
    >>> result = backtest_portfolio(Hold(), nbb.load_sample("universe"), Settings(), 0)
    >>> result.stats["trades"], result.positions.shape
    (0, (2500, 10))
    """
    from nbbacktest.engine.portfolio_result import PortfolioResult
    from nbbacktest.engine.portfolio_sim import simulate_portfolio

    if isinstance(data, pd.DataFrame):
        raise DataError(f"{type(strategy).__name__} is a portfolio strategy: it needs a universe,"
                        " nbb.load_universe(...) or a mapping {symbol: DataFrame}, not one frame")
    universe = as_universe(data)
    run_seed = derive_seed(seed, strategy.param_values)
    run = simulate_portfolio(strategy, universe, settings, run_seed)
    return PortfolioResult(strategy, universe, settings, run_seed, run)


def start_bar(index: pd.DatetimeIndex, start: int | str | pd.Timestamp) -> int:
    """The bar number of ``trade_start``: a bar number, or the first bar at or after a time.

    Examples
    --------
    >>> index = pd.date_range("2024-01-01", periods=5)
    >>> start_bar(index, 2), start_bar(index, "2024-01-03 12:00")
    (2, 3)
    """
    n = len(index)
    if isinstance(start, (int, np.integer)) and not isinstance(start, bool):
        bar = int(start)
    elif isinstance(start, (str, pd.Timestamp)):
        try:
            moment = pd.Timestamp(start)
        except ValueError as error:
            raise DataError(f"trade_start {start!r} is not a time: {error}") from None
        if index.tz is not None and moment.tz is None:
            moment = moment.tz_localize(index.tz)
        bar = int(index.searchsorted(moment, side="left"))
    else:
        raise TypeError(f"trade_start must be a bar number or a time, got {type(start).__name__}"
                        f" {start!r:.60}")
    if not 0 <= bar < n:
        raise DataError(f"trade_start {start!r} is outside the data ({n} bars, {index[0]} to"
                        f" {index[-1]}): trading must start on one of its bars")
    return bar
