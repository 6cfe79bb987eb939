"""The simulator's base types: what a run takes and what it leaves.

:class:`Settings` says how to simulate (cash, costs, fill rules), :class:`PreparedData`
holds the validated bars as the simulator reads them, and :class:`Run` is the raw
outcome of one simulation. :mod:`nbbacktest.engine.backtest` runs strategies with
them; :class:`~nbbacktest.engine.result.Result` and the parallel layer read them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from nbbacktest.engine.caches import IdentityCache
from nbbacktest.engine.costs import CommissionSpec, Costs
from nbbacktest.engine.data import OHLC, column_positions, float_values
from nbbacktest.engine.metrics import Market, Timeline, buy_and_hold_pct
from nbbacktest.engine.readonly import read_only_frame, read_only_index

if TYPE_CHECKING:
    from nbbacktest.engine.ledger import Ledger

__all__ = ["FILL_MODES", "PreparedData", "Run", "Settings"]

FILL_MODES = ("next_open", "close")


@dataclass(frozen=True)
class Settings:
    """Simulation settings shared by every run of a backtest or a sweep.

    Parameters
    ----------
    cash : float
        Starting equity.
    commission : float, (fixed, fraction) or callable
        What every fill costs: a fraction of traded notional (0.002 = 0.2 %), a
        pair ``(fixed per fill, fraction)``, or a callable ``cost(size, price)``
        returning a finite cost >= 0 (see :mod:`nbbacktest.engine.costs`).
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
    spread : float
        Bid-ask spread as a fraction of price, paid once per round trip: half at
        entry, half at exit, as a worse fill price (a buy at ``p * (1 + slippage +
        spread / 2)``, a sell at ``p * (1 - slippage - spread / 2)``).

    Examples
    --------
    >>> Settings(cash=5_000, commission=0.001).fill
    'next_open'
    """

    cash: float = 10_000.0
    commission: CommissionSpec = 0.0
    slippage: float = 0.0
    fill: str = "next_open"
    fractional: bool = True
    leverage: float | None = None
    close_at_end: bool = False
    spread: float = 0.0

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
        TypeError: run_many got an unknown option 'comission'; the simulation settings are cash, ...
        """
        known = [f.name for f in fields(cls)]
        unknown = [k for k in options if k not in known]
        if unknown:
            raise TypeError(f"{owner} got an unknown option {unknown[0]!r}; the simulation settings are "
                            f"{', '.join(known)}")
        return cls(**options)

    def __post_init__(self) -> None:
        _check_number("cash", self.cash, low=0.0, low_open=True)
        Costs.parse(self.commission)
        _check_number("slippage", self.slippage, low=0.0, high=1.0)
        _check_number("spread", self.spread, low=0.0, high=1.0)
        if self.fill_slippage >= 1.0:
            raise ValueError(
                f"slippage + spread / 2 must be below 1 (a sell would fill at a price <= 0), got "
                f"slippage={self.slippage!r} and spread={self.spread!r}"
            )
        if self.fill not in FILL_MODES:
            raise ValueError(f"fill must be one of {FILL_MODES}, got {self.fill!r}")
        for name in ("fractional", "close_at_end"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.leverage is not None:
            _check_number("leverage", self.leverage, low=1.0)
        object.__setattr__(self, "cash", float(self.cash))

    @property
    def costs(self) -> Costs:
        """The commission as a :class:`~nbbacktest.engine.costs.Costs`.

        Examples
        --------
        >>> Settings(commission=(1.0, 0.001)).costs.fixed
        1.0
        """
        return Costs.parse(self.commission)

    @property
    def fill_slippage(self) -> float:
        """How far a fill price moves against the trade: ``slippage + spread / 2``.

        Examples
        --------
        >>> Settings(slippage=0.001, spread=0.002).fill_slippage
        0.002
        """
        return self.slippage + self.spread / 2

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
        self.index = cast(pd.DatetimeIndex, read_only_index(frame.index))  # validated: datetimes
        self.open, self.high, self.low, self.close = open, high, low, close
        self._volume = volume
        self._shared: pd.DataFrame | None = None
        self._handed_out = False
        #: The frame's float64 values as one array, when validation made them (see run_frame).
        self._values: np.ndarray | None = None
        #: The first bar the run may trade on; earlier bars are history (see :meth:`trading_from`).
        self.start = 0
        self._window: PreparedData | None = None
        self._base: PreparedData | None = None  # the data whose window this one trades
        self._starts: dict[int, PreparedData] = {}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, values: np.ndarray | None = None) -> PreparedData:
        """Wrap an already validated OHLC frame (see ``validate_ohlcv``).

        ``values``, the frame's float64 block as validation found it, saves a look.
        """
        # One view of the float block; five column lookups cost 10x more.
        if values is None:
            values = float_values(frame, interleave=False)
        if values is not None:
            position = column_positions(frame.columns)
            columns = {name: values[:, i] for name, i in position.items()}
        else:
            columns = {name: frame[name].to_numpy() for name in (*OHLC, "Volume") if name in frame}
        prepared = cls(
            frame, columns["Open"], columns["High"], columns["Low"], columns["Close"],
            columns.get("Volume"),
        )
        prepared._values = values
        return prepared

    def __len__(self) -> int:
        return len(self.close)

    def trading_from(self, start: int) -> PreparedData:
        """This data with trading from bar ``start`` on: the bars before are warm-up history.

        The strategy still sees every bar (its indicators are defined when the window
        opens), but the simulator holds no position and takes no fill before bar
        ``start``, and equity, trades and stats cover :attr:`window` only. Built once
        per ``start`` and shared by every run of it.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> data = PreparedData.from_frame(nbb.load_sample("daily"))
        >>> late = data.trading_from(2000)
        >>> len(late), len(late.window), late.window.index[0] == data.index[2000]
        (2500, 500, True)
        """
        start = int(start)
        if not 0 <= start < len(self.close):
            raise ValueError(f"trading can start from bar 0 to {len(self.close) - 1}, got {start}")
        if self._base is not None:
            return self._base.trading_from(start)
        if start == 0:
            return self
        found = self._starts.get(start)
        if found is None:
            found = self._starts[start] = PreparedData(
                self.frame, self.open, self.high, self.low, self.close, self._volume)
            found.start, found._base = start, self
            tail = slice(start, None)
            found._window = PreparedData(
                self.frame.iloc[tail], self.open[tail], self.high[tail], self.low[tail],
                self.close[tail], None if self._volume is None else self._volume[tail])
        return found

    def release_derived(self) -> None:
        """Forget the arrays computed from the bars (buy & hold returns, a missing Volume's
        NaNs), of this data and its windows; they are computed again when next asked.

        What an engine does when a sweep ends: between sweeps it then keeps
        no array of the data's length beyond the shared bars themselves.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> data = PreparedData.from_frame(nbb.load_sample("daily"))
        >>> before = data.market
        >>> data.release_derived()
        >>> data.market is before, data.market.sum_sq == before.sum_sq
        (False, True)
        """
        for name in _DERIVED:
            self.__dict__.pop(name, None)
        for started in self._starts.values():
            started.release_derived()
        if self._window is not None:
            self._window.release_derived()

    @property
    def window(self) -> PreparedData:
        """The bars the run trades on (from :attr:`start`): what equity and stats cover."""
        return self if self._window is None else self._window

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
                return read_only_frame(self.frame, self._values, index=self.index)
            shared = self._shared = read_only_frame(self.frame, self._values, index=self.index)
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
    def market(self) -> Market:
        """The buy & hold returns the statistics' beta and alpha are measured against."""
        return Market(self.close)

    @cached_property
    def buy_hold_pct(self) -> float:
        """The buy & hold return of the data set, in percent."""
        return buy_and_hold_pct(self.close)


#: PreparedData's cached arrays of the data's length (see ``release_derived``).
_DERIVED = ("market", "volume")

# DatetimeIndex -> Timeline: backtest() on the same frame again builds no Timestamps.
_TIMELINES = IdentityCache(kept=64)


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
