"""Tests of nbbacktest.engine.readonly: the read-only views a strategy reads its data through."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbbacktest.engine.readonly import read_only_frame, read_only_index


def ohlc(n: int = 4) -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=n, freq="D", name="Date")
    close = np.arange(1.0, n + 1.0)
    return pd.DataFrame({"Open": close, "High": close + 1, "Low": close - 0.5, "Close": close},
                        index=index)


def test_the_index_is_shared_read_only_and_built_once():
    frame = ohlc()
    shared = read_only_index(frame.index)
    assert shared is read_only_index(frame.index)
    assert shared.equals(frame.index) and shared.name == "Date" and shared.freq == frame.index.freq
    assert np.shares_memory(shared.asi8, frame.index.asi8)
    with pytest.raises(ValueError, match="read-only"):
        shared.asi8[0] = 0
    assert frame.index.asi8.flags.writeable  # the caller's index stays as it was


def test_other_indexes_come_back_as_they_are():
    index = pd.RangeIndex(3)
    assert read_only_index(index) is index


def test_a_float_frame_is_one_read_only_block_over_the_same_memory():
    frame = ohlc()
    frame.attrs["source"] = "test"
    shared = read_only_frame(frame)
    assert shared.equals(frame) and shared.attrs == {"source": "test"}
    assert np.shares_memory(shared["Close"].to_numpy(), frame["Close"].to_numpy())
    with pytest.raises(ValueError, match="read-only"):
        shared["Close"].to_numpy()[0] = 0.0
    shared["Extra"] = 1.0  # a column added to the view stays there
    assert "Extra" not in frame and frame["Close"].iloc[0] == 1.0


def test_mixed_columns_are_each_shared_read_only():
    frame = ohlc().assign(Count=np.arange(4), Stamp=pd.date_range("2020-01-01", periods=4))
    shared = read_only_frame(frame)
    assert shared.equals(frame) and list(shared.dtypes) == list(frame.dtypes)
    for name in ("Close", "Count"):
        with pytest.raises(ValueError, match="read-only"):
            shared[name].to_numpy()[0] = 0
    assert frame["Count"].iloc[0] == 0 and frame["Close"].iloc[0] == 1.0


def test_given_index_and_values_are_used():
    frame = ohlc()
    index = read_only_index(frame.index)
    shared = read_only_frame(frame, values=frame.to_numpy(), index=index)
    assert shared.index is index and shared.equals(frame)
