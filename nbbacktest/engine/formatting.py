"""Values as people read them: durations, stats, params, rates.

Pure functions of numpy and pandas values, shared by every layer that shows
numbers: the text progress line of a sweep, the tables and charts, the magics.

Examples
--------
>>> format_value(12.3456, "return_pct"), format_params({"fast": 10, "slow": 30})
('12.35%', 'fast=10, slow=30')
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from nbbacktest.engine.metrics import ALL_STAT_LABELS

__all__ = ["MISSING", "format_duration", "format_params", "format_rate", "format_seconds",
           "format_value"]

#: What a missing value (a failed run, an undefined ratio) reads as.
MISSING = "n/a"
_COUNT_STATS = frozenset({"trades"})
# Trade columns (Result.trades, Result.adjusted_orders): money reads like equity, two
# decimals; units keep up to four (a fractional position of 88.7139 shares).
_MONEY_COLUMNS = frozenset({"entry_price", "exit_price", "pnl", "price"})
_UNIT_COLUMNS = frozenset({"size", "requested", "filled"})
# A trade without a tag has nothing to show: blank, not "n/a" or "None".
_LABEL_COLUMNS = frozenset({"tag"})


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``'1:15'``; ``3725`` -> ``'1:02:05'``; NaN -> ``'?'``.

    Examples
    --------
    >>> format_seconds(75.2), format_seconds(3725), format_seconds(float("nan"))
    ('1:15', '1:02:05', '?')
    """
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_duration(value: pd.Timedelta | dt.timedelta | np.timedelta64) -> str:
    """A duration as days and a clock: ``'412 days'``, ``'3 days 4:00:00'``, ``'12:30'``.

    Examples
    --------
    >>> format_duration(pd.Timedelta(days=412)), format_duration(pd.Timedelta(hours=76))
    ('412 days', '3 days 4:00:00')
    >>> format_duration(pd.Timedelta(minutes=12, seconds=30))
    '12:30'
    """
    delta = pd.Timedelta(value)
    if pd.isna(delta):
        return MISSING
    sign, delta = ("-", -delta) if delta < pd.Timedelta(0) else ("", delta)
    days = delta.days
    clock = (delta - pd.Timedelta(days=days)).total_seconds()
    if not days:
        return sign + format_seconds(clock)
    text = f"{sign}{days:,} day{'s' if days != 1 else ''}"
    return f"{text} {format_seconds(clock)}" if clock >= 0.5 else text


def format_value(value: Any, name: str = "") -> str:
    """One value as text, by its kind and its column ``name``.

    Percent stats (``*_pct``) get two decimals and ``%``; other stats and money
    columns of a trade (prices, pnl) two decimals with thousands separators;
    trade sizes up to four decimals; counts and ints read as ints; params (any
    other name) keep their precision; durations read as days and a clock; dates
    drop a midnight time; missing values read ``n/a``, except a missing trade
    ``tag``, which is blank.

    Examples
    --------
    >>> format_value(12.3456, "return_pct"), format_value(1.23456, "sharpe")
    ('12.35%', '1.23')
    >>> format_value(10523.5, "equity_final"), format_value(14.0, "trades")
    ('10,523.50', '14')
    >>> format_value(0.005, "stop"), format_value(10, "fast"), format_value(float("nan"), "sharpe")
    ('0.005', '10', 'n/a')
    >>> format_value(pd.Timedelta(days=3, hours=4)), format_value(pd.Timestamp("2024-01-05"))
    ('3 days 4:00:00', '2024-01-05')
    >>> format_value(1188.5286, "pnl"), format_value(88.71391, "size"), format_value(None, "tag")
    ('1,188.53', '88.7139', '')
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return "" if name in _LABEL_COLUMNS else MISSING
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _format_float(float(value), name)
    if isinstance(value, (pd.Timedelta, dt.timedelta, np.timedelta64)):
        return format_duration(value)
    if isinstance(value, (pd.Timestamp, dt.datetime, np.datetime64)):
        stamp = pd.Timestamp(value)
        if pd.isna(stamp):
            return MISSING
        return stamp.strftime("%Y-%m-%d") if stamp == stamp.normalize() else str(stamp)
    return str(value)


def _format_float(value: float, name: str) -> str:
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if name in _COUNT_STATS and value.is_integer():
        return str(int(value))
    if name.endswith("_pct"):
        return f"{value:,.2f}%"
    if name in ALL_STAT_LABELS or name in _MONEY_COLUMNS:
        return f"{value:,.2f}"
    if name in _UNIT_COLUMNS:
        text = f"{value:,.4f}".rstrip("0").rstrip(".")
        return "0" if text == "-0" else text
    # A param: its own precision matters (a stop of 0.005 is not 0.01).
    return f"{value:.6g}"


def format_params(params: Mapping[str, Any]) -> str:
    """``{'fast': 10, 'slow': 30}`` -> ``'fast=10, slow=30'``.

    Examples
    --------
    >>> format_params({"fast": 10, "stop": 0.02, "kind": "ema"})
    'fast=10, stop=0.02, kind=ema'
    """
    return ", ".join(f"{name}={format_value(value, name)}" for name, value in params.items())


def format_rate(per_second: float) -> str:
    """Runs per second: ``'1,234/s'``, ``'3.5/s'``, ``'0.12/s'``, ``'?/s'``.

    Examples
    --------
    >>> format_rate(1234.4), format_rate(3.51), format_rate(0.1234), format_rate(float("nan"))
    ('1,234/s', '3.5/s', '0.12/s', '?/s')
    """
    if not math.isfinite(per_second):
        return "?/s"
    if per_second >= 10:
        return f"{per_second:,.0f}/s"
    return f"{per_second:.2g}/s"
