"""What a finished run leaves: the :class:`Ledger` of states and the trade book.

The broker (:mod:`nbbacktest.engine.broker`) logs one state per fill; a
:class:`Ledger` marks equity and the position at every bar's close from those
states in a few vectorized passes. A vectorized run's trades wait in a
:class:`TradeBook` until asked for; :func:`trade_arrays` turns any trade book into
one numpy array per field of :data:`TRADE_FIELDS`, as :class:`~.result.Result` shows it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from nbbacktest.engine.curve_kernel import equity_of_segments

__all__ = ["NOTE_FIELDS", "TRADE_FIELDS", "Ledger", "TradeBook", "trade_arrays"]

#: Columns of a trade record, in order (see :func:`trade_arrays`).
TRADE_FIELDS = (
    "entry_bar", "exit_bar", "entry_price", "exit_price", "size", "pnl", "ret", "tag", "exit_reason",
)

#: Fields of an order note (see :attr:`.broker.Broker.notes`): the bar, the units asked
#: for, the units filled, the fill price (after slippage) they were sized at,
#: "reduced" or "rejected", why, and the order's tag.
NOTE_FIELDS = ("bar", "requested", "filled", "price", "action", "reason", "tag")


class Ledger:
    """What a finished run leaves: the state held from each fill on, and the trades.

    Fill ``k`` happened at bar ``bars[k]`` (non-decreasing) and left ``units[k]``
    held and ``cash[k]`` in cash, until the next fill. Equity and the position are
    built from these segments in a few vectorized passes, so a backtest's cost grows
    with the number of fills, not bars. Several fills may share a bar (a reversal);
    the last one holds at its close.

    ``trades`` is the trade book: records in :data:`TRADE_FIELDS` order (a list,
    or a :class:`TradeBook` that builds them on demand). ``notes`` are the orders
    the leverage limit reduced or rejected (:attr:`.broker.Broker.notes`; empty for a
    vectorized run, whose targets are checked up front).

    Examples
    --------
    >>> ledger = Ledger(100.0, 4, np.array([1, 3]), [10.0, 0.0], [0.0, 120.0],
    ...                 np.array([20.0]), np.array([0.2]), [])
    >>> equity, held = ledger.mark_to_market(np.array([10.0, 10.0, 11.0, 12.0]))
    >>> equity.tolist(), held.tolist(), ledger.bars_in_market()
    ([100.0, 100.0, 110.0, 120.0], [0.0, 10.0, 10.0, 0.0], 2)
    """

    __slots__ = ("initial_cash", "n", "bars", "units", "cash", "pnl", "returns", "trades",
                 "notes", "_lengths", "_held")

    def __init__(
        self,
        initial_cash: float,
        n: int,
        bars: np.ndarray,
        units: Sequence[float] | np.ndarray,
        cash: Sequence[float] | np.ndarray,
        pnl: np.ndarray,
        returns: np.ndarray,
        trades: Sequence[tuple],
    ) -> None:
        count = len(bars)
        self.initial_cash, self.n = initial_cash, n
        self.bars = bars
        # Segment 0 is the state before the first fill.
        self.units, self.cash = np.empty(count + 1), np.empty(count + 1)
        self.units[0], self.units[1:] = 0.0, units
        self.cash[0], self.cash[1:] = initial_cash, cash
        self.pnl, self.returns = pnl, returns
        self.trades = trades
        self.notes: list[tuple] = []
        bounds = np.empty(count + 2, dtype=np.intp)
        bounds[0], bounds[-1] = 0, n
        bounds[1:-1] = bars
        self._lengths = np.subtract(bounds[1:], bounds[:-1])
        self._held: np.ndarray | None = None

    def mark_to_market(
        self, close: np.ndarray, scratch: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Equity and units held at every bar's close, as new arrays.

        ``equity = cash + units * close`` per bar, the state of each bar's segment.
        ``scratch``, a float64 row of at least ``n`` values, takes the temporary.
        """
        held = self.held()
        equity = np.repeat(self.cash, self._lengths)
        equity += np.multiply(held, close, out=None if scratch is None else scratch[: self.n])
        return equity, held

    def equity_into(self, close: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Equity at every bar's close, written into ``out`` (a float64 row of ``n`` values).

        A sweep keeps no per-bar array of a run: its equity goes to scratch space
        reused by the next run, in one compiled pass that allocates nothing. Same
        bits as :meth:`mark_to_market` (``cash + units * close``, bar by bar).
        """
        equity_of_segments(self._lengths, self.units, self.cash, close, out)
        return out

    def held(self) -> np.ndarray:
        """Units held at every bar's close."""
        if self._held is None:
            self._held = np.repeat(self.units, self._lengths)
        return self._held

    def bars_in_market(self) -> int:
        """How many bars end with a position held."""
        return int(np.add.reduce(self._lengths[self.units != 0.0]))

def _closed_positions(
    units: np.ndarray, buy_prices: np.ndarray, sell_prices: np.ndarray, commission: float
) -> tuple[np.ndarray, ...]:
    """The trades of :func:`~.broker.follow_changes`: opening change, prices, size, P&L, return.

    ``units[k]`` is held after change ``k``. A position held after change ``j``
    opened there and closes at change ``j + 1`` (there are no resizes), so each
    field comes from a few vectorized operations: the same IEEE operations, in
    the same order, as :meth:`.broker.Broker.follow`'s per-fill arithmetic, hence the same bits.
    """
    # Changes after which a position is held and that are followed by its close.
    opened = units[:-1].nonzero()[0]
    closing = opened + 1
    size = units[opened]
    if buy_prices is sell_prices:
        entry, exit_ = buy_prices[opened], buy_prices[closing]
    else:
        long = size > 0
        entry = np.where(long, buy_prices[opened], sell_prices[opened])
        exit_ = np.where(long, sell_prices[closing], buy_prices[closing])
    magnitude = np.abs(size)
    entry_notional = magnitude * entry
    # pnl = units * (exit - entry) - entry cost - exit cost, costs |units| * price * commission
    pnl = size * (exit_ - entry)
    pnl -= entry_notional * commission
    pnl -= magnitude * exit_ * commission
    # return = pnl / (|units| * entry price)
    return opened, entry, exit_, size, pnl, pnl / entry_notional


# What a TradeBook is built from: bars, units held after each change, buy prices,
# sell prices, commission, and the change that is close_at_end's (-1: none).
_Changes = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, int]


class TradeBook(Sequence):
    """The closed trades of a vectorized run, worked out only when asked for.

    A sequence of trade records in :data:`TRADE_FIELDS` order, like
    :attr:`.broker.Broker.trades`, from :func:`_closed_positions`'s numpy columns; a
    sweep never reads them and :func:`trade_arrays` reads the columns directly. It is
    built from the changes of target (:func:`~.broker.follow_changes`): the bar of
    each, the units held after it, and the fill prices of buys and of sells.

    Examples
    --------
    >>> prices = np.array([10.0, 11.0])  # long 100 units at 10, flat at 11
    >>> book = TradeBook(np.array([1, 2]), np.array([100.0, 0.0]), prices, prices, 0.0)
    >>> len(book), book[0] == (1, 2, 10.0, 11.0, 100.0, 100.0, 0.1, None, "signal")
    (1, True)
    >>> trade_arrays(book)["pnl"]
    array([100.])
    """

    __slots__ = ("_source", "_closed", "_columns", "_records")

    def __init__(
        self,
        bars: np.ndarray,
        units: np.ndarray,
        buy_prices: np.ndarray,
        sell_prices: np.ndarray,
        commission: float,
        end_at: int = -1,
    ) -> None:
        # end_at: the change that is close_at_end's (-1: none), for the exit reasons.
        self._source: _Changes | None = (bars, units, buy_prices, sell_prices, commission, end_at)
        self._closed: tuple[np.ndarray, ...] | None = None
        self._columns: dict[str, np.ndarray] | None = None
        self._records: list[tuple] | None = None

    @classmethod
    def _from_columns(cls, columns: dict[str, np.ndarray]) -> TradeBook:
        book = cls.__new__(cls)
        book._source, book._closed, book._records = None, None, None
        book._columns = columns
        return book

    def _positions(self) -> tuple[np.ndarray, ...]:
        if self._closed is None:
            self._closed = _closed_positions(*self._changes()[1:5])
        return self._closed

    def _changes(self) -> _Changes:
        if self._source is None:
            raise RuntimeError("an unpickled TradeBook keeps its columns, not the changes of target")
        return self._source

    def pnl_and_returns(self) -> tuple[np.ndarray, np.ndarray]:
        """P&L and return of every trade, as numpy works them out."""
        closed = self._positions()
        return closed[4], closed[5]

    def columns(self) -> dict[str, np.ndarray]:
        """One array per field of :data:`TRADE_FIELDS` (a new dict; do not write the arrays)."""
        if self._columns is None:
            opened, entry, exit_, size, pnl, returns = self._positions()
            changes = self._changes()
            bars, end_at = changes[0], changes[5]
            reasons = np.full(len(opened), "signal", dtype=object)
            if end_at >= 0:
                reasons[opened + 1 == end_at] = "end"
            self._columns = {
                "entry_bar": bars[opened].astype(np.int64, copy=False),
                "exit_bar": bars[opened + 1].astype(np.int64, copy=False),
                "entry_price": entry, "exit_price": exit_, "size": size, "pnl": pnl,
                "ret": returns, "tag": np.full(len(opened), None, dtype=object),
                "exit_reason": reasons,
            }
        return dict(self._columns)

    def _list(self) -> list[tuple]:
        if self._records is None:
            columns = self.columns()
            self._records = list(zip(*(columns[field].tolist() for field in TRADE_FIELDS)))
        return self._records

    def __len__(self) -> int:
        if self._columns is not None:
            return len(self._columns["pnl"])
        return len(self._positions()[0])

    def __getitem__(self, i: Any) -> Any:
        return self._list()[i]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self._list())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (TradeBook, list, tuple)):
            return self._list() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._list())

    def __reduce__(self) -> tuple:
        return (TradeBook._from_columns, (self.columns(),))


def trade_arrays(trades: Sequence[tuple]) -> dict[str, np.ndarray]:
    """A trade book (``Broker.trades``) as one numpy array per field of :data:`TRADE_FIELDS`."""
    if isinstance(trades, TradeBook):
        return trades.columns()
    columns = list(zip(*trades)) if trades else [()] * len(TRADE_FIELDS)
    arrays = {}
    for field, column in zip(TRADE_FIELDS, columns):
        if field in ("tag", "exit_reason"):
            # np.array of strings would make a fixed-width str array: keep objects.
            text = np.empty(len(column), dtype=object)
            text[:] = column
            arrays[field] = text
        else:
            arrays[field] = np.array(column, dtype=np.int64 if field.endswith("_bar") else float)
    return arrays
