"""Check a vectorized strategy's signals: one target exposure per bar of its data.

Signals come back as float64 exposures, NaN replaced by 0 (flat), checked
against the data's bar times and the leverage limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from nbbacktest.engine.data import format_timestamp
from nbbacktest.errors import DataError, ParamError

__all__ = ["signal_exposures", "validate_signals"]

_FLOAT = np.dtype(np.float64)
# signals a hair above the limit come from float arithmetic, not intent
_SIGNAL_TOLERANCE = 1e-9


def validate_signals(
    signals: pd.Series | pd.DataFrame | np.ndarray | Sequence[float],
    data: pd.DataFrame,
    *,
    leverage: float | None = None,
    name: str = "signals",
) -> np.ndarray:
    """Check a strategy's target exposures against its data.

    Parameters
    ----------
    signals : pandas.Series, pandas.DataFrame, numpy.ndarray or list
        One target exposure per bar: a Series on ``data``'s index, a
        one-column DataFrame, or a 1-D array or list of ``len(data)`` values.
        bool, int and float values are accepted; NaN means flat.
    data : pandas.DataFrame
        The validated market data the signals were computed from.
    leverage : float, optional
        The largest absolute exposure allowed; the limit is
        ``max(1, leverage)``.
    name : str, default "signals"
        How error messages call the signals.

    Returns
    -------
    numpy.ndarray
        A new float64 array of ``len(data)`` exposures, NaN replaced by 0.

    Raises
    ------
    DataError
        The index or length does not match ``data``, a value is infinite,
        not numeric, or beyond the leverage limit.
    TypeError
        ``signals`` is none of the accepted types.

    Examples
    --------
    >>> import pandas as pd
    >>> idx = pd.date_range("2024-01-01", periods=3)
    >>> data = pd.DataFrame({"Open": [1.0] * 3, "High": [1.0] * 3,
    ...                      "Low": [1.0] * 3, "Close": [1.0] * 3}, index=idx)
    >>> validate_signals(pd.Series([True, False, None], index=idx), data)
    array([1., 0., 0.])
    >>> validate_signals([0.5, 2.0, -1.0], data, leverage=2)
    array([ 0.5,  2. , -1. ])
    """
    values = signal_exposures(signals, data.index, leverage=leverage, name=name)
    return np.array(values, dtype=np.float64)  # ours to own, never a view


def signal_exposures(
    signals: pd.Series | pd.DataFrame | np.ndarray | Sequence[float],
    index: pd.Index,
    *,
    leverage: float | None = None,
    name: str = "signals",
) -> np.ndarray:
    """:func:`validate_signals` for the simulator: the same checks, maybe no copy.

    Returns the signals' own float64 values when they need no fixing (a view of
    the Series or the array itself): the caller only reads them. Otherwise a new
    array, NaN replaced by 0 and a rounding error above the limit clipped.

    Examples
    --------
    >>> import pandas as pd
    >>> idx = pd.date_range("2024-01-01", periods=3)
    >>> signal_exposures(pd.Series([1.0, float("nan"), 0.5], index=idx), idx)
    array([1. , 0. , 0.5])
    """
    limit = _leverage_limit(leverage)
    if isinstance(signals, pd.DataFrame):
        if signals.shape[1] != 1:
            raise DataError(
                f"{name} is a DataFrame with {signals.shape[1]} columns; return "
                "one column (or a Series) of target exposures"
            )
        signals = signals.iloc[:, 0]
    if isinstance(signals, pd.Series):
        if signals.index is not index and not signals.index.equals(index):
            _index_mismatch(signals.index, index, name)
        values = _series_floats(signals, name)
    elif isinstance(signals, (np.ndarray, list, tuple)):
        values = _array_floats(signals, name)
        if len(values) != len(index):
            raise DataError(
                f"{name} has {len(values)} values but the data has {len(index)} "
                "bars (length mismatch); return one target exposure per bar"
            )
    else:
        raise TypeError(
            f"{name} must be a pandas Series, a one-column DataFrame, a 1-D "
            f"numpy array or a list; got {type(signals).__name__}"
        )
    # Two reductions prove no NaN (it propagates and fails both comparisons), no
    # inf and nothing beyond the limit, without a temporary array.
    if len(values) and (
        float(np.maximum.reduce(values)) <= limit and float(np.minimum.reduce(values)) >= -limit
    ):
        return values
    return _fix_signals(values, limit, leverage, index, name)


def _leverage_limit(leverage: float | None) -> float:
    if leverage is None:
        return 1.0
    if isinstance(leverage, bool) or not isinstance(leverage, (int, float, np.number)):
        raise ParamError(f"leverage must be a number > 0, got {leverage!r}")
    if not (np.isfinite(leverage) and leverage > 0):
        raise ParamError(f"leverage must be a finite number > 0, got {leverage!r}")
    return max(1.0, float(leverage))


def _series_floats(signals: pd.Series, name: str) -> np.ndarray:
    dtype = signals.dtype
    if dtype == _FLOAT:
        return signals.to_numpy()
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":
        return signals.to_numpy(dtype=np.float64)
    if dtype.kind in "mMcSUV":
        _not_numeric(name, dtype, signals.dropna())
    try:
        # object, nullable and categorical dtypes: pd.NA / None become NaN
        return signals.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        _not_numeric(name, dtype, signals.dropna())
    raise AssertionError("unreachable")


def _array_floats(signals: np.ndarray | list[Any] | tuple[Any, ...], name: str) -> np.ndarray:
    array = np.asarray(signals)
    if array.ndim != 1:
        raise DataError(
            f"{name} must be 1-D (one target exposure per bar), got shape "
            f"{array.shape}"
        )
    if array.dtype.kind in "biuf":
        return array.astype(np.float64, copy=False)
    if array.dtype.kind == "O":
        try:
            return np.array([np.nan if v is None else v for v in array], dtype=np.float64)
        except (TypeError, ValueError):
            pass
    _not_numeric(name, array.dtype, pd.Series(array).dropna())
    raise AssertionError("unreachable")


def _not_numeric(name: str, dtype: Any, sample: pd.Series) -> None:
    example = f", e.g. {sample.iloc[0]!r}" if len(sample) else ""
    raise DataError(
        f"{name} must hold numbers or booleans (target exposures), got dtype "
        f"{dtype}{example}"
    )


def _index_mismatch(got: pd.Index, expected: pd.Index, name: str) -> None:
    fix = (
        "Compute the signals from the `data` you were given, or align them "
        "with `signals.reindex(data.index)`."
    )
    if len(got) != len(expected):
        raise DataError(
            f"{name} has {len(got)} rows but the data has {len(expected)} bars "
            "(length mismatch); "
            f"their indexes must be equal. {fix}"
        )
    try:
        differs = np.flatnonzero(np.asarray(got != expected, dtype=bool))
        position = int(differs[0]) if len(differs) else 0
    except (TypeError, ValueError):  # e.g. tz-aware against tz-naive
        position = 0
    raise DataError(
        f"{name}'s index differs from the data's index, first at position "
        f"{position}: {got[position]!r} instead of {expected[position]!r}. {fix}"
    )


def _fix_signals(
    values: np.ndarray,
    limit: float,
    leverage: float | None,
    index: pd.Index,
    name: str,
) -> np.ndarray:
    out = np.array(values, dtype=np.float64)
    inf = np.flatnonzero(np.isinf(out))
    if len(inf):
        i = inf[0]
        raise DataError(
            f"{name} has {len(inf)} infinite value(s), first {out[i]} at "
            f"{format_timestamp(index[i])} (position {i}); target exposures must be "
            "finite (use NaN or 0 for flat)."
        )
    out[np.isnan(out)] = 0.0  # NaN means flat
    size = np.abs(out)
    over = np.flatnonzero(size > limit * (1 + _SIGNAL_TOLERANCE))
    if len(over):
        i = over[0]
        needed = float(size.max())
        allowed = (
            f"the leverage limit of {limit:g}"
            if leverage is not None and leverage > 1
            else "1 (fully invested) without leverage"
        )
        raise DataError(
            f"{name} has {len(over)} value(s) beyond {allowed}, first "
            f"{out[i]:g} at {format_timestamp(index[i])} (position {i}); pass "
            f"leverage={needed:g} to allow it, or scale the signals down."
        )
    # values a rounding error above the limit: clip them to it
    np.clip(out, -limit, limit, out=out)
    return out
