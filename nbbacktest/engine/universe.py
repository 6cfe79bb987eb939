"""A universe of instruments on one calendar: one aligned block of prices.

A :class:`Universe` holds every field of every symbol in one float64 array of shape
``(fields, bars, symbols)``: the union of the symbols' bar times, NaN where a
symbol has no bar (before its listing, after its delisting, or a day it did not
trade). A portfolio strategy reads it as aligned frames (``universe.close``,
time x symbol); a sweep shares the block once per host. It is also a read-only
mapping ``{symbol: DataFrame}`` of each symbol's own bars, so everything that
takes a universe of single instruments takes a :class:`Universe` too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from nbbacktest.engine.data import OHLC, is_universe, validate_data
from nbbacktest.errors import DataError, did_you_mean

__all__ = ["FIELDS", "Universe", "as_universe"]

#: The fields of a universe's block, in order (volume is NaN where the data had none).
FIELDS = ("open", "high", "low", "close", "volume")
_COLUMN = dict(zip(FIELDS, (*OHLC, "Volume")))


class Universe(Mapping[str, pd.DataFrame]):
    """Prices of many symbols aligned on one calendar.

    Parameters
    ----------
    block : numpy.ndarray
        float64 of shape ``(5, bars, symbols)``: open, high, low, close, volume;
        NaN where a symbol has no bar. Kept as given (read-only), never copied.
    index : pandas.DatetimeIndex
        The bar times, strictly increasing.
    symbols : sequence of str
        The symbols, in column order.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> universe = Universe.from_frames(nbb.load_sample("universe"))
    >>> universe.shape, list(universe.close.columns[:3])
    ((2500, 10), ['AAA', 'BBB', 'CCC'])
    >>> universe["AAA"].columns.tolist()
    ['Open', 'High', 'Low', 'Close', 'Volume']
    """

    __slots__ = ("block", "index", "symbols", "_frames", "_fields", "_listed")

    def __init__(self, block: np.ndarray, index: pd.DatetimeIndex, symbols: Sequence[str]) -> None:
        # C order always: a run's sums across symbols then take the same order, and give
        # the same bits, in every process (a selection of columns is another layout)
        block = np.ascontiguousarray(block, dtype=np.float64)
        symbols = list(symbols)
        if block.ndim != 3 or block.shape[0] != len(FIELDS):
            raise DataError(f"a universe block must have shape (5, bars, symbols), got {block.shape}")
        if block.shape[1] != len(index) or block.shape[2] != len(symbols):
            raise DataError(
                f"a universe block of shape {block.shape} does not match {len(index)} bar times"
                f" and {len(symbols)} symbols"
            )
        if block.flags.writeable:
            block = block.view()  # ours read-only; the caller's array keeps its own flags
            block.setflags(write=False)
        self.block = block
        self.index = pd.DatetimeIndex(index)
        self.symbols = pd.Index(symbols, dtype=object, name="symbol")
        self._frames: dict[str, pd.DataFrame] = {}
        self._fields: dict[str, pd.DataFrame] = {}
        self._listed: np.ndarray | None = None

    # ------------------------------------------------------------- building

    @classmethod
    def from_frames(cls, frames: Mapping[str, pd.DataFrame], *, name: str = "data") -> Universe:
        """Align a mapping ``{symbol: OHLC(V) DataFrame}`` on the union of its bar times.

        Each frame is validated as :func:`~nbbacktest.load_ohlcv` would; all must
        share one time zone (or none).

        Examples
        --------
        >>> import pandas as pd
        >>> a = pd.DataFrame({"Open": [1.0, 2.0], "High": [2.0, 3.0], "Low": [1.0, 2.0],
        ...                   "Close": [2.0, 3.0]}, index=pd.date_range("2024-01-01", periods=2))
        >>> u = Universe.from_frames({"A": a, "B": a.iloc[1:]})
        >>> u.close.to_numpy().tolist()
        [[2.0, nan], [3.0, 3.0]]
        """
        if isinstance(frames, Universe):
            return frames
        checked = validate_data(frames, name=name)
        if isinstance(checked, pd.DataFrame):
            raise DataError(f"{name} is one instrument; a universe needs a mapping {{symbol: DataFrame}}")
        zones = {str(getattr(frame.index, "tz", None)) for frame in checked.values()}
        if len(zones) > 1:
            raise DataError(f"{name} mixes time zones ({', '.join(sorted(zones))}); convert every"
                            " symbol to one, e.g. frame.tz_convert('UTC')")
        index = checked[next(iter(checked))].index
        for frame in checked.values():
            if not frame.index.equals(index):
                index = index.union(frame.index)
        block = np.full((len(FIELDS), len(index), len(checked)), np.nan)
        for j, frame in enumerate(checked.values()):
            rows = index.get_indexer(frame.index)
            for f, field in enumerate(FIELDS):
                column = _COLUMN[field]
                if column in frame:
                    block[f, rows, j] = frame[column].to_numpy(dtype=np.float64)
        return cls(block, pd.DatetimeIndex(index), list(checked))

    def select(self, symbols: Sequence[str]) -> Universe:
        """The universe of some of its symbols (bar times kept whole).

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> nbb_universe = Universe.from_frames(nbb.load_sample("universe"))
        >>> nbb_universe.select(["BBB", "AAA"]).symbols.tolist()
        ['BBB', 'AAA']
        """
        if isinstance(symbols, str):
            symbols = [symbols]
        positions = [self.position(symbol) for symbol in symbols]
        if not positions:
            raise DataError("symbols is empty; name at least one symbol of the universe")
        return Universe(self.block[:, :, positions], self.index, [str(s) for s in symbols])

    def position(self, symbol: str) -> int:
        """The column of ``symbol``; a DataError with a did-you-mean hint otherwise."""
        try:
            return int(cast(int, self.symbols.get_loc(symbol)))  # symbols are unique
        except KeyError:
            known = [str(s) for s in self.symbols]
            raise DataError(
                f"symbol {symbol!r} is not in the universe.{did_you_mean(str(symbol), known)}"
                f" ({len(known)} symbols: {', '.join(known[:8])}{', ...' if len(known) > 8 else ''})"
            ) from None

    # ------------------------------------------------------------- reading

    @property
    def shape(self) -> tuple[int, int]:
        """``(bars, symbols)``."""
        return self.block.shape[1], self.block.shape[2]

    @property
    def nbytes(self) -> int:
        """Size of the price block in bytes."""
        return int(self.block.nbytes)

    def field(self, name: str) -> pd.DataFrame:
        """One field as a read-only time x symbol frame over the block (no copy)."""
        frame = self._fields.get(name)
        if frame is None:
            if name not in FIELDS:
                raise AttributeError(f"a universe has no field {name!r}.{did_you_mean(name, FIELDS)}")
            frame = pd.DataFrame(self.block[FIELDS.index(name)], index=self.index,
                                 columns=self.symbols, copy=False)
            self._fields[name] = frame
        return frame

    @property
    def open(self) -> pd.DataFrame:
        """Opens, time x symbol, NaN where a symbol has no bar."""
        return self.field("open")

    @property
    def high(self) -> pd.DataFrame:
        """Highs, time x symbol."""
        return self.field("high")

    @property
    def low(self) -> pd.DataFrame:
        """Lows, time x symbol."""
        return self.field("low")

    @property
    def close(self) -> pd.DataFrame:
        """Closes, time x symbol."""
        return self.field("close")

    @property
    def volume(self) -> pd.DataFrame:
        """Volumes, time x symbol (NaN where the data had none)."""
        return self.field("volume")

    @property
    def returns(self) -> pd.DataFrame:
        """Close-to-close returns, time x symbol (NaN on a symbol's first bar and gaps)."""
        close = self.block[3]
        out = np.full_like(close, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(close[1:], close[:-1], out=out[1:])
        out[1:] -= 1.0
        return pd.DataFrame(out, index=self.index, columns=self.symbols, copy=False)

    @property
    def listed(self) -> np.ndarray:
        """bool ``(bars, symbols)``: where a symbol has a bar (it can trade there)."""
        if self._listed is None:
            listed = ~np.isnan(self.block[3])
            listed.setflags(write=False)
            self._listed = listed
        return self._listed

    def listing(self) -> pd.DataFrame:
        """Each symbol's first and last bar time, and its number of bars.

        Examples
        --------
        >>> import nbbacktest as nbb
        >>> Universe.from_frames(nbb.load_sample("universe")).listing()["bars"].min()
        np.int64(2500)
        """
        listed = self.listed
        has = listed.any(axis=0)
        first = np.where(has, listed.argmax(axis=0), 0)
        last = np.where(has, len(self.index) - 1 - listed[::-1].argmax(axis=0), 0)
        return pd.DataFrame({"first": self.index[first], "last": self.index[last],
                             "bars": listed.sum(axis=0)}, index=self.symbols)

    # ------------------------------------------------------------- mapping

    def __getitem__(self, symbol: str) -> pd.DataFrame:
        frame = self._frames.get(symbol)
        if frame is None:
            j = self.position(symbol)
            rows = self.listed[:, j]
            values = self.block[:, rows, j].T
            columns = [_COLUMN[f] for f in FIELDS]
            if np.isnan(values[:, 4]).all():
                values, columns = values[:, :4], columns[:4]
            frame = pd.DataFrame(values, index=self.index[rows], columns=columns)
            self._frames[symbol] = frame
        return frame

    def get(self, symbol: str, default: Any = None) -> Any:
        """``universe[symbol]``, or ``default`` for a symbol not in it (as a mapping's get)."""
        return self[symbol] if symbol in self.symbols else default

    def __iter__(self) -> Iterator[str]:
        return iter(self.symbols.tolist())

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, symbol: object) -> bool:
        return symbol in self.symbols

    def __repr__(self) -> str:
        bars, count = self.shape
        span = f"{self.index[0].date()} to {self.index[-1].date()}" if bars else "no bars"
        return f"<Universe {count} symbols x {bars} bars, {span}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Universe, (np.asarray(self.block), self.index, self.symbols.tolist()))


def as_universe(data: Any, name: str = "data") -> Universe:
    """A :class:`Universe` from one, or from a mapping ``{symbol: DataFrame}``.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> as_universe(nbb.load_sample("universe")).shape
    (2500, 10)
    """
    if isinstance(data, Universe):
        return data
    if is_universe(data):
        return Universe.from_frames(data, name=name)
    raise TypeError(
        f"{name} must be a universe: nbb.load_universe(...) or a mapping {{symbol: DataFrame}},"
        f" got {type(data).__name__}"
    )
