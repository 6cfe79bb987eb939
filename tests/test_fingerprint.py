"""Tests of nbbacktest.parallel.fingerprint: the content hash data is shared under."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd

import nbbacktest as nbb
from nbbacktest.parallel.fingerprint import fingerprint


def make_frame(n: int = 50, tz: str | None = None, unit: str = "ns") -> pd.DataFrame:
    index = pd.date_range("2024-01-01", periods=n, freq="h", tz=tz, unit=unit, name="Date")
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {"Open": close - 0.5, "High": close + 1.0, "Low": close - 1.0, "Close": close},
        index=index,
    )


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
        "from nbbacktest.parallel.fingerprint import fingerprint\n"
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
