"""Tests of nbbacktest.engine.signals: a vectorized strategy's target exposures."""

from __future__ import annotations

import timeit

import numpy as np
import pandas as pd
import pytest

from nbbacktest.engine.signals import signal_exposures, validate_signals
from nbbacktest.errors import DataError, ParamError


def make_frame(n: int = 10, start: str = "2024-01-01", freq: str = "D") -> pd.DataFrame:
    index = pd.date_range(start, periods=n, freq=freq, name="Date")
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "Open": close - 0.5,
            "High": close + 1.0,
            "Low": close - 1.0,
            "Close": close,
            "Volume": np.full(n, 1000.0),
        },
        index=index,
    )


@pytest.fixture
def frame() -> pd.DataFrame:
    return make_frame()



def test_signals_series_with_the_same_index(frame: pd.DataFrame) -> None:
    signals = (frame["Close"] > 104).astype(float)
    out = validate_signals(signals, frame)
    assert out.dtype == np.float64 and out.flags.writeable
    np.testing.assert_array_equal(out, signals.to_numpy())
    # an equal index that is another object is accepted too
    other = pd.Series(signals.to_numpy(), index=frame.index.copy())
    np.testing.assert_array_equal(validate_signals(other, frame), out)


def test_signals_of_bools_ints_and_one_column_frames(frame: pd.DataFrame) -> None:
    n = len(frame)
    bools = frame["Close"] > 104
    np.testing.assert_array_equal(validate_signals(bools, frame), bools.to_numpy(dtype=float))
    ints = np.tile([1, 0, -1], n)[:n]
    np.testing.assert_array_equal(validate_signals(ints, frame), ints.astype(float))
    np.testing.assert_array_equal(validate_signals(list(ints), frame), ints.astype(float))
    column = bools.to_frame("x")
    np.testing.assert_array_equal(validate_signals(column, frame), bools.to_numpy(dtype=float))
    with pytest.raises(DataError, match=r"DataFrame with 2 columns"):
        validate_signals(column.assign(y=1), frame)


def test_signals_with_another_index(frame: pd.DataFrame) -> None:
    shifted = pd.Series(1.0, index=frame.index.shift(1))
    with pytest.raises(DataError, match=r"index differs from the data's index, first at position 0.*reindex"):
        validate_signals(shifted, frame)
    changed = pd.Series(1.0, index=frame.index.delete(5).append(pd.DatetimeIndex(["2030-01-01"])))
    with pytest.raises(DataError, match=r"first at position 5: Timestamp\('2024-01-07"):
        validate_signals(changed, frame)
    short = pd.Series(1.0, index=frame.index[:-2])
    with pytest.raises(DataError, match=r"signals has 8 rows but the data has 10 bars \(length mismatch\)"):
        validate_signals(short, frame)


def test_signals_of_the_wrong_length(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"signals has 3 values but the data has 10 bars \(length mismatch\)"):
        validate_signals(np.ones(3), frame)
    with pytest.raises(DataError, match=r"must be 1-D.*shape \(10, 2\)"):
        validate_signals(np.ones((10, 2)), frame)


def test_nan_signals_mean_flat(frame: pd.DataFrame) -> None:
    values = np.ones(len(frame))
    values[:3] = np.nan
    out = validate_signals(values, frame)
    assert np.isnan(values[:3]).all()  # the caller's array is untouched
    np.testing.assert_array_equal(out, np.r_[0.0, 0.0, 0.0, np.ones(7)])
    series = pd.Series([True, None] * 5, index=frame.index)
    np.testing.assert_array_equal(validate_signals(series, frame), [1.0, 0.0] * 5)


def test_infinite_signals_are_an_error(frame: pd.DataFrame) -> None:
    values = np.zeros(len(frame))
    values[4] = -np.inf
    with pytest.raises(DataError, match=r"1 infinite value\(s\), first -inf at 2024-01-05 \(position 4\)"):
        validate_signals(values, frame)


def test_signals_beyond_the_leverage_limit(frame: pd.DataFrame) -> None:
    values = np.zeros(len(frame))
    values[2], values[6] = 1.5, -2.5
    with pytest.raises(DataError, match=r"2 value\(s\) beyond 1 .*first 1\.5 at 2024-01-03"
                                        r".*pass leverage=2\.5 to allow it"):
        validate_signals(values, frame)
    with pytest.raises(DataError, match=r"beyond the leverage limit of 2, "
                                        r"first -2\.5 at 2024-01-07.*leverage=2\.5"):
        validate_signals(values, frame, leverage=2)
    np.testing.assert_array_equal(validate_signals(values, frame, leverage=2.5), values)
    # leverage below 1 does not shrink the unlevered limit
    np.testing.assert_array_equal(validate_signals(np.ones(10), frame, leverage=0.5), np.ones(10))


def test_signals_a_rounding_error_above_the_limit_are_clipped(frame: pd.DataFrame) -> None:
    values = np.full(len(frame), 0.1 * 3 / 0.3 + 1e-15)
    np.testing.assert_array_equal(validate_signals(values, frame), np.ones(10))


def test_bad_leverage(frame: pd.DataFrame) -> None:
    with pytest.raises(ParamError, match=r"leverage must be a finite number > 0, got -1"):
        validate_signals(np.zeros(10), frame, leverage=-1)
    with pytest.raises(ParamError, match=r"leverage must be a number"):
        validate_signals(np.zeros(10), frame, leverage="2")  # type: ignore[arg-type]


def test_non_numeric_signals(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"signals must hold numbers or booleans.*e\.g\. 'buy'"):
        validate_signals(pd.Series("buy", index=frame.index), frame)
    with pytest.raises(DataError, match=r"must hold numbers or booleans"):
        validate_signals(["buy"] * len(frame), frame)
    with pytest.raises(TypeError, match=r"signals must be a pandas Series.*got float"):
        validate_signals(1.0, frame)  # type: ignore[arg-type]


def _best_us(call: object, number: int = 2000) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6  # type: ignore[arg-type]


def test_signal_validation_is_cheap() -> None:
    # a generous multiple of the measured ~6 us, to catch an accidental copy or
    # per-column pandas access, not CPU noise
    frame = make_frame(2500, start="2014-01-02", freq="B")
    signals = (frame["Close"] > frame["Close"].shift()).astype(float)
    assert _best_us(lambda: validate_signals(signals, frame)) < 60


def test_signal_exposures_reads_clean_signals_without_a_copy(frame: pd.DataFrame) -> None:
    signals = pd.Series(np.linspace(-1.0, 1.0, len(frame)), index=frame.index)
    values = signal_exposures(signals, frame.index)
    assert np.shares_memory(values, signals.to_numpy())
    np.testing.assert_array_equal(values, signals.to_numpy())
    raw = signals.to_numpy().copy()
    raw[0] = np.nan
    fixed = signal_exposures(raw, frame.index)
    assert not np.shares_memory(fixed, raw) and fixed[0] == 0.0 and np.isnan(raw[0])
    # validate_signals hands back an array of its own even then
    assert not np.shares_memory(validate_signals(signals, frame), signals.to_numpy())
