"""Is a sweep's winner real? The Deflated Sharpe Ratio, PBO by CSCV, and SPA.

A sweep that tries N parameter sets and keeps the best one reports the maximum
of N noisy estimates. Three standard statistics say how much of that maximum
is luck:

- :func:`deflated_sharpe_ratio`: the probability that the winner's true Sharpe
  beats the best Sharpe that N skill-less trials would show by chance (Bailey
  and López de Prado, 2014). Built from :func:`expected_max_sharpe` (the
  benchmark SR0) and :func:`probabilistic_sharpe_ratio`.
- :func:`probability_of_backtest_overfitting`: how often the in-sample winner
  ends in the bottom half out of sample, over every combinatorially symmetric
  split of the history (Bailey, Borwein, López de Prado and Zhu, 2015).
- :func:`superior_predictive_ability`: White's Reality Check and Hansen's SPA
  test against a benchmark's returns, run by the ``arch`` package (an optional
  dependency: ``pip install "nbbacktest[credibility]"``).

Units, as in the papers: every Sharpe ratio here is *per period* (not
annualised): the mean of the period returns over their standard deviation
(``ddof=1``, risk-free rate 0, as :mod:`~nbbacktest.engine.metrics` computes
it). An annualised Sharpe (``Result.stats["sharpe"]``) becomes per period once
divided by ``sqrt(periods per year)``, and a variance of annualised Sharpes
once divided by the periods per year. Kurtosis is *non-excess*: 3 for a normal
distribution. The normal CDF and its inverse come from
:class:`statistics.NormalDist`; PBO's pass over the splits is compiled by numba.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

__all__ = [
    "EULER_MASCHERONI", "BacktestOverfitting", "DeflatedSharpe", "SpaPValues", "deflated_sharpe_ratio",
    "expected_max_sharpe", "probabilistic_sharpe_ratio", "probability_of_backtest_overfitting",
    "superior_predictive_ability",
]

#: The Euler-Mascheroni constant, gamma in the expected-maximum formula of SR0.
EULER_MASCHERONI = 0.5772156649015329
_NORMAL = NormalDist()

#: The metrics PBO computes from per-block sums, in one compiled pass over the splits
#: (:mod:`~nbbacktest.engine.overfitting_kernel`), without calling Python per split.
_FAST_METRICS = ("sharpe", "mean")

#: The bootstraps arch's SPA knows, by the names it accepts.
_BOOTSTRAPS = ("stationary", "sb", "circular", "cbb", "moving block", "mbb")


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(number := float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value!r}")
    return int(value)


# --- The Deflated Sharpe Ratio ---------------------------------------------

def expected_max_sharpe(trials: int, variance: float) -> float:
    """The Sharpe ratio that the best of ``trials`` skill-less trials shows by chance: SR0.

    ``SR0 = sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))``, with
    ``g`` the Euler-Mascheroni constant, ``Z^-1`` the inverse standard normal CDF
    and ``V`` the variance of the trials' Sharpe ratios (Bailey and López de Prado,
    2014, the false strategy theorem). One trial selects nothing: SR0 is 0.

    Parameters
    ----------
    trials : int
        N, the number of independent trials the winner was picked from (>= 1).
    variance : float
        V, the variance of the trials' *per-period* Sharpe ratios (>= 0).

    Returns
    -------
    float
        SR0, a per-period Sharpe ratio.

    Examples
    --------
    The expected maximum of 100 standard normals, and the paper's 100 trials whose
    annualised Sharpes have variance 1/2, on 250 days a year:

    >>> round(expected_max_sharpe(100, 1.0), 4)
    2.5306
    >>> round(expected_max_sharpe(100, 0.5 / 250), 4)
    0.1132
    """
    count, v = _count("trials", trials, 1), _finite("variance", variance)
    if v < 0:
        raise ValueError(f"variance (of the trials' Sharpe ratios) must be >= 0, got {variance!r}")
    if count == 1:
        return 0.0
    z = ((1.0 - EULER_MASCHERONI) * _NORMAL.inv_cdf(1.0 - 1.0 / count)
         + EULER_MASCHERONI * _NORMAL.inv_cdf(1.0 - 1.0 / (count * math.e)))
    return math.sqrt(v) * z


def probabilistic_sharpe_ratio(sharpe: float, benchmark: float, observations: int,
                               skew: float = 0.0, kurtosis: float = 3.0) -> float:
    """The probability that the true Sharpe ratio exceeds ``benchmark``: PSR.

    ``PSR = Phi((SR - SR*) * sqrt(T - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2))``
    (Bailey and López de Prado, 2012), with ``g3`` the skewness and ``g4`` the
    non-excess kurtosis of the returns the Sharpe ratio ``SR`` was measured on.

    Parameters
    ----------
    sharpe : float
        SR, the observed *per-period* Sharpe ratio.
    benchmark : float
        SR*, the per-period Sharpe ratio to beat (0 for "any skill";
        :func:`expected_max_sharpe` for the deflated Sharpe ratio).
    observations : int
        T, the number of returns SR was measured on (>= 2).
    skew : float, default 0.0
        Skewness of those returns.
    kurtosis : float, default 3.0
        Their *non-excess* kurtosis (3 for a normal distribution); at least
        ``1 + skew ** 2``, as for any distribution.

    Returns
    -------
    float
        A probability in [0, 1].

    Examples
    --------
    >>> probabilistic_sharpe_ratio(0.0, 0.0, 1000)
    0.5
    >>> round(probabilistic_sharpe_ratio(0.1, 0.0, 250), 4)
    0.9423
    """
    sr, bench = _finite("sharpe", sharpe), _finite("benchmark", benchmark)
    t = _count("observations", observations, 2)
    g3, g4 = _finite("skew", skew), _finite("kurtosis", kurtosis)
    if g4 < 1.0 + g3 * g3 - 1e-12:
        raise ValueError(
            f"kurtosis={kurtosis!r} is below 1 + skew**2 = {1.0 + g3 * g3!r}, which no distribution has: "
            "kurtosis here is non-excess (3 for a normal distribution), not excess kurtosis")
    spread = 1.0 - g3 * sr + (g4 - 1.0) / 4.0 * sr * sr
    gap = sr - bench
    if spread <= 0.0:  # a two-point distribution: the Sharpe ratio has no sampling error
        return 1.0 if gap > 0 else 0.0 if gap < 0 else 0.5
    return _NORMAL.cdf(gap * math.sqrt(t - 1) / math.sqrt(spread))


@dataclass(frozen=True)
class DeflatedSharpe:
    """The Deflated Sharpe Ratio of a sweep's winner, with what it was computed from.

    Every Sharpe ratio is per period; ``kurtosis`` is non-excess (3 for normal).

    Attributes
    ----------
    dsr : float
        The probability that the winner's true Sharpe ratio exceeds ``sr0``.
        0.95 and above is the usual bar.
    sr0 : float
        The expected maximum Sharpe ratio of ``trials`` skill-less trials.
    sharpe : float
        The winner's observed Sharpe ratio.
    trials, observations : int
        N, the trials searched, and T, the winner's number of returns.
    skew, kurtosis : float
        The moments of the winner's returns.
    sharpe_variance : float
        The variance of the trials' Sharpe ratios that ``sr0`` was built from.
    """

    dsr: float
    sr0: float
    sharpe: float
    trials: int
    observations: int
    skew: float
    kurtosis: float
    sharpe_variance: float


def _return_moments(returns: Any) -> tuple[float, int, float, float]:
    """Per-period Sharpe (ddof=1), count, skewness and non-excess kurtosis of returns, NaN dropped."""
    values = np.asarray(returns, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"returns must be one series of period returns, got shape {values.shape}")
    values = values[~np.isnan(values)]
    if not np.isfinite(values).all():
        raise ValueError("returns holds an infinite value")
    n = len(values)
    if n < 3:
        raise ValueError(f"returns needs at least 3 non-NaN values for a Sharpe ratio, got {n}")
    if values.min() == values.max():
        raise ValueError("returns are all equal: their Sharpe ratio is undefined")
    centred = values - values.mean()
    m2 = float(np.mean(centred ** 2))
    sharpe = float(values.mean()) / math.sqrt(m2 * n / (n - 1))
    skew = float(np.mean(centred ** 3)) / m2 ** 1.5
    kurtosis = float(np.mean(centred ** 4)) / (m2 * m2)
    return sharpe, n, skew, kurtosis


def deflated_sharpe_ratio(returns: Any = None, *, trials: int, sharpe_variance: float,
                          sharpe: float | None = None, observations: int | None = None,
                          skew: float | None = None, kurtosis: float | None = None) -> DeflatedSharpe:
    """The Deflated Sharpe Ratio: the PSR of the winner against the luck of ``trials`` trials.

    ``DSR = PSR(SR0)`` with ``SR0 = expected_max_sharpe(trials, sharpe_variance)``
    (Bailey and López de Prado, 2014, "The Deflated Sharpe Ratio: Correcting for
    Selection Bias, Backtest Overfitting and Non-Normality").

    Give either the winner's ``returns`` (its Sharpe ratio, their count, skewness
    and kurtosis are measured on them, NaN dropped) or its ``sharpe`` and
    ``observations`` (with ``skew`` and ``kurtosis``, normal by default).

    Parameters
    ----------
    returns : array-like, optional
        The winner's period returns.
    trials : int
        N, the number of independent trials the winner was picked from.
    sharpe_variance : float
        The variance of the trials' *per-period* Sharpe ratios (e.g.
        ``np.var(sharpes, ddof=1)`` over every trial of the sweep).
    sharpe : float, optional
        The winner's *per-period* Sharpe ratio, when ``returns`` is not given.
    observations : int, optional
        The number of returns ``sharpe`` was measured on.
    skew : float, optional
        Skewness of those returns (default 0).
    kurtosis : float, optional
        Their *non-excess* kurtosis (default 3, normal).

    Returns
    -------
    DeflatedSharpe

    Examples
    --------
    The paper's example: annualised SR 2.5 over 5 years of daily returns (T=1250,
    250 a year), skew -3, kurtosis 10, picked from N=100 trials whose annualised
    Sharpes have variance 1/2:

    >>> d = deflated_sharpe_ratio(sharpe=2.5 / 250 ** 0.5, observations=1250, skew=-3.0,
    ...                           kurtosis=10.0, trials=100, sharpe_variance=0.5 / 250)
    >>> round(d.sr0, 4), round(d.dsr, 4)
    (0.1132, 0.9004)
    """
    if returns is not None:
        given = [name for name, value in (("sharpe", sharpe), ("observations", observations),
                                          ("skew", skew), ("kurtosis", kurtosis)) if value is not None]
        if given:
            raise TypeError(f"pass returns, or sharpe and observations, not both: {', '.join(given)} "
                            "would replace what returns measures")
        sr, t, g3, g4 = _return_moments(returns)
    else:
        if sharpe is None or observations is None:
            raise TypeError("deflated_sharpe_ratio needs the winner's returns, or sharpe and observations")
        sr = _finite("sharpe", sharpe)
        t = _count("observations", observations, 2)
        g3 = 0.0 if skew is None else _finite("skew", skew)
        g4 = 3.0 if kurtosis is None else _finite("kurtosis", kurtosis)
    count = _count("trials", trials, 1)
    variance = _finite("sharpe_variance", sharpe_variance)
    sr0 = expected_max_sharpe(count, variance)
    dsr = probabilistic_sharpe_ratio(sr, sr0, t, g3, g4)
    return DeflatedSharpe(dsr=dsr, sr0=sr0, sharpe=sr, trials=count, observations=t, skew=g3,
                          kurtosis=g4, sharpe_variance=variance)


# --- The Probability of Backtest Overfitting (CSCV) ------------------------

@dataclass(frozen=True, eq=False)
class BacktestOverfitting:
    """The Probability of Backtest Overfitting of a sweep, by CSCV, split by split.

    One entry per split of the arrays (``C(blocks, blocks / 2)`` splits), each
    array read-only. Compared by identity (it holds arrays).

    Attributes
    ----------
    pbo : float
        The share of splits whose in-sample winner ranks at or below the median
        out of sample (logit <= 0). About 0.5 for pure noise; near 0 for a real edge.
    logits : numpy.ndarray
        ``ln(w / (1 - w))`` per split, ``w`` the winner's out-of-sample relative
        rank in (0, 1) (mid-rank on ties).
    selected : numpy.ndarray
        The column of the in-sample winner, per split.
    is_performance, oos_performance : numpy.ndarray
        The winner's metric in sample and out of sample, per split.
    probability_of_loss : float
        The share of splits where the winner's out-of-sample metric is below 0.
    slope, intercept : float
        The least-squares line of ``oos_performance`` on ``is_performance``
        (performance degradation; a slope below 0 is the overfitting signature).
        NaN without two splits of finite, distinct in-sample values.
    blocks, rows_per_block, trials : int
        S, the rows in each block (the first ``T % S`` rows are left out), and N.
    """

    pbo: float
    logits: np.ndarray
    selected: np.ndarray
    is_performance: np.ndarray
    oos_performance: np.ndarray
    probability_of_loss: float
    slope: float
    intercept: float
    blocks: int
    rows_per_block: int
    trials: int


def _callable_performance(values: np.ndarray, blocks: int, members: np.ndarray,
                          metric: Callable[[np.ndarray], Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    rows, n = values.shape
    block_rows = np.arange(rows).reshape(blocks, rows // blocks)
    for member in members:
        out = []
        for part in (block_rows[member], block_rows[~member]):
            got = np.asarray(metric(values[part.ravel()]), dtype=np.float64)
            if got.shape != (n,):
                raise ValueError(f"metric must return one value per trial, shape ({n},), for a "
                                 f"(rows, {n}) matrix of returns; it returned shape {got.shape}")
            out.append(got[None, :])
        yield out[0], out[1]


def _rank(is_perf: np.ndarray, oos_perf: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per split: the in-sample winner, its metric in and out of sample, and its relative rank w."""
    is_perf = np.where(np.isnan(is_perf), -np.inf, is_perf)  # NaN (too few returns) ranks last
    oos_perf = np.where(np.isnan(oos_perf), -np.inf, oos_perf)
    rows = np.arange(len(is_perf))
    selected = is_perf.argmax(axis=1)
    winner_oos = oos_perf[rows, selected]
    below = (oos_perf < winner_oos[:, None]).sum(axis=1)
    tied = (oos_perf == winner_oos[:, None]).sum(axis=1)  # the winner included
    return selected, is_perf[rows, selected], winner_oos, (below + (tied + 1) / 2.0) / (is_perf.shape[1] + 1)


def _degradation(is_perf: np.ndarray, oos_perf: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(is_perf) & np.isfinite(oos_perf)
    x, y = is_perf[ok], oos_perf[ok]
    dx = x - x.mean() if len(x) else x
    sxx = float(dx @ dx)
    if len(x) < 2 or sxx == 0.0:
        return math.nan, math.nan
    slope = float(dx @ (y - y.mean())) / sxx
    return slope, float(y.mean()) - slope * float(x.mean())


def probability_of_backtest_overfitting(
    performance: Any, blocks: int = 16,
    metric: Literal["sharpe", "mean"] | Callable[[np.ndarray], Any] = "sharpe",
) -> BacktestOverfitting:
    """The Probability of Backtest Overfitting, by combinatorially symmetric cross-validation.

    Bailey, Borwein, López de Prado and Zhu (2015), "The Probability of Backtest
    Overfitting": the T x N matrix of period returns (T periods, N trials) is cut
    into S blocks of equal rows. For each of the ``C(S, S/2)`` ways to take half
    of the blocks as in-sample (the rest, in time order, out of sample), the
    trial with the best in-sample metric is picked and its out-of-sample relative
    rank ``w`` among the N trials gives the logit ``ln(w / (1 - w))``. PBO is the
    share of logits <= 0: how often the in-sample winner does no better than the
    median out of sample.

    Parameters
    ----------
    performance : array-like or pandas.DataFrame, shape (T, N)
        Period returns, a row per period and a column per trial (run). NaN marks a
        period where a run has no return; the metric skips it. float32 (how a
        sweep keeps returns) is read as it is, other types as float64; sums are
        float64 either way.
    blocks : int, default 16
        S, an even number >= 2 with at least 2 rows per block. ``C(16, 8)`` is
        12,870 splits: with a named metric, about 0.5 s for 10,000 trials on
        2 cores; with a callable ``metric``, two calls of it per split. ``T % S`` leading rows are left out.
    metric : {"sharpe", "mean"} or callable, default "sharpe"
        How a trial is ranked on a set of rows: the per-period Sharpe ratio
        (``ddof=1``), the mean return, or a function from a (rows, N) array of
        returns to N values, higher better.

    Returns
    -------
    BacktestOverfitting

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.normal(0.0, 0.01, size=(400, 20))
    >>> noise[:, 3] += 0.01                      # one run with a real edge
    >>> result = probability_of_backtest_overfitting(noise, blocks=8)
    >>> result.pbo, len(result.logits), int(np.bincount(result.selected).argmax())
    (0.0, 70, 3)
    """
    labels = list(getattr(performance, "columns", []))
    values = np.asarray(performance)
    if values.dtype != np.float32:  # float32 (how a sweep keeps returns) is summed in float64 as it is
        values = values.astype(np.float64, copy=False)
    if values.ndim != 2:
        raise ValueError(f"performance must be a 2-D (periods, trials) matrix, got shape {values.shape}")
    total_rows, n = values.shape
    if n < 2:
        raise ValueError(f"performance needs at least 2 trials (columns) to pick a winner from, got {n}")
    s = _count("blocks", blocks, 2)
    if s % 2:
        raise ValueError(f"blocks must be even (half in sample, half out), got {blocks}")
    if total_rows // s < 2:
        raise ValueError(f"blocks={blocks} leaves fewer than 2 of performance's {total_rows} rows per block: "
                         f"pass blocks <= {max(2, total_rows // 2 // 2 * 2)} or more periods")
    if np.isinf(values).any():
        raise ValueError("performance holds an infinite return")
    empty = np.flatnonzero(np.isnan(values).all(axis=0))
    if len(empty):
        names = [labels[i] if labels else int(i) for i in empty[:5]]
        raise ValueError(f"performance has columns with no return at all (only NaN): {names}"
                         f"{' ...' if len(empty) > 5 else ''}; drop them first")
    if not (metric in _FAST_METRICS if isinstance(metric, str) else callable(metric)):
        raise ValueError(f"metric must be one of {_FAST_METRICS} or a callable, got {metric!r}")

    size = total_rows // s
    values = values[total_rows - size * s:]
    from nbbacktest.engine.overfitting_kernel import ranked_splits, split_plan  # loads numba

    plan = split_plan(s)
    if isinstance(metric, str):
        selected, winner_is, winner_oos, w = ranked_splits(values, plan, metric)
    else:
        members = np.zeros((len(plan.splits), s), dtype=bool)
        members[np.arange(len(plan.splits))[:, None], plan.splits] = True
        ranked = [_rank(is_perf, oos_perf) for is_perf, oos_perf in
                  _callable_performance(values.astype(np.float64, copy=False), s, members, metric)]
        selected, winner_is, winner_oos, w = (np.concatenate(parts) for parts in zip(*ranked))
    logits = np.log(w / (1.0 - w))
    slope, intercept = _degradation(winner_is, winner_oos)
    for array in (logits, selected, winner_is, winner_oos):
        array.setflags(write=False)
    return BacktestOverfitting(
        pbo=float(np.mean(logits <= 0.0)), logits=logits, selected=selected, is_performance=winner_is,
        oos_performance=winner_oos, probability_of_loss=float(np.mean(winner_oos < 0.0)), slope=slope,
        intercept=intercept, blocks=s, rows_per_block=size, trials=n)


# --- White's Reality Check and Hansen's SPA (arch) -------------------------

@dataclass(frozen=True)
class SpaPValues:
    """The three p-values of Hansen's SPA test (arch's ``SPA.pvalues``).

    Attributes
    ----------
    lower : float
        Never re-centres a run that does worse than the benchmark: the smallest.
    consistent : float
        Hansen's consistent p-value: re-centres only the runs within a
        ``sqrt(2 log log T)`` bound of the benchmark. The one to report as SPA.
    upper : float
        Re-centres every run, as White's Reality Check does: the largest, most
        conservative. With ``studentize=False`` it is White's Reality Check.
    """

    lower: float
    consistent: float
    upper: float


def superior_predictive_ability(
    benchmark_returns: Any, runs_returns: Any, reps: int = 1000, block_size: int | None = None,
    bootstrap: Literal["stationary", "sb", "circular", "cbb", "moving block", "mbb"] = "stationary",
    seed: int | np.random.Generator | None = 0, studentize: bool = True,
) -> SpaPValues:
    """Does any run beat the benchmark, given how many were tried? White's RC and Hansen's SPA.

    The null hypothesis is that no run has a higher expected return than the
    benchmark; a small p-value says that at least one does, after accounting for
    the search over every run. Runs ``arch.bootstrap.SPA`` (White, 2000; Hansen,
    2005) on *losses*, the negatives of the returns, with a block bootstrap of
    the return differences.

    Needs the optional ``arch`` package: ``pip install "nbbacktest[credibility]"``.

    Parameters
    ----------
    benchmark_returns : array-like, shape (T,)
        The benchmark's period returns (buy & hold, or zeros for "no trading").
    runs_returns : array-like or pandas.DataFrame, shape (T, k) or (T,)
        The runs' period returns over the same periods, a column per run.
    reps : int, default 1000
        Bootstrap replications.
    block_size : int, optional
        The (mean) block length of the bootstrap; arch's default is ``sqrt(T)``.
    bootstrap : str, default "stationary"
        "stationary"/"sb", "circular"/"cbb" or "moving block"/"mbb".
    seed : int or numpy.random.Generator, optional, default 0
        The bootstrap's seed: the same seed gives the same p-values.
    studentize : bool, default True
        Divide each mean return difference by its standard error (Hansen's SPA).
        ``False`` gives White's Reality Check statistic, whose p-value is ``upper``.

    Returns
    -------
    SpaPValues
        ``lower``, ``consistent`` (Hansen's SPA) and ``upper`` (the Reality
        Check's re-centring).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> market = rng.normal(0.0, 0.01, 500)
    >>> runs = rng.normal(0.0, 0.01, (500, 10))
    >>> runs[:, 0] += 0.004                      # one run with a real edge
    >>> p = superior_predictive_ability(market, runs, reps=200)
    >>> p.consistent < 0.05
    True
    """
    try:
        from arch.bootstrap import SPA
    except ImportError as e:
        raise ImportError('superior_predictive_ability needs the arch package: '
                          'pip install "nbbacktest[credibility]"') from e
    benchmark = np.asarray(benchmark_returns, dtype=np.float64)
    runs = np.asarray(runs_returns, dtype=np.float64)
    if benchmark.ndim != 1:
        raise ValueError(f"benchmark_returns must be one series of returns, got shape {benchmark.shape}")
    if runs.ndim == 1:
        runs = runs[:, None]
    if runs.ndim != 2 or runs.shape[0] != len(benchmark):
        raise ValueError(f"runs_returns must be a ({len(benchmark)}, runs) matrix, one row per "
                         f"benchmark_returns period, got shape {runs.shape}")
    if len(benchmark) < 2:
        raise ValueError(f"benchmark_returns needs at least 2 periods, got {len(benchmark)}")
    for name, array in (("benchmark_returns", benchmark), ("runs_returns", runs)):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} holds NaN or infinite values; drop or fill those periods first")
    count = _count("reps", reps, 1)
    if block_size is not None and not 1 <= _count("block_size", block_size, 1) <= len(benchmark):
        raise ValueError(f"block_size must be between 1 and the {len(benchmark)} periods, got {block_size}")
    if bootstrap not in _BOOTSTRAPS:
        raise ValueError(f"bootstrap must be one of {_BOOTSTRAPS}, got {bootstrap!r}")
    spa = SPA(-benchmark, -runs, block_size=block_size, reps=count, bootstrap=bootstrap,
              studentize=bool(studentize), seed=seed)
    spa.compute()
    p = spa.pvalues
    return SpaPValues(lower=float(p["lower"]), consistent=float(p["consistent"]), upper=float(p["upper"]))
