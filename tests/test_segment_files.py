"""Tests of nbbacktest.parallel.segment_files: the segment directory, atomic writes and
stale segments."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.parallel import segment_files
from nbbacktest.parallel.segment_files import (
    SEGMENT_PREFIX,
    remote_segment_name,
    remove_stale_segments,
    segment_dir,
    write_segment,
)
from nbbacktest.parallel.segment_layout import layout_of


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private segment directory."""
    monkeypatch.setenv(segment_files.SHM_DIR_ENV, str(tmp_path))
    yield tmp_path


def make_frame(n: int = 50, tz: str | None = None, unit: str = "ns") -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz=tz, unit=unit, name="Date")
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {"Open": close - 0.5, "High": close + 1.0, "Low": close - 1.0, "Close": close},
        index=index,
    )


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

    monkeypatch.setattr(segment_files, "_write_all", fail_midway)
    other = shm / "other"
    with pytest.raises(OSError, match="No space"):
        write_segment(layout, arrays, other)
    # neither a half-written segment nor its temporary file is left
    assert sorted(p.name for p in shm.iterdir()) == ["segment"]


def test_write_refuses_more_than_the_free_space(
    shm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, arrays = layout_of(make_frame())
    monkeypatch.setattr(segment_files.shutil, "disk_usage", lambda _: type("U", (), {"free": 10})())
    with pytest.raises(OSError, match="NBBACKTEST_SHM_DIR"):
        write_segment(layout, arrays, shm / "segment")
    assert not list(shm.iterdir())


def test_segment_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(segment_files.SHM_DIR_ENV, str(tmp_path))
    assert segment_dir() == tmp_path
    monkeypatch.delenv(segment_files.SHM_DIR_ENV)
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


def test_remote_segment_name_is_per_data_not_per_process(shm: Path) -> None:
    name = remote_segment_name("abc123")
    assert name == f"{SEGMENT_PREFIX}remote-abc123" and "/" not in name
    # no pid in it: stale-segment removal never takes another host's engine's file for a dead
    # process's
    (shm / name).write_bytes(b"x")
    assert remove_stale_segments(shm) == [] and (shm / name).exists()


def test_write_checks_the_arrays_against_the_layout(shm: Path) -> None:
    layout, arrays = layout_of(make_frame())
    with pytest.raises(ValueError, match="describes 5 arrays but 4"):
        write_segment(layout, arrays[:4], shm / "segment")
    assert not list(shm.iterdir())


def test_written_bytes_are_the_arrays_at_their_offsets(shm: Path) -> None:
    data = make_frame(7).assign(Flag=True)
    layout, arrays = layout_of(data)
    path = shm / "segment"
    write_segment(layout, arrays, str(path))  # a str path works too
    raw = path.read_bytes()
    assert len(raw) == layout.nbytes
    for (offset, dtype, count), array in zip(layout.slots(), arrays):
        stored = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
        np.testing.assert_array_equal(stored, array)
