"""Shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def long_series(n: int, seed: int = 1) -> pd.DataFrame:
    """``n`` hourly OHLC bars of a random walk, valid for validation."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.002, n))
    index = pd.date_range("2000-01-01", periods=n, freq="h")
    return pd.DataFrame(
        {"Open": open_, "High": np.maximum(open_, close) * 1.002,
         "Low": np.minimum(open_, close) * 0.998, "Close": close},
        index=index,
    )
