"""Tests of nbbacktest.parallel.shared: market data shared once per host."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.errors import DataError
from nbbacktest.parallel import shared
from nbbacktest.parallel.shared import (
    SEGMENT_PREFIX,
    Layout,
    Segment,
    attach,
    detach,
    fingerprint,
    frames_from_arrays,
    layout_of,
    remove_stale_segments,
    segment_dir,
    write_segment,
)


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private segment directory, emptied of segments and mappings after."""
    monkeypatch.setenv(shared.SHM_DIR_ENV, str(tmp_path))
    yield tmp_path
    for path in list(shared._LIVE):
        if path.startswith(str(tmp_path)):
            shared._LIVE[path].unlink()
    for path in list(shared._MAPS):
        if path.startswith(str(tmp_path)):
            detach(path)


def make_frame(n: int = 50, tz: str | None = None, unit: str = "ns") -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz=tz, unit=unit, name="Date")
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {"Open": close - 0.5, "High": close + 1.0, "Low": close - 1.0, "Close": close},
        index=index,
    )


def round_trip(data: shared.Data) -> shared.Data:
    segment = Segment.create(data, fingerprint(data))
    assert not list(segment.path.parent.glob("*.tmp"))
    return attach(segment.path, segment.layout)


def assert_same(got: shared.Data, expected: shared.Data) -> None:
    if isinstance(expected, pd.DataFrame):
        assert isinstance(got, pd.DataFrame)
        pd.testing.assert_frame_equal(got, expected)
        return
    assert isinstance(got, dict)
    assert list(got) == list(expected)
    for symbol, frame in expected.items():
        pd.testing.assert_frame_equal(got[symbol], frame)


# ------------------------------------------------------------------ round trips


def test_daily_sample_round_trip(shm: Path) -> None:
    data = nbb.load_sample("daily")
    assert_same(round_trip(data), data)


def test_universe_round_trip(shm: Path) -> None:
    data = nbb.load_sample("universe")
    got = round_trip(data)
    assert_same(got, data)
    # arrays received over the network rebuild the same universe
    layout, arrays = layout_of(data)
    assert_same(frames_from_arrays(layout, [a.copy() for a in arrays]), data)


@pytest.mark.parametrize("unit", ["s", "us", "ns"])
@pytest.mark.parametrize(
    "tz", ["UTC", "America/New_York", timezone(timedelta(hours=5, minutes=30))]
)
def test_tz_aware_round_trip(shm: Path, tz: object, unit: str) -> None:
    data = make_frame(tz=tz, unit=unit)  # type: ignore[arg-type]
    got = round_trip(data)
    assert_same(got, data)
    assert got.index.freq == data.index.freq == pd.tseries.frequencies.to_offset("h")
    assert str(got.index.dtype) == str(data.index.dtype)


def test_extra_columns_of_any_dtype_round_trip(shm: Path) -> None:
    data = make_frame().assign(
        Signal=np.arange(50, dtype=np.int64),
        Small=np.arange(50, dtype=np.int8),
        Flag=np.arange(50) % 2 == 0,
        Half=np.ones(50, dtype=np.float32),
        Stamp=pd.date_range("2020-01-01", periods=50, unit="us"),
        Note=[f"n{i}" for i in range(50)],  # str dtype under pandas 3
        Mixed=pd.Series(["x", 1] * 25, dtype=object).to_numpy(),
        Nullable=pd.array(range(50), dtype="Int64"),
    )
    data.columns.name = "field"
    got = round_trip(data)
    assert_same(got, data)
    layout, _ = layout_of(data)
    pickled = [c.name for c in layout.frames[0].columns if not c.mapped]
    assert pickled == ["Note", "Mixed", "Nullable"]  # only what cannot be mapped


def test_odd_labels_round_trip(shm: Path) -> None:
    data = make_frame()
    data.index.name = None
    data.columns = [0, 1, 2, 3]
    assert_same(round_trip(data), data)
    dup = make_frame()
    dup.columns = ["Open", "High", "Open", "Close"]  # labels may repeat
    assert_same(round_trip(dup), dup)


def test_empty_frame_and_universe_round_trip(shm: Path) -> None:
    empty = make_frame(0)
    assert_same(round_trip(empty), empty)
    assert round_trip({}) == {}


def test_frames_from_arrays_is_zero_copy_and_checks_the_arrays(shm: Path) -> None:
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


def test_layout_arrays_are_aligned(shm: Path) -> None:
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


# -------------------------------------------------------------------- zero copy


def test_attach_is_zero_copy_and_read_only(shm: Path) -> None:
    data = nbb.load_sample("daily").assign(Flag=True)
    segment = Segment.create(data, fingerprint(data))
    first = attach(segment.path, segment.layout)
    second = attach(segment.path, segment.layout)
    assert isinstance(first, pd.DataFrame) and isinstance(second, pd.DataFrame)
    for column in first.columns:
        a, b = first[column].to_numpy(), second[column].to_numpy()
        assert np.shares_memory(a, b)
        assert not a.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            a[0] = a[1]
    assert np.shares_memory(first.index.asi8, second.index.asi8)
    with pytest.raises(ValueError, match="read-only"):
        first.iloc[0, 0] = 1.0
    # adding a column writes nothing into the segment
    first["Mid"] = (first["High"] + first["Low"]) / 2
    # detach drops the cached mapping; the frames keep theirs alive
    detach(segment.path)
    third = attach(segment.path, segment.layout)
    assert not np.shares_memory(third["Close"].to_numpy(), second["Close"].to_numpy())
    assert second["Close"].sum() == data["Close"].sum()


def test_attach_checks_the_file_size(shm: Path) -> None:
    small = make_frame(4)
    segment = Segment.create(small, fingerprint(small))
    big_layout, _ = layout_of(make_frame(400))
    with pytest.raises(DataError, match="was not written for this layout"):
        attach(segment.path, big_layout)
    with pytest.raises(FileNotFoundError):
        attach(shm / "missing", segment.layout)


PSS_SCRIPT = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    from nbbacktest.parallel.shared import attach

    def rollup():
        out = {}
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1])
        return out

    path, layout_file = sys.argv[1], sys.argv[2]
    with open(layout_file, "rb") as f:
        layout = pickle.load(f)
    before = rollup()
    frame = attach(path, layout)
    attached = rollup()
    total = float(frame["Close"].sum())
    summed = rollup()
    print(attached["Pss"] - before["Pss"], summed["Anonymous"] - before["Anonymous"],
          summed["Rss"] - before["Rss"], total)
    """
)


@pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(), reason="needs Linux /proc/self/smaps_rollup"
)
def test_attach_adds_no_private_memory(shm: Path) -> None:
    n = 5_000_000  # 5 columns x 40 MB: a 200 MB frame
    rng = np.random.default_rng(1)
    index = pd.date_range("2000-01-01", periods=n, freq="min", name="Date")
    data = pd.DataFrame(
        {c: rng.random(n) for c in ("Open", "High", "Low", "Close", "Volume")}, index=index
    )
    segment = Segment.create(data, fingerprint(data))
    layout_file = shm / "layout.pickle"
    layout_file.write_bytes(pickle.dumps(segment.layout))
    out = subprocess.run(
        [sys.executable, "-c", PSS_SCRIPT, str(segment.path), str(layout_file)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()
    pss_attach, anon_sum, rss_sum = (int(v) for v in out[:3])
    assert float(out[3]) == pytest.approx(float(data["Close"].sum()))
    assert pss_attach < 5 * 1024, f"attaching added {pss_attach} kB of Pss"
    # summing reads the column through the shared mapping: no private copy.
    # A copy would be anonymous memory; Private_Dirty cannot tell, since it
    # also counts tmpfs pages (and unwritten file pages) mapped by a single
    # process, which are the segment's own shared pages.
    assert anon_sum < 5 * 1024, f"summing a column copied {anon_sum} kB"
    assert rss_sum > 30 * 1024  # the 40 MB column was indeed read from the mapping


# ------------------------------------------------------------------ fingerprint


def test_fingerprint_is_stable() -> None:
    data = nbb.load_sample("universe")
    key = fingerprint(data)
    assert len(key) == 20 and int(key, 16) >= 0
    assert fingerprint(data) == key
    assert fingerprint({s: f.copy() for s, f in data.items()}) == key


def test_fingerprint_is_the_same_in_another_process() -> None:
    data = nbb.load_sample("daily").assign(Note="x")
    code = (
        "import nbbacktest as nbb\n"
        "from nbbacktest.parallel.shared import fingerprint\n"
        "print(fingerprint(nbb.load_sample('daily').assign(Note='x')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == fingerprint(data)


def test_fingerprint_sees_every_change() -> None:
    data = nbb.load_sample("daily")
    key = fingerprint(data)
    one_value = data.copy()
    one_value.iloc[1234, 3] += 1e-9
    assert fingerprint(one_value) != key
    swapped = data.copy()
    swapped.iloc[[10, 11], 3] = swapped.iloc[[11, 10], 3].to_numpy()
    assert fingerprint(swapped) != key
    assert fingerprint(data.rename(columns={"Close": "close"})) != key
    assert fingerprint(data[["High", "Open", "Low", "Close", "Volume"]]) != key
    assert fingerprint(data.astype({"Volume": np.float32})) != key
    assert fingerprint(data.rename_axis("Time")) != key
    assert fingerprint(data.set_axis(data.index.as_unit("us"))) != key
    shifted = data.set_axis(data.index + pd.Timedelta(1, "ns"))
    assert fingerprint(shifted) != key


def test_fingerprint_sees_tz_and_symbol_changes() -> None:
    frame = make_frame(tz="UTC")
    assert fingerprint(frame) != fingerprint(frame.tz_convert("America/New_York"))
    assert fingerprint(frame) != fingerprint(frame.tz_localize(None))
    universe = nbb.load_sample("universe")
    key = fingerprint(universe)
    renamed = {("ZZZ" if s == "AAA" else s): f for s, f in universe.items()}
    assert fingerprint(renamed) != key
    reordered = dict(reversed(list(universe.items())))
    assert fingerprint(reordered) != key
    assert fingerprint(universe["AAA"]) != fingerprint({"AAA": universe["AAA"]})


def test_fingerprint_of_a_large_frame_uses_every_chunk() -> None:
    # larger than the parallel threshold: the threaded path must agree
    n = 9_000_000
    data = pd.DataFrame(
        {"Close": np.arange(n, dtype=np.float64)},
        index=pd.date_range("2000-01-01", periods=n, freq="s"),
    )
    key = fingerprint(data)
    assert fingerprint(data.copy()) == key
    changed = data.copy()
    changed.iloc[n - 1, 0] = -1.0  # in the last chunk
    assert fingerprint(changed) != key


# ---------------------------------------------------------- writing and owning


def test_write_is_atomic(shm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = nbb.load_sample("daily")
    layout, arrays = layout_of(data)
    path = shm / "segment"
    write_segment(layout, arrays, path)
    assert path.stat().st_size == layout.nbytes
    assert sorted(p.name for p in shm.iterdir()) == ["segment"]
    write_segment(layout, arrays, path)  # replaces the file in one step
    assert sorted(p.name for p in shm.iterdir()) == ["segment"]

    calls = []

    def fail_midway(file: object, data: memoryview) -> None:
        calls.append(len(data))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        file.write(data)  # type: ignore[attr-defined]

    monkeypatch.setattr(shared, "_write_all", fail_midway)
    other = shm / "other"
    with pytest.raises(OSError, match="No space"):
        write_segment(layout, arrays, other)
    # neither a half-written segment nor its temporary file is left
    assert sorted(p.name for p in shm.iterdir()) == ["segment"]


def test_write_refuses_more_than_the_free_space(
    shm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, arrays = layout_of(make_frame())
    monkeypatch.setattr(shared.shutil, "disk_usage", lambda _: type("U", (), {"free": 10})())
    with pytest.raises(OSError, match="NBBACKTEST_SHM_DIR"):
        write_segment(layout, arrays, shm / "segment")
    assert not list(shm.iterdir())


def test_segment_create_names_the_file_after_pid_and_key(shm: Path) -> None:
    data = make_frame()
    key = fingerprint(data)
    segment = Segment.create(data, key)
    assert segment.path == shm / f"{SEGMENT_PREFIX}{os.getpid()}-{key}"
    assert segment.nbytes == segment.path.stat().st_size == segment.layout.nbytes
    assert isinstance(segment.layout, Layout) and segment.key == key
    assert Segment.create(data, key) is segment  # written once
    assert key in repr(segment) and "MiB" in repr(segment)
    with pytest.raises(ValueError, match="key"):
        Segment.create(data, "../escape")


def test_unlink_is_idempotent(shm: Path) -> None:
    data = make_frame()
    with Segment.create(data, fingerprint(data)) as segment:
        attach(segment.path, segment.layout)
        assert segment.path.exists()
    assert not segment.path.exists()
    assert str(segment.path) not in shared._MAPS
    segment.unlink()
    segment.unlink()
    assert not list(shm.iterdir())
    # a new segment under the same key is written again
    again = Segment.create(data, segment.key)
    assert again is not segment and again.path.exists()


def test_segment_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(shared.SHM_DIR_ENV, str(tmp_path))
    assert segment_dir() == tmp_path
    monkeypatch.delenv(shared.SHM_DIR_ENV)
    expected = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else None
    if expected is not None:
        assert segment_dir() == expected
    assert segment_dir().is_dir()


def test_remove_stale_segments(shm: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = shm / f"{SEGMENT_PREFIX}{child.pid}-abc"
    dead_tmp = shm / f"{SEGMENT_PREFIX}{child.pid}-abc.123-4.tmp"
    ours = shm / f"{SEGMENT_PREFIX}{os.getpid()}-abc"
    parent = shm / f"{SEGMENT_PREFIX}{os.getppid()}-abc"  # a live process
    unrelated = shm / "someone-else"
    for path in (dead, dead_tmp, ours, parent, unrelated):
        path.write_bytes(b"x")
    removed = remove_stale_segments(shm)
    assert sorted(removed) == sorted([dead, dead_tmp])
    assert sorted(p.name for p in shm.iterdir()) == sorted(
        p.name for p in (ours, parent, unrelated)
    )
    assert remove_stale_segments() == []  # the default directory is segment_dir()


ATEXIT_SCRIPT = textwrap.dedent(
    """
    import os
    import nbbacktest as nbb
    from nbbacktest.parallel.shared import Segment, fingerprint
    data = nbb.load_sample("daily")
    segment = Segment.create(data, fingerprint(data))
    print(segment.path, os.path.exists(segment.path), flush=True)
    """
)


def test_segments_are_removed_at_exit() -> None:
    # the real segment directory, as a user's kernel would use it
    env = {k: v for k, v in os.environ.items() if k != shared.SHM_DIR_ENV}
    out = subprocess.run(
        [sys.executable, "-c", ATEXIT_SCRIPT],
        capture_output=True, text=True, check=True, timeout=60, env=env,
    )
    path, existed = out.stdout.split()
    assert existed == "True"
    assert Path(path).parent == segment_dir()
    assert not Path(path).exists()
    assert not list(Path(path).parent.glob(Path(path).name + "*"))
