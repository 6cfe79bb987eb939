"""Tests of nbbacktest.engine.snapshots and of what it is for: a user's frame validated
once by ``backtest()``, and again whenever it changed, however it changed."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine import data as data_module
from nbbacktest.engine.data import validated_values
from nbbacktest.engine.examples import SmaCross
from nbbacktest.engine.snapshots import FrameSnapshot
from nbbacktest.errors import DataError


def user_frame(n: int = 300) -> pd.DataFrame:
    """The daily sample as users hold their own: lower-case names, a date column."""
    frame = nbb.load_sample("daily").iloc[:n].reset_index()
    frame.columns = [str(c).lower() for c in frame.columns]
    return frame


@pytest.fixture
def rebuilds(monkeypatch):
    """How many times validation rebuilt a frame (``_normalise`` ran)."""
    calls = []
    original = data_module._normalise

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(data_module, "_normalise", counted)
    return calls


def same_result(a: nbb.Result, b: nbb.Result) -> bool:
    return bool(a.stats.equals(b.stats) and a.equity.equals(b.equity) and a.trades.equals(b.trades))


def check_fresh(frame: pd.DataFrame) -> nbb.Result:
    """backtest() on ``frame`` equals one on a fresh copy of it (never remembered)."""
    result = nbb.backtest(SmaCross(5, 20), frame)
    assert same_result(result, nbb.backtest(SmaCross(5, 20), frame.copy()))
    return result


# ------------------------------------------------------------- FrameSnapshot


def test_snapshot_matches_the_unchanged_frame_nan_and_all():
    frame = user_frame(50).assign(note=np.nan, flag=True, n=np.arange(50, dtype=np.int32))
    snapshot = FrameSnapshot.of(frame)
    assert snapshot is not None and snapshot.matches(frame)
    assert snapshot.nbytes == 50 * (8 * 7 + 1 + 4)


@pytest.mark.parametrize("edit", [
    lambda f: f.__setitem__("close", f["close"] * 2),
    lambda f: f.iloc.__setitem__((5, 2), f.iloc[5, 2] + 1),
    lambda f: f.loc.__setitem__((7, "note"), 1.0),  # NaN -> 1.0 in an extra column
    lambda f: f.loc.__setitem__((7, "open"), -0.0 if f.loc[7, "open"] == 0.0 else f.loc[7, "open"] * 1.01),
    lambda f: f.__setitem__("extra", 1.0),
    lambda f: f.__delitem__("note"),
    lambda f: setattr(f, "columns", [*f.columns[:-1], "memo"]),
    lambda f: setattr(f, "index", f.index + 1),
    lambda f: f.loc.__setitem__((slice(None), "close"), np.sort(f["close"].to_numpy())),
    lambda f: f.__setitem__("date", f["date"] + pd.Timedelta("1h")),
    lambda f: f.__setitem__("volume", f["volume"].astype(np.int64)),  # the same numbers, another dtype
], ids=["column *= 2", "iloc", "nan to value", "loc", "column added", "column dropped",
        "column renamed", "index replaced", "values permuted", "dates moved", "dtype"])
def test_snapshot_sees_every_edit(edit):
    frame = user_frame(50).assign(note=np.nan)
    snapshot = FrameSnapshot.of(frame)
    edit(frame)
    assert not snapshot.matches(frame)


def test_snapshot_sees_writes_through_shared_numpy_memory():
    # copy=False shares the array: a write to it changes the frame under pandas' blocks
    values = user_frame(50)[["open", "high", "low", "close"]].to_numpy().copy()
    frame = pd.DataFrame(values, columns=["open", "high", "low", "close"], copy=False,
                         index=pd.date_range("2024-01-01", periods=50))
    snapshot = FrameSnapshot.of(frame)
    values[10, 3] *= 1.001
    assert frame.iloc[10, 3] == values[10, 3]  # pandas saw nothing: same blocks
    assert not snapshot.matches(frame)
    # a read-only view made writable again
    snapshot = FrameSnapshot.of(frame)
    view = frame["close"].to_numpy()
    view.flags.writeable = True
    view[11] *= 1.001
    assert not snapshot.matches(frame)
    # the index's own memory: a DatetimeIndex hands out its int64 array writable
    snapshot = FrameSnapshot.of(frame)
    frame.index.asi8[0] -= 1
    assert not snapshot.matches(frame)


def test_frames_that_cannot_be_compared_bit_for_bit_have_no_snapshot():
    frame = user_frame(20)
    assert FrameSnapshot.of(frame.assign(symbol=pd.array(["AAA"] * 20, dtype="string[python]"))) is None
    assert FrameSnapshot.of(frame.assign(note=pd.Series([{}] * 20, dtype=object))) is None
    assert FrameSnapshot.of(frame.assign(n=pd.array(range(20), dtype="Int64"))) is None
    assert FrameSnapshot.of(frame, max_bytes=100) is None
    with_attrs = frame.copy()
    with_attrs.attrs["source"] = "csv"  # metadata a strategy may read, changed in place
    assert FrameSnapshot.of(with_attrs) is None
    snapshot = FrameSnapshot.of(frame)
    frame.attrs["source"] = "csv"
    assert not snapshot.matches(frame)
    frame.attrs.clear()
    zoned = frame.assign(date=frame["date"].dt.tz_localize("UTC"))
    snapshot = FrameSnapshot.of(zoned)
    assert snapshot is not None and snapshot.matches(zoned)
    zoned["date"] = zoned["date"].dt.tz_convert("US/Eastern")  # same instants, another zone
    assert not snapshot.matches(zoned)


# ------------------------------------------------------------- backtest() remembers


def test_an_unchanged_frame_is_validated_once(rebuilds):
    frame = user_frame()
    first = nbb.backtest(SmaCross(5, 20), frame)
    for _ in range(3):
        assert same_result(nbb.backtest(SmaCross(5, 20), frame), first)
    assert len(rebuilds) == 1
    assert same_result(first, nbb.backtest(SmaCross(5, 20), nbb.load_sample("daily").iloc[:300]))


@pytest.mark.parametrize(("edit", "changes"), [
    (lambda f: f.loc.__setitem__((f.index[-1], "close"), f["low"].iloc[-1]), True),
    (lambda f: f.iloc.__setitem__((150, 4), f.iloc[150, 3]), True),  # close := low, mid-series
    (lambda f: f.__setitem__("close", np.minimum(f["close"], f["open"])), True),
    (lambda f: f.__setitem__("high", f["high"] * 2), False),  # SmaCross reads only the closes
    (lambda f: f.__setitem__("date", f["date"] + pd.Timedelta("1D")), True),
    (lambda f: setattr(f, "index", pd.DatetimeIndex(f.pop("date"))), False),  # same bars
], ids=["loc", "iloc", "column replaced", "high *= 2", "dates moved", "index set"])
def test_a_frame_edited_in_place_is_validated_again(rebuilds, edit, changes):
    frame = user_frame()
    before = nbb.backtest(SmaCross(5, 20), frame)
    edit(frame)
    after = check_fresh(frame)
    assert same_result(before, after) != changes
    assert len(rebuilds) == 3  # before, after the edit, and the fresh copy


def test_an_edit_that_breaks_the_data_raises_on_the_next_backtest():
    frame = user_frame()
    nbb.backtest(SmaCross(5, 20), frame)
    frame["close"] *= 2  # now above High
    with pytest.raises(DataError, match="outside \\[Low, High\\]"):
        nbb.backtest(SmaCross(5, 20), frame)
    frame["close"] /= 2
    check_fresh(frame)


def test_an_added_column_reaches_the_strategy():
    class Column(nbb.Strategy):
        def signals(self, data):
            return data["signal"] if "signal" in data else pd.Series(0.0, index=data.index)

    frame = user_frame()
    assert nbb.backtest(Column(), frame).stats["trades"] == 0
    frame["signal"] = np.where(np.arange(len(frame)) % 50 < 25, 1.0, 0.0)
    assert nbb.backtest(Column(), frame).stats["trades"] > 0
    frame.loc[:, "signal"] = 0.0  # in place, same dtype
    assert nbb.backtest(Column(), frame).stats["trades"] == 0


def test_a_write_through_shared_memory_is_seen():
    frame = user_frame()
    before = nbb.backtest(SmaCross(5, 20), frame)
    view = frame["close"].to_numpy()
    view.flags.writeable = True
    view[100:] = frame["low"].to_numpy()[100:]
    assert not same_result(before, check_fresh(frame))


def test_what_validation_hands_out_can_be_edited_without_reaching_the_memory():
    frame = user_frame()
    out, _ = validated_values(frame, remember=True)
    out.loc[out.index[5], "Close"] = -1.0
    out["Open"] = 0.0
    again, values = validated_values(frame, remember=True)
    assert again is not out and again["Close"].iloc[5] > 0 and again["Open"].gt(0).all()
    assert values is not None and not values.flags.writeable


def test_strings_pyarrow_holds_are_compared_by_identity():
    # pandas' default str dtype, as read_csv gives a date column: immutable arrow arrays
    frame = user_frame(20).assign(symbol="AAA")
    frame["date"] = frame["date"].dt.strftime("%Y-%m-%d")
    assert frame["date"].dtype == "str" and frame["date"].dtype.storage == "pyarrow"
    snapshot = FrameSnapshot.of(frame)
    assert snapshot is not None and snapshot.matches(frame)
    assert snapshot.nbytes == 20 * 8 * 5  # the strings are held, not copied
    frame.loc[3, "symbol"] = "AAA"  # the same value: a new arrow array all the same
    assert not snapshot.matches(frame)
    snapshot = FrameSnapshot.of(frame)
    frame.loc[19, "date"] = "2099-01-01"
    assert not snapshot.matches(frame)
    snapshot = FrameSnapshot.of(frame.set_index("date"))
    assert snapshot is not None


def test_a_csv_frame_with_string_dates_is_validated_once(rebuilds, tmp_path):
    path = tmp_path / "prices.csv"
    user_frame().to_csv(path, index=False)
    frame = pd.read_csv(path)  # dates as strings
    first = nbb.backtest(SmaCross(5, 20), frame)
    assert same_result(first, nbb.backtest(SmaCross(5, 20), frame))
    assert len(rebuilds) == 1
    frame.loc[frame.index[-1], "date"] = "2099-01-01"
    assert check_fresh(frame).equity.index[-1] == pd.Timestamp("2099-01-01")


def test_frames_that_cannot_be_remembered_are_validated_every_time(rebuilds):
    frame = user_frame().assign(symbol=pd.Series(["AAA"] * 300, dtype=object))
    first = nbb.backtest(SmaCross(5, 20), frame)
    assert same_result(first, nbb.backtest(SmaCross(5, 20), frame))
    assert len(rebuilds) == 2


def test_the_memory_does_not_keep_the_frame_alive():
    frame = user_frame()
    nbb.backtest(SmaCross(5, 20), frame)
    alive = weakref.ref(frame)
    del frame
    gc.collect()
    assert alive() is None


def test_canonical_frames_are_not_copied_into_the_memory(rebuilds):
    frame = nbb.load_sample("daily")
    nbb.backtest(SmaCross(5, 20), frame)
    nbb.backtest(SmaCross(5, 20), frame)
    assert rebuilds == []  # validated as they are, every time: nothing to remember
