"""Tests of nbbacktest.engine.ledger: equity and position from the fill log, the trade book."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from nbbacktest.engine.ledger import TRADE_FIELDS, Ledger, TradeBook, trade_arrays


def ledger_of_two_fills() -> Ledger:
    # long 10 units from bar 1 (cash 0), flat from bar 3 (cash 120)
    return Ledger(100.0, 5, np.array([1, 3]), [10.0, 0.0], [0.0, 120.0],
                  np.array([20.0]), np.array([0.2]), [])


def test_each_fill_holds_until_the_next():
    ledger = ledger_of_two_fills()
    close = np.array([9.0, 10.0, 11.0, 12.0, 13.0])
    equity, held = ledger.mark_to_market(close)
    assert held.tolist() == [0.0, 10.0, 10.0, 0.0, 0.0]
    assert equity.tolist() == [100.0, 100.0, 110.0, 120.0, 120.0]
    assert ledger.bars_in_market() == 2
    assert ledger.held() is ledger.held()  # built once


def test_equity_into_gives_the_bits_of_mark_to_market_in_the_given_row():
    rng = np.random.default_rng(0)
    n = 50
    bars = np.sort(rng.choice(n, 8, replace=False))
    ledger = Ledger(1_000.0, n, bars, rng.normal(0, 50, 8).tolist(), rng.normal(1_000, 300, 8).tolist(),
                    np.empty(0), np.empty(0), [])
    close = rng.uniform(50, 150, n)
    row = np.full(n, np.nan)
    out = ledger.equity_into(close, row)
    assert out is row
    assert out.tobytes() == ledger.mark_to_market(close)[0].tobytes()
    scratch = np.empty((1, n + 5))
    assert ledger.mark_to_market(close, scratch[0])[0].tobytes() == out.tobytes()


def test_fills_sharing_a_bar_leave_the_last_state_at_its_close():
    # a reversal: flat at bar 2's first fill, short at its second
    ledger = Ledger(100.0, 4, np.array([1, 2, 2]), [10.0, 0.0, -5.0], [0.0, 110.0, 165.0],
                    np.array([10.0]), np.array([0.1]), [])
    assert ledger.held().tolist() == [0.0, 10.0, -5.0, -5.0]


def test_trade_book_works_out_records_and_exit_reasons_from_the_changes():
    prices = np.array([10.0, 11.0, 12.0, 9.0])
    # long 100 at change 0, flat at 1, short 50 at 2, flat at 3 (close_at_end's change)
    book = TradeBook(np.array([1, 2, 4, 6]), np.array([100.0, 0.0, -50.0, 0.0]), prices, prices, 0.0,
                     end_at=3)
    assert len(book) == 2
    assert [t[8] for t in book] == ["signal", "end"]
    assert book[1][:6] == (4, 6, 12.0, 9.0, -50.0, 150.0)
    pnl, returns = book.pnl_and_returns()
    assert pnl.tolist() == [100.0, 150.0] and returns.tolist() == [0.1, 0.25]
    assert book.columns().keys() == set(TRADE_FIELDS)
    with pytest.raises(TypeError):
        hash(book)


def test_an_unpickled_trade_book_keeps_its_columns():
    prices = np.array([10.0, 11.0])
    book = TradeBook(np.array([1, 2]), np.array([100.0, 0.0]), prices, prices, 0.001)
    clone = pickle.loads(pickle.dumps(book))
    assert clone == book and len(clone) == 1
    for field, column in trade_arrays(book).items():
        np.testing.assert_array_equal(trade_arrays(clone)[field], column)


def test_trade_arrays_of_a_list_keeps_labels_as_objects():
    records = [(1, 2, 10.0, 11.0, 5.0, 5.0, 0.1, "breakout", "take-profit")]
    arrays = trade_arrays(records)
    assert list(arrays) == list(TRADE_FIELDS)
    assert arrays["entry_bar"].dtype == np.int64 and arrays["pnl"].dtype == np.float64
    assert arrays["tag"].dtype == object and arrays["tag"][0] == "breakout"
    empty = trade_arrays([])
    assert all(len(column) == 0 for column in empty.values()) and empty["tag"].dtype == object

