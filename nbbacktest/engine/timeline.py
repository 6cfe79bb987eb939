"""The bar times as the statistics need them: :class:`Timeline` and the bars per year.

What depends only on a data set's bar times (first and last time, years spanned,
bars per year, the start/end Timestamps) is worked out once per data set;
:mod:`nbbacktest.engine.metrics` re-exports both names.

Bar times are int64 nanoseconds. pandas 3 often stores a DatetimeIndex in
microseconds, so pass ``index.as_unit("ns").asi8`` (or the DatetimeIndex itself),
never a bare ``index.asi8``.
"""

from __future__ import annotations

import math
from datetime import tzinfo

import numpy as np
import pandas as pd

__all__ = ["Timeline", "periods_per_year"]

_NAN = math.nan
# A Julian year, so that hourly 24/7 data gives exactly 24 * 365.25 = 8766 bars/year.
_NS_PER_YEAR = 365.25 * 86_400 * 1_000_000_000
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _bar_times(index: object) -> tuple[np.ndarray, int, tzinfo | None]:
    """Bar times as int64 in their own unit, the nanoseconds per unit, and the tz.

    pandas 3 often stores microseconds. Keeping the stored unit and scaling only the
    few times the statistics read saves converting the whole index on every run.
    """
    if isinstance(index, pd.DatetimeIndex):
        per_unit = _NS_PER_UNIT.get(index.unit)
        if per_unit is None:
            return index.as_unit("ns").asi8, 1, index.tz
        return index.asi8, per_unit, index.tz
    arr = np.asarray(index)
    kind = arr.dtype.kind
    if kind == "M":
        unit, count = np.datetime_data(arr.dtype)
        per_unit = _NS_PER_UNIT.get(unit)
        if per_unit is None or count != 1:
            return arr.astype("M8[ns]").view(np.int64), 1, None
        return arr.view(np.int64), per_unit, None
    if kind in "iu":
        return arr.astype(np.int64, copy=False), 1, None
    raise ValueError(
        f"`index` must be datetime64 or int64 nanoseconds, got dtype {arr.dtype}; "
        "pass `df.index.as_unit('ns').asi8` or `df.index.values`."
    )


class Timeline:
    """What the statistics need of a data set's bar times, worked out once.

    Every backtest on the same bars shares the first and last time, the years
    spanned, the bars per year and the start/end Timestamps, so a sweep builds
    one Timeline per data set instead of one per run (see :func:`summarize`).

    Parameters
    ----------
    index : pandas.DatetimeIndex or numpy.ndarray
        Bar times: a DatetimeIndex, ``datetime64`` values or int64 nanoseconds,
        increasing, at least one.
    tz : str or tzinfo, optional
        Time zone of ``start`` and ``end``; by default the DatetimeIndex's own.

    Examples
    --------
    >>> line = Timeline(pd.date_range("2024-01-01", periods=3, freq="D"))
    >>> line.n, line.duration, line.bars_per_year
    (3, Timedelta('2 days 00:00:00'), 365.25)
    """

    __slots__ = (
        "times", "ns_per_unit", "n", "first_ns", "last_ns", "span_ns", "years",
        "bars_per_year", "sqrt_bars_per_year", "start", "end", "duration",
    )

    def __init__(self, index: object, tz: str | tzinfo | None = None) -> None:
        times, per_unit, index_tz = _bar_times(index)
        if times.ndim != 1 or times.shape[0] == 0:
            raise ValueError(f"`index` must hold at least one bar time, got shape {times.shape}.")
        first_ns, last_ns = int(times[0]) * per_unit, int(times[-1]) * per_unit
        if not (_INT64_MIN <= first_ns <= _INT64_MAX and _INT64_MIN <= last_ns <= _INT64_MAX):
            raise pd.errors.OutOfBoundsDatetime(
                "`index` holds times that nanoseconds cannot express (years 1677 to 2262)"
            )
        n = times.shape[0]
        span_ns = last_ns - first_ns
        # bpy = (n - 1) bars / years spanned
        bpy = (n - 1) * _NS_PER_YEAR / span_ns if n > 1 and span_ns > 0 else _NAN
        if tz is None:
            tz = index_tz
        self.times, self.ns_per_unit, self.n = times, per_unit, n
        self.first_ns, self.last_ns, self.span_ns = first_ns, last_ns, span_ns
        self.years = span_ns / _NS_PER_YEAR
        self.bars_per_year = bpy
        self.sqrt_bars_per_year = math.sqrt(bpy) if bpy == bpy else _NAN
        self.start = pd.Timestamp(first_ns, tz=tz)
        self.end = pd.Timestamp(last_ns, tz=tz)
        self.duration = pd.Timedelta(span_ns)  # end - start


def periods_per_year(index_ns: np.ndarray) -> float:
    """Bars per year of a time index: ``(n - 1) / years spanned``.

    Parameters
    ----------
    index_ns : numpy.ndarray
        Bar times as int64 nanoseconds or ``datetime64``, increasing.

    Returns
    -------
    float
        ``(n - 1) / ((index[-1] - index[0]) / 365.25 days)``; NaN when there are
        fewer than two bars or they span no time.

    Examples
    --------
    >>> idx = pd.date_range("2024-01-01", periods=24 * 365 + 1, freq="h")
    >>> round(periods_per_year(idx.as_unit("ns").asi8), 2)
    8766.0
    """
    times, per_unit, _ = _bar_times(index_ns)
    n = times.shape[0]
    if n < 2:
        return _NAN
    span = (int(times[-1]) - int(times[0])) * per_unit
    if span <= 0:
        return _NAN
    # (n - 1) intervals over span / (365.25 d) years
    return (n - 1) * _NS_PER_YEAR / span
