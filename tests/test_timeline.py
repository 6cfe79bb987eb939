"""Tests for nbbacktest.engine.timeline: the bar times as the statistics read them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nbbacktest.engine import metrics
from nbbacktest.engine.timeline import Timeline, periods_per_year


def test_a_timeline_of_daily_bars() -> None:
    line = Timeline(pd.date_range("2024-01-01", periods=5, freq="D"))
    assert (line.n, line.bars_per_year, line.duration) == (5, 365.25, pd.Timedelta(days=4))
    assert line.sqrt_bars_per_year == math.sqrt(365.25)
    assert line.start == pd.Timestamp("2024-01-01") and line.end == pd.Timestamp("2024-01-05")


def test_units_and_forms_agree() -> None:
    index = pd.date_range("2024-01-01", periods=3, freq="h")
    lines = [Timeline(index.as_unit(u)) for u in ("s", "ms", "us", "ns")]
    lines.append(Timeline(index.as_unit("ns").asi8))
    assert {(x.first_ns, x.last_ns, x.bars_per_year) for x in lines} == {
        (lines[0].first_ns, lines[0].last_ns, 24 * 365.25)
    }


def test_one_bar_or_no_span_has_no_annualisation() -> None:
    assert math.isnan(Timeline(np.array([5], dtype=np.int64)).bars_per_year)
    assert math.isnan(periods_per_year(np.array([5, 5], dtype=np.int64)))


def test_bad_indexes_raise() -> None:
    with pytest.raises(ValueError, match="at least one bar time"):
        Timeline(np.array([], dtype="M8[ns]"))
    with pytest.raises(ValueError, match="must be datetime64 or int64 nanoseconds"):
        Timeline(np.array([1.0, 2.0]))


def test_metrics_re_exports_the_names() -> None:
    assert metrics.Timeline is Timeline and metrics.periods_per_year is periods_per_year
