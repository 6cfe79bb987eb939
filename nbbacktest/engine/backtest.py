"""Run one strategy over one instrument: ``backtest()`` and the core it shares with sweeps."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from nbbacktest.engine.broker import Broker, Ledger, follow_changes
from nbbacktest.engine.data import (
    OHLC,
    IdentityCache,
    column_positions,
    float_values,
    is_universe,
    read_only_frame,
    read_only_index,
    scratch_rows,
    signal_exposures,
    validated_values,
)
from nbbacktest.engine.event_driven import EventRunner
from nbbacktest.engine.metrics import Timeline, buy_and_hold_pct, summarize
from nbbacktest.engine.result import Result
from nbbacktest.engine.strategy import Strategy, resolve_strategy
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
        Largest absolute exposure allowed (default 1). Signals beyond it raise; an
        event-driven order beyond it is reduced to it, or rejected when the position
        is already there (``Result.adjusted_orders`` lists them).
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

    @classmethod
    def from_options(cls, options: Mapping[str, Any], owner: str) -> Settings:
        """Settings from keyword options, naming ``owner`` and the valid names for an unknown one.

        Examples
        --------
        >>> Settings.from_options({"commission": 0.002}, "run_many").commission
        0.002
        >>> Settings.from_options({"comission": 0.002}, "run_many")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        TypeError: run_many got an unknown option 'comission'; the simulation settings are cash, commission, ...
        """
        known = [f.name for f in fields(cls)]
        unknown = [k for k in options if k not in known]
        if unknown:
            raise TypeError(f"{owner} got an unknown option {unknown[0]!r}; the simulation settings are "
                            f"{', '.join(known)}")
        return cls(**options)

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


class PreparedData:
    """A validated frame and what the simulator reads of it, built once per frame.

    The price columns are numpy views of the frame. What only depends on the data
    set (bar times for the statistics, buy & hold return, a missing volume column)
    is computed on first use and then shared by every run on the frame. A run's
    strategy never sees ``frame`` itself but :meth:`run_frame`: a private frame
    over read-only views of the same columns.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> data = PreparedData.from_frame(nbb.load_sample("daily"))
    >>> len(data) == len(data.close) == data.timeline.n
    True
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        open: np.ndarray,  # noqa: A002 - the column's name
        high: np.ndarray,
        low: np.ndarray,
        close: np.ndarray,
        volume: np.ndarray | None = None,
    ) -> None:
        self.frame = frame
        # Read-only bar times: the strategy's frame and every result share them.
        self.index: pd.DatetimeIndex = read_only_index(frame.index)
        self.open, self.high, self.low, self.close = open, high, low, close
        self._volume = volume
        self._shared: pd.DataFrame | None = None
        self._handed_out = False

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, values: np.ndarray | None = None) -> PreparedData:
        """Wrap an already validated OHLC frame (see ``validate_ohlcv``).

        ``values``, the frame's float64 block as validation found it, saves a look.
        """
        # One view of the float block; five column lookups cost 10x more.
        if values is None:
            values = float_values(frame)
        if values is not None:
            position = column_positions(frame.columns)
            columns = {name: values[:, i] for name, i in position.items()}
        else:
            columns = {name: frame[name].to_numpy() for name in (*OHLC, "Volume") if name in frame}
        return cls(
            frame, columns["Open"], columns["High"], columns["Low"], columns["Close"],
            columns.get("Volume"),
        )

    def __len__(self) -> int:
        return len(self.close)

    def run_frame(self) -> pd.DataFrame:
        """The frame one run's strategy gets: its own, over read-only shared columns.

        A column the strategy adds or replaces stays in its frame, and a write into
        the values raises (see :func:`~nbbacktest.engine.data.read_only_frame`), so
        no run sees another's changes and the caller's frame is never modified.
        The first call builds a frame and hands it out (one backtest needs no
        more); later calls copy an untouched one shallowly (about 10 us, no data
        copied: pandas is copy-on-write).

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> data = PreparedData.from_frame(nbb.load_sample("daily"))
        >>> first = data.run_frame()
        >>> first["sma"] = first["Close"].rolling(5).mean()
        >>> "sma" in data.run_frame(), "sma" in data.frame
        (False, False)
        """
        shared = self._shared
        if shared is None:
            if not self._handed_out:
                self._handed_out = True
                return read_only_frame(self.frame, index=self.index)
            shared = self._shared = read_only_frame(self.frame, index=self.index)
        return shared.copy(deep=False)

    @property
    def tz(self) -> Any:
        """The time zone of the bar times (None when naive)."""
        return self.index.tz

    @cached_property
    def volume(self) -> np.ndarray:
        """The Volume column, NaN when the data has none."""
        return np.full(len(self.close), np.nan) if self._volume is None else self._volume

    @cached_property
    def index_ns(self) -> np.ndarray:
        """Bar times as int64 nanoseconds."""
        return self.index.as_unit("ns").asi8

    @cached_property
    def timeline(self) -> Timeline:
        """The bar times as the statistics need them (shared by frames with this index)."""
        return _TIMELINES.get(self.index, Timeline)

    @cached_property
    def buy_hold_pct(self) -> float:
        """The buy & hold return of the data set, in percent."""
        return buy_and_hold_pct(self.close)


# DatetimeIndex -> Timeline: backtest() on the same frame again builds no Timestamps.
_TIMELINES = IdentityCache(kept=64)


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


class Run:
    """The raw outcome of one simulation: arrays, the stats dict, the trade book.

    A vectorized run's trade records are built on first use: a sweep reads only ``stats``.
    """

    __slots__ = ("equity", "held", "stats", "_ledger")

    def __init__(
        self, equity: np.ndarray, held: np.ndarray, stats: dict[str, Any], ledger: Ledger
    ) -> None:
        self.equity = equity
        self.held = held
        self.stats = stats
        self._ledger = ledger

    @property
    def trades(self) -> Sequence[tuple]:
        """Closed trades, records in ``TRADE_FIELDS`` order (``broker.TRADE_FIELDS``).

        A list, or a :class:`~nbbacktest.engine.broker.TradeBook` that builds the
        records on first use (``broker.trade_arrays`` reads its columns directly).
        """
        return self._ledger.trades

    @property
    def notes(self) -> list[tuple]:
        """Orders the leverage limit reduced or rejected (``broker.NOTE_FIELDS`` order)."""
        return self._ledger.notes


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
    ledger = _fill(strategy, data, settings, seed)
    work = scratch_rows(len(data.close))
    equity, held = ledger.mark_to_market(data.close, work[0])
    stats = summarize(
        data.timeline, equity, settings.cash, data.buy_hold_pct, ledger.bars_in_market(),
        ledger.pnl, ledger.returns, work[:2],
    )
    return Run(equity, held, stats, ledger)


def simulate_stats(
    strategy: Strategy, data: PreparedData, settings: Settings, seed: int, *, private: bool = False
) -> dict[str, Any]:
    """The stats of :func:`simulate`, bit for bit, keeping nothing else: a sweep's hot path.

    Per-bar arrays live in scratch rows reused by the next run on this thread, and
    the trade records are never built. ``private=True`` says the instance was made
    for this run alone (a sweep's point), so it runs as it is instead of on a copy.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> data = PreparedData.from_frame(nbb.load_sample("daily"))
    >>> stats = simulate_stats(SmaCross(), data, Settings(), 0)
    >>> stats == simulate(SmaCross(), data, Settings(), 0).stats
    True
    """
    ledger = _fill(strategy, data, settings, seed, private)
    work = scratch_rows(len(data.close))
    equity = ledger.equity_into(data.close, work[2])
    return summarize(
        data.timeline, equity, settings.cash, data.buy_hold_pct, ledger.bars_in_market(),
        ledger.pnl, ledger.returns, work[:2],
    )


def _fill(strategy: Strategy, data: PreparedData, settings: Settings, seed: int,
          private: bool = False) -> Ledger:
    """Run the strategy's body on a private copy; the fills and trades it leaves."""
    cls = type(strategy)
    worker = strategy if private else cls._from_values(strategy.param_values)
    worker._seed = seed
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
        return follow_targets(exposures, data, settings)
    if mode == "event":
        broker = Broker(settings.cash, settings.commission, settings.slippage, settings.fractional)
        runner = EventRunner(worker, data, broker, settings.fill, frame, settings.leverage)
        worker._runner = runner
        try:
            runner.run()
        except Exception as error:
            raise StrategyError(_failure(strategy, "next", error)) from error
        n = len(data.close)
        if settings.close_at_end and broker.units:
            broker.to_target(0.0, n - 1, float(data.close[-1]), reason="end")
        return broker.ledger(n)
    raise TypeError(
        f"Strategy {cls.__name__!r} defines neither signals(data) (vectorized) nor"
        " next(bar) (event-driven): define one of them"
    )


def _failure(strategy: Strategy, where: str, error: BaseException) -> str:
    return f"{strategy!r}: {where} raised {type(error).__name__}: {error}"


def follow_targets(exposures: np.ndarray, data: PreparedData, settings: Settings) -> Ledger:
    """Trade only where the target exposure changes (a held position is not rebalanced).

    With ``close_at_end`` a last change to flat at the last close closes what is
    still open (a no-op when flat).
    """
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
    return follow_changes(
        settings.cash, settings.commission, settings.slippage, settings.fractional,
        targets, bars, prices, n, end=settings.close_at_end,
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
    strategy = resolve_strategy(strategy)[1]
    settings = Settings(cash, commission, slippage, fill, fractional, leverage, close_at_end)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if not isinstance(data, pd.DataFrame) and is_universe(data):
        raise DataError(
            "backtest() runs one instrument but data is a universe of"
            f" {len(data)} symbols: pass one frame such as data[{next(iter(data))!r}],"
            " or use nbb.sweep() to run every symbol"
        )
    prepared = PreparedData.from_frame(*validated_values(data, "data"))
    run_seed = derive_seed(seed, strategy.param_values)
    run = simulate(strategy, prepared, settings, run_seed)
    return Result(strategy, prepared.index, settings, run_seed, run)
