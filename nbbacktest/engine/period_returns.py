"""A run's returns per period: per-bar returns, or consecutive bars compounded into periods.

The credibility statistics of a sweep (:mod:`nbbacktest.engine.overfitting`) need
every run's returns on one common grid of periods. A run's per-bar return is the
one :mod:`~nbbacktest.engine.metrics` uses for the Sharpe ratio: ``r[0] =
equity[0] / cash - 1`` and ``r[i] = equity[i] / equity[i - 1] - 1``.

The rule on long data: with ``n`` bars and at most ``P`` periods,
``bars_per_period = ceil(n / P)`` and ``periods = ceil(n / bars_per_period)``.
Period ``k`` holds bars ``k * b`` to ``min((k + 1) * b, n) - 1`` (``b`` the bars
per period; only the last period may be shorter), and its return is the bars'
returns compounded, which is the ratio of the equity at its last bar to the
equity at the previous period's last bar (the starting cash for the first):
``equity[e_k] / equity[e_(k-1)] - 1``. So aggregating costs one division per
period, and per-bar returns are the case ``b = 1``.

Examples
--------
>>> period_layout(2500, 2520), period_layout(10_000, 2520)
((2500, 1), (2500, 4))
>>> period_returns(np.array([110.0, 99.0, 108.9]), 100.0, 2).round(6).tolist()
[-0.01, 0.1]
"""

from __future__ import annotations

import numpy as np

from nbbacktest.engine.compiled import njit

__all__ = ["period_layout", "period_returns", "period_returns_into"]


def period_layout(bars: int, max_periods: int) -> tuple[int, int]:
    """``(periods, bars_per_period)`` of ``bars`` bars kept in at most ``max_periods`` periods.

    Examples
    --------
    >>> period_layout(10, 4)
    (4, 3)
    """
    if bars < 1 or max_periods < 1:
        raise ValueError(f"bars and max_periods must be at least 1, got {bars} and {max_periods}")
    per = -(-bars // max_periods)
    return -(-bars // per), per


def period_returns_into(equity: np.ndarray, cash: float, out: np.ndarray,
                        bars_per_period: int) -> np.ndarray:
    """Write the period returns of ``equity`` (float64, one value per bar) into ``out``.

    ``out`` (float32 or float64) must hold ``ceil(len(equity) / bars_per_period)``
    values. Each return is computed in float64 and rounded once into ``out``, in one
    compiled pass that allocates nothing.

    Examples
    --------
    >>> out = np.empty(2)
    >>> period_returns_into(np.array([110.0, 99.0, 108.9]), 100.0, out, 2).round(6).tolist()
    [-0.01, 0.1]
    """
    n = len(equity)
    periods = len(out)
    if periods != -(-n // bars_per_period):
        raise ValueError(f"out holds {periods} periods; {n} bars of {bars_per_period} per period"
                         f" make {-(-n // bars_per_period)}")
    _period_returns_pass(equity, float(cash), out, bars_per_period)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _period_returns_pass(equity: np.ndarray, cash: float, out: np.ndarray,
                         per: int) -> None:  # pragma: no cover - compiled
    """``out[k] = equity[e_k] / equity[e_(k-1)] - 1``, ``e_k`` period ``k``'s last bar
    (``cash`` before the first), in float64 and rounded once into ``out``."""
    n = len(equity)
    before = cash
    for k in range(len(out)):
        last = min((k + 1) * per, n) - 1
        value = equity[last]
        out[k] = value / before - 1.0
        before = value


def period_returns(equity: np.ndarray, cash: float, bars_per_period: int = 1) -> np.ndarray:
    """The period returns of ``equity`` as a new float64 array (see the module's rule)."""
    equity = np.asarray(equity, dtype=np.float64)
    out = np.empty(-(-len(equity) // bars_per_period))
    return period_returns_into(equity, float(cash), out, bars_per_period)
