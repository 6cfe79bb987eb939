"""Tests of nbbacktest.parallel.shared: market data shared once per host, attached zero-copy
from segments this process owns."""

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
from nbbacktest.parallel import segment_files, shared
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.segment_files import SEGMENT_PREFIX, segment_dir
from nbbacktest.parallel.segment_layout import Data, Layout, frames_from_arrays, layout_of
from nbbacktest.parallel.shared import Segment, attach, detach


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private segment directory, emptied of segments and mappings after."""
    monkeypatch.setenv(segment_files.SHM_DIR_ENV, str(tmp_path))
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


def round_trip(data: Data) -> Data:
    segment = Segment.create(data, fingerprint(data))
    assert not list(segment.path.parent.glob("*.tmp"))
    return attach(segment.path, segment.layout)


def assert_same(got: Data, expected: Data) -> None:
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


# ----------------------------------------------------------------------- owning


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


ATEXIT_SCRIPT = textwrap.dedent(
    """
    import os
    import nbbacktest as nbb
    from nbbacktest.parallel.fingerprint import fingerprint
    from nbbacktest.parallel.shared import Segment
    data = nbb.load_sample("daily")
    segment = Segment.create(data, fingerprint(data))
    print(segment.path, os.path.exists(segment.path), flush=True)
    """
)


def test_segments_are_removed_at_exit() -> None:
    # the real segment directory, as a user's kernel would use it
    env = {k: v for k, v in os.environ.items() if k != segment_files.SHM_DIR_ENV}
    out = subprocess.run(
        [sys.executable, "-c", ATEXIT_SCRIPT],
        capture_output=True, text=True, check=True, timeout=60, env=env,
    )
    path, existed = out.stdout.split()
    assert existed == "True"
    assert Path(path).parent == segment_dir()
    assert not Path(path).exists()
    assert not list(Path(path).parent.glob(Path(path).name + "*"))
