"""Run one strategy over one instrument: ``backtest()`` and the core it shares with sweeps."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from nbbacktest.engine.broker import Broker
from nbbacktest.engine.data import OHLC, float_values, is_universe, validate_ohlcv, validate_signals
from nbbacktest.engine.event_driven import EventRunner
from nbbacktest.engine.metrics import compute_stats
from nbbacktest.engine.result import Result
from nbbacktest.engine.strategy import Strategy
from nbbacktest.errors import DataError, StrategyError

FILL_MODES = ("next_open", "close")


@dataclass(frozen=True)
class Settings:
    """Simulation settings shared by every run of a backtest or a sweep.

    Parameters
    ----------
    cash : float
        Starting equity.
    commission : float
        Fraction of traded notional paid on every fill (0.002 = 0.2 %).
    slippage : float
        Fraction by which every fill price moves against the trade.
    fill : {"next_open", "close"}
        A change of target decided at bar t's close fills at bar t+1's open, or at
        bar t's close.
    fractional : bool
        Keep fractional units; False rounds units toward zero.
    leverage : float, optional
        Largest absolute exposure allowed (default 1).
    close_at_end : bool
        Close the last open position at the last close (else it is only valued).

    Examples
    --------
    >>> Settings(cash=5_000, commission=0.001).fill
    'next_open'
    """

    cash: float = 10_000.0
    commission: float = 0.0
    slippage: float = 0.0
    fill: str = "next_open"
    fractional: bool = True
    leverage: float | None = None
    close_at_end: bool = False

    def __post_init__(self) -> None:
        _check_number("cash", self.cash, low=0.0, low_open=True)
        _check_number("commission", self.commission, low=0.0, high=1.0)
        _check_number("slippage", self.slippage, low=0.0, high=1.0)
        if self.fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {FILL_MODES}, got {self.fill!r}")
        for name in ("fractional", "close_at_end"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.leverage is not None:
            _check_number("leverage", self.leverage, low=1.0)
        object.__setattr__(self, "cash", float(self.cash))

    def as_dict(self) -> dict[str, Any]:
        """The settings as keyword arguments of :func:`backtest`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _check_number(
    name: str, value: Any, *, low: float, high: float | None = None, low_open: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < low or (low_open and value == low):
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    if high is not None and value >= high:
        raise ValueError(f"{name} must be below {high}, got {value!r}")


@dataclass(frozen=True, eq=False)
class PreparedData:
    """A validated frame and the numpy views the simulator reads, built once per frame."""

    frame: pd.DataFrame
    index: pd.DatetimeIndex
    index_ns: np.ndarray
    tz: Any
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> PreparedData:
        """Wrap an already validated OHLC frame (see ``validate_ohlcv``)."""
        index = frame.index
        # One view of the float block; five column lookups cost 10x more.
        values = float_values(frame)
        if values is not None:
            position = {name: i for i, name in enumerate(frame.columns)}
            columns = {name: values[:, i] for name, i in position.items()}
        else:
            columns = {name: frame[name].to_numpy() for name in (*OHLC, "Volume") if name in frame}
        volume = columns.get("Volume")
        return cls(
            frame=frame,
            index=index,
            index_ns=index.as_unit("ns").asi8,
            tz=index.tz,
            open=columns["Open"],
            high=columns["High"],
            low=columns["Low"],
            close=columns["Close"],
            volume=np.full(len(frame), np.nan) if volume is None else volume,
        )

    def __len__(self) -> int:
        return len(self.close)


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


@dataclass(frozen=True, eq=False)
class Run:
    """The raw outcome of one simulation: arrays and the stats dict."""

    equity: np.ndarray
    held: np.ndarray
    trades: list[tuple]  # Broker.trades records, fields in TRADE_FIELDS order
    stats: dict[str, Any]


def simulate(strategy: Strategy, data: PreparedData, settings: Settings, seed: int) -> Run:
    """Run ``strategy`` on prepared data: the hot path of backtests and sweeps.

    The strategy runs on a private copy, so the caller's instance never holds state.
    Exceptions raised by user code come back as :class:`StrategyError` from the cause.
    """
    cls = type(strategy)
    worker = cls._from_values(strategy.param_values)
    worker._seed = seed
    worker.data = data.frame
    broker = Broker(settings.cash, settings.commission, settings.slippage, settings.fractional)
    if cls._mode == "vector":
        try:
            raw = worker.signals(data.frame)
        except Exception as error:
            raise StrategyError(_failure(strategy, "signals", error)) from error
        exposures = validate_signals(
            raw, data.frame, leverage=settings.leverage, name=f"{cls.__name__}.signals()"
        )
        follow_targets(broker, exposures, data, settings.fill)
    elif cls._mode == "event":
        runner = EventRunner(worker, data, broker, settings.fill)
        worker._runner = runner
        try:
            runner.run()
        except Exception as error:
            raise StrategyError(_failure(strategy, "next", error)) from error
    else:
        raise TypeError(
            f"Strategy {cls.__name__!r} defines neither signals(data) (vectorized) nor"
            " next(bar) (event-driven): define one of them"
        )
    n = len(data)
    if settings.close_at_end and broker.units:
        broker.to_target(0.0, n - 1, float(data.close[-1]), "end")
    equity, held = broker.mark_to_market(data.close)
    pnl, returns = broker.trade_pnl_and_returns()
    stats = compute_stats(
        data.index_ns, equity, settings.cash, data.close, held != 0, pnl, returns, tz=data.tz
    )
    return Run(equity=equity, held=held, trades=broker.trades, stats=stats)


def _failure(strategy: Strategy, where: str, error: BaseException) -> str:
    return f"{strategy!r}: {where} raised {type(error).__name__}: {error}"


def follow_targets(broker: Broker, exposures: np.ndarray, data: PreparedData, fill: str) -> None:
    """Trade only where the target exposure changes (a held position is not rebalanced)."""
    previous = np.empty_like(exposures)
    previous[0] = 0.0
    previous[1:] = exposures[:-1]
    decided = np.flatnonzero(exposures != previous)
    if fill == "next_open":
        decided = decided[decided < len(exposures) - 1]
        bars = decided + 1
        prices = data.open[bars]
    else:
        bars = decided
        prices = data.close[bars]
    broker.follow(exposures[decided].tolist(), bars.tolist(), prices.tolist())


def resolve_strategy(strategy: Any, argument: str = "strategy") -> Strategy:
    """Accept a Strategy instance, or a subclass (run with its defaults)."""
    if isinstance(strategy, type) and issubclass(strategy, Strategy) and strategy is not Strategy:
        return strategy()
    if isinstance(strategy, Strategy):
        return strategy
    raise TypeError(
        f"{argument} must be a Strategy instance such as SmaCross(fast=10) or a Strategy"
        f" subclass, got {type(strategy).__name__} {strategy!r:.60}"
    )


def backtest(
    strategy: Strategy | type[Strategy],
    data: pd.DataFrame,
    *,
    cash: float = 10_000.0,
    commission: float = 0.0,
    slippage: float = 0.0,
    fill: str = "next_open",
    fractional: bool = True,
    leverage: float | None = None,
    close_at_end: bool = False,
    seed: int = 0,
) -> Result:
    """Backtest one strategy on one instrument.

    Parameters
    ----------
    strategy : Strategy or Strategy subclass
        The instance to run (a class runs with its default parameters).
    data : DataFrame
        OHLC(V) bars on a DatetimeIndex (see :func:`nbbacktest.load_ohlcv`).
    cash, commission, slippage, fill, fractional, leverage, close_at_end
        See :class:`Settings`.
    seed : int
        Base seed; the run's seed (``strategy.seed``) is derived from it and the
        params, exactly as in a sweep with the same seed.

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
    """
    strategy = resolve_strategy(strategy)
    settings = Settings(cash, commission, slippage, fill, fractional, leverage, close_at_end)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if is_universe(data):
        raise DataError(
            "backtest() runs one instrument but data is a universe of"
            f" {len(data)} symbols: pass one frame such as data[{next(iter(data))!r}],"
            " or use nbb.sweep() to run every symbol"
        )
    prepared = PreparedData.from_frame(validate_ohlcv(data, name="data"))
    run_seed = derive_seed(seed, strategy.param_values)
    run = simulate(strategy, prepared, settings, run_seed)
    return Result(strategy, prepared.index, settings, run_seed, run)
