"""Tests of nbbacktest.parallel.segment_layout: a frame's arrays and their layout, and the
frames rebuilt from them."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.errors import DataError
from nbbacktest.parallel.segment_layout import (
    Layout,
    build_frames,
    check_arrays,
    frames_from_arrays,
    layout_of,
)


def make_frame(n: int = 50, tz: str | None = None, unit: str = "ns") -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz=tz, unit=unit, name="Date")
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {"Open": close - 0.5, "High": close + 1.0, "Low": close - 1.0, "Close": close},
        index=index,
    )


def test_frames_from_arrays_is_zero_copy_and_checks_the_arrays() -> None:
    data = nbb.load_sample("daily")
    layout, arrays = layout_of(data)
    # layout_of copies nothing from a validated frame
    assert np.shares_memory(arrays[0], data.index.asi8)
    assert np.shares_memory(arrays[4], data["Close"].to_numpy())
    assert pickle.loads(pickle.dumps(layout)) == layout
    received = [a.copy() for a in arrays]
    got = frames_from_arrays(layout, received)
    assert np.shares_memory(got["Close"].to_numpy(), received[4])
    with pytest.raises(ValueError, match="6 arrays but 5"):
        frames_from_arrays(layout, received[:5])
    with pytest.raises(ValueError, match="array 2"):
        frames_from_arrays(layout, [*received[:2], received[2][:-1], *received[3:]])


def test_layout_arrays_are_aligned() -> None:
    layout, arrays = layout_of(make_frame(7).assign(Flag=True))
    offsets = [offset for offset, _, _ in layout.slots()]
    assert all(offset % 64 == 0 for offset in offsets)
    assert offsets == sorted(offsets) and len(offsets) == len(arrays)
    assert layout.nbytes % 64 == 0


def test_bad_input_is_refused() -> None:
    with pytest.raises(TypeError, match="DatetimeIndex"):
        layout_of(pd.DataFrame({"Close": [1.0]}))
    with pytest.raises(TypeError, match="mapping"):
        layout_of([1, 2])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"data\['X'\]"):
        layout_of({"X": np.ones(3)})  # type: ignore[dict-item]


def test_multiindex_columns_are_refused_with_the_fix() -> None:
    data = make_frame()
    data.columns = pd.MultiIndex.from_tuples([("A", c) for c in data.columns])
    with pytest.raises(DataError, match=r"MultiIndex columns.*'_'\.join"):
        layout_of(data)
    with pytest.raises(DataError, match=r"data\['X'\] has MultiIndex"):
        layout_of({"X": data})


def assert_same(got: object, expected: pd.DataFrame | dict[str, pd.DataFrame]) -> None:
    if isinstance(expected, pd.DataFrame):
        assert isinstance(got, pd.DataFrame)
        pd.testing.assert_frame_equal(got, expected)
        return
    assert isinstance(got, dict) and list(got) == list(expected)
    for symbol, frame in expected.items():
        pd.testing.assert_frame_equal(got[symbol], frame)


@pytest.mark.parametrize(
    "data",
    [
        make_frame(tz="America/New_York", unit="s"),
        make_frame().assign(
            Stamp=pd.date_range("2020-01-01", periods=50, unit="us"),
            Wait=pd.to_timedelta(np.arange(50), unit="s"),
            Note=[f"n{i}" for i in range(50)],
            Nullable=pd.array(range(50), dtype="Int64"),
        ),
        make_frame(0),
        {"B": make_frame(5), "A": make_frame(7, tz="UTC")},
        {},
    ],
    ids=["tz-aware-seconds", "extra-dtypes", "empty", "universe", "empty-universe"],
)
def test_frames_rebuilt_from_the_arrays_equal_the_data(data: object) -> None:
    layout, arrays = layout_of(data)  # type: ignore[arg-type]
    assert layout.universe == isinstance(data, dict)
    assert_same(frames_from_arrays(layout, [a.copy() for a in arrays]), data)  # type: ignore[arg-type]
    assert_same(build_frames(layout, arrays), data)  # type: ignore[arg-type]


def test_layout_describes_every_column_and_the_index() -> None:
    data = make_frame(10, tz="UTC").assign(Note="x")
    data.columns.name = "field"
    layout, arrays = layout_of(data)
    frame = layout.frames[0]
    assert isinstance(layout, Layout) and not layout.universe
    assert (frame.symbol, frame.nrows, frame.unit, frame.tz) == (None, 10, "ns", "UTC")
    assert frame.index_name == "Date"
    assert frame.freq == "h" and frame.columns_name == "field"
    assert [(c.name, c.mapped) for c in frame.columns] == [
        ("Open", True), ("High", True), ("Low", True), ("Close", True), ("Note", False)
    ]
    assert frame.pickled and frame.columns[-1].offset == -1 and frame.columns[-1].dtype == ""
    # the index and the four numeric columns, each in its own aligned slot
    slots = list(layout.slots())
    assert len(slots) == len(arrays) == 5
    assert [count for _, _, count in slots] == [10] * 5
    assert layout.nbytes >= slots[-1][0] + 10 * 8


def test_a_fixed_offset_time_zone_travels_as_itself() -> None:
    from datetime import timedelta, timezone

    tz = timezone(timedelta(hours=5, minutes=30))
    layout, _ = layout_of(make_frame(tz=tz))  # type: ignore[arg-type]
    assert layout.frames[0].tz is not None
    assert pickle.loads(pickle.dumps(layout)) == layout


def test_check_arrays_takes_datetime_columns_as_themselves_or_int64() -> None:
    data = make_frame(5).assign(Stamp=pd.date_range("2020-01-01", periods=5))
    layout, arrays = layout_of(data)
    assert arrays[-1].dtype == np.int64  # datetime64 travels as its int64 view
    as_datetimes = [*arrays[:-1], arrays[-1].view("M8[ns]")]
    checked = check_arrays(layout, as_datetimes)
    assert checked[-1].dtype == np.int64 and np.shares_memory(checked[-1], arrays[-1])
    with pytest.raises(ValueError, match=r"array 1 is float32.*expects float64"):
        check_arrays(layout, [arrays[0], arrays[1].astype(np.float32), *arrays[2:]])
    strided = np.repeat(arrays[1], 2)[::2]
    assert not strided.flags.c_contiguous
    assert check_arrays(layout, [arrays[0], strided, *arrays[2:]])[1].flags.c_contiguous
