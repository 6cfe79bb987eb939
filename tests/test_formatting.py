"""Values as people read them (engine/formatting.py): stats, params, durations, rates."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from nbbacktest.engine.formatting import (
    MISSING,
    format_duration,
    format_params,
    format_rate,
    format_seconds,
    format_value,
)


@pytest.mark.parametrize(("value", "name", "text"), [
    (12.3456, "return_pct", "12.35%"),
    (-20.5, "max_drawdown_pct", "-20.50%"),
    (1.23456, "sharpe", "1.23"),
    (10523.456, "equity_final", "10,523.46"),
    (14, "trades", "14"),
    (14.0, "trades", "14"),
    (float("nan"), "sharpe", "n/a"),
    (None, "error", "n/a"),
    (pd.NA, "engine", "n/a"),
    (float("inf"), "profit_factor", "inf"),
    (0.005, "stop", "0.005"),
    (10, "fast", "10"),
    ("ema", "kind", "ema"),
    (True, "flag", "True"),
    (pd.Timedelta(days=959), "max_drawdown_duration", "959 days"),
    (pd.Timedelta(days=1, hours=2), "duration", "1 day 2:00:00"),
    (pd.Timedelta(minutes=75), "duration", "1:15:00"),
    (pd.Timestamp("2024-01-05"), "start", "2024-01-05"),
    (pd.Timestamp("2024-01-05 09:30"), "start", "2024-01-05 09:30:00"),
    (112.4969, "entry_price", "112.50"),
    (-1188.5286, "pnl", "-1,188.53"),
    (88.71391051806476, "size", "88.7139"),
    (-100.0, "size", "-100"),
    (None, "tag", ""),
    ("breakout", "tag", "breakout"),
])
def test_format_value_reads_each_kind(value, name, text):
    assert format_value(value, name) == text


def test_small_formatters():
    assert format_duration(pd.Timedelta(seconds=-90)) == "-1:30"
    assert format_params({"fast": 5, "stop": 0.25}) == "fast=5, stop=0.25"
    assert [format_rate(r) for r in (12_345.6, 9.87, 0.0456, math.nan)] == [
        "12,346/s", "9.9/s", "0.046/s", "?/s"]


def test_seconds_read_as_a_clock_and_unknown_as_a_question_mark():
    assert [format_seconds(s) for s in (0, 59.6, 75.2, 3725, math.inf, math.nan)] == [
        "0:00", "1:00", "1:15", "1:02:05", "?", "?"]


def test_missing_durations_and_times_read_as_missing():
    assert format_duration(pd.NaT) == MISSING == format_value(pd.NaT, "start")
    assert format_duration(pd.Timedelta(days=2)) == "2 days"
    assert format_value(pd.Timestamp("2024-01-05", tz="UTC"), "start") == "2024-01-05"


def test_a_stat_unknown_to_the_labels_keeps_its_precision_as_a_param_does():
    assert format_value(0.123456789, "not_a_stat") == "0.123457"
    assert format_value(0.123456789, "sharpe") == "0.12"
