"""Is a sweep's winner real? :class:`Credibility`, from the sweep's own runs.

``SweepResult.credibility()`` feeds :mod:`nbbacktest.engine.overfitting` with what
the sweep kept (:mod:`nbbacktest.parallel.run_returns`):

- **DSR** of the best run: its period returns (their Sharpe ratio, skewness and
  kurtosis), ``trials`` = every planned run (failed and cancelled included: they
  were tried), and the variance of the finished runs' Sharpe ratios, read from
  the ``sharpe`` stat of every finished run and made per period by dividing by
  ``sqrt(periods_per_year / bars_per_period)``.
- **PBO** by CSCV over the kept runs' (periods x runs) return matrix in
  ``blocks`` blocks, ranking runs as the sweep did: by Sharpe ratio for
  ``metric="sharpe"``, by mean return for the return metrics.
- **SPA** (Hansen; through ``arch``) of the kept runs against buy and hold, the
  data's close compounded on the same periods. arch's bootstrap copies a (periods
  x runs) matrix per replication, so at most :data:`SPA_RUNS` runs enter it: the
  best run and a subsample drawn from ``seed`` (said in ``notes``). It runs in a
  thread while PBO's compiled pass runs, so the two take the longer of their times.

Missing statistics are None, with the reason in ``notes``; plain-language
warnings are in ``flags``. A universe sweep keeps no returns (its symbols' bars
differ): ``credibility()`` refuses it, pointing to ``symbols=``.

Examples
--------
>>> import nbbacktest as nbb
>>> from nbbacktest.engine.examples import SmaCross
>>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
...                   grid={"fast": [5, 10, 20], "slow": [40, 80]}, progress=False)
>>> c = sweep.credibility(blocks=8, reps=100)
>>> c.runs, c.finished, len(str(c).splitlines())
(6, 6, 2)
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from nbbacktest.engine.overfitting import (
    BacktestOverfitting,
    DeflatedSharpe,
    SpaPValues,
    deflated_sharpe_ratio,
    probability_of_backtest_overfitting,
    superior_predictive_ability,
)
from nbbacktest.errors import SweepError
from nbbacktest.parallel.rows import CANCELLED, DONE, FAILED, PENDING
from nbbacktest.parallel.run_returns import market_returns, recompute

if TYPE_CHECKING:
    from nbbacktest.parallel.sweep import SweepResult

__all__ = ["FEW_TRADES", "PBO_METRICS", "SPA_RUNS", "Credibility", "credibility"]

#: How PBO ranks runs for each metric a sweep may pick its best by: a return-like
#: metric ranks by the mean period return; other metrics cannot be replayed on a
#: half of the periods from the returns alone.
PBO_METRICS: dict[str, Literal["sharpe", "mean"]] = {
    "sharpe": "sharpe", "return_pct": "mean", "cagr_pct": "mean", "equity_final": "mean"}
#: Runs entering SPA at most: arch copies a (periods x runs) float64 matrix twice per
#: bootstrap replication; 200 runs of 2,500 periods take ~1 s at 1,000 replications.
SPA_RUNS = 200
#: A best run with fewer closed trades than this (or than ``min_trades``) is flagged:
#: a Sharpe ratio over a handful of trades says little.
FEW_TRADES = 20
#: DSR, PBO and SPA p-value bars for the flags: the papers' usual 95 %, and "more
#: likely than not" for PBO.
DSR_BAR, PBO_BAR, SPA_BAR = 0.95, 0.5, 0.05


@dataclass(frozen=True)
class Credibility:
    """How much of a sweep's best result is luck: DSR, PBO and SPA, with counts and flags.

    Attributes
    ----------
    metric : str
        The metric the sweep picked its best run by.
    runs, finished, failed, cancelled : int
        Every planned run (the trials), those done, failed and cancelled.
    kept : int
        Runs whose returns entered PBO.
    periods, bars_per_period : int
        The length of each run's returns, and the bars compounded per period.
    best_index, best_trades : int or None
        The best run's row and closed trades.
    min_trades : int
        The sweep's ``min_trades``.
    dsr, pbo, spa : DeflatedSharpe, BacktestOverfitting, SpaPValues or None
        The statistics; None with the reason in ``notes``.
    notes, flags : tuple of str
        Why a statistic is missing, what was subsampled; warnings in plain language.
    """

    metric: str
    runs: int
    finished: int
    failed: int
    cancelled: int
    kept: int
    periods: int
    bars_per_period: int
    best_index: int | None
    best_trades: int | None
    min_trades: int
    dsr: DeflatedSharpe | None
    pbo: BacktestOverfitting | None
    spa: SpaPValues | None
    notes: tuple[str, ...]
    flags: tuple[str, ...]

    def summary(self) -> str:
        """Two lines: the statistics, then the flags (or that none was raised)."""
        stats = [f"DSR {_shown(self.dsr.dsr, DSR_BAR)}" if self.dsr else "DSR n/a",
                 f"PBO {_shown(self.pbo.pbo, PBO_BAR)}" if self.pbo else "PBO n/a",
                 f"SPA p {_shown(self.spa.consistent, SPA_BAR)}" if self.spa else "SPA n/a"]
        first = (f"best of {self.runs:,} runs by {self.metric} (row {self.best_index}; "
                 f"{self.finished:,} finished, {self.failed:,} failed, {self.cancelled:,} cancelled; "
                 f"{self.kept:,} kept x {self.periods:,} periods): {', '.join(stats)}")
        return first + "\n" + ("; ".join(self.flags) if self.flags else "no warning flags")

    def __repr__(self) -> str:
        return self.summary()


def _check(result: SweepResult, blocks: Any, reps: Any, seed: Any) -> None:
    for name, value, low in (("blocks", blocks, 2), ("reps", reps, 1), ("seed", seed, 0)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
            raise SweepError(f"credibility({name}=...) must be an int >= {low}, got {value!r:.60}")
    if blocks % 2:
        raise SweepError(f"credibility(blocks={blocks}) must be even: half the blocks in sample, half out")
    plan = result.spec.returns
    if plan is None:
        why = ("it runs on a universe, whose symbols' bars differ: sweep one symbol"
               " (symbols=['AAA']) for its credibility" if result.spec.plan.universe is not None
               else "it kept no returns (returns_budget=0): run it again with returns_budget > 0")
        raise SweepError(f"credibility() needs the runs' returns, and this sweep has none: {why}")
    if plan.periods // blocks < 2:
        raise SweepError(f"credibility(blocks={blocks}) leaves fewer than 2 of the {plan.periods}"
                         f" periods per block: pass blocks <= {max(2, plan.periods // 4 * 2)}")
    if result.metric not in PBO_METRICS or not result.maximize:
        raise SweepError(f"credibility() ranks runs by their returns, so the sweep's metric must be"
                         f" one of {', '.join(PBO_METRICS)} (maximized); this sweep's is"
                         f" {result.metric!r} (maximize={result.maximize})")
    if not result.done():
        raise SweepError("credibility() needs a finished sweep: wait for it (sweep.wait()) or cancel it")


def _returns_of(result: SweepResult, rows: list[int]) -> np.ndarray:
    """A (periods, len(rows)) float32 matrix, as kept (the statistics sum it in float64);
    rows not kept yet are recomputed (and kept if room)."""
    kept = result.kept_returns
    assert kept is not None
    missing = [row for row in rows if row not in kept]
    if missing:
        for row, values in zip(missing, recompute(result.spec, result.data, missing)):
            if not kept.put(row, values):
                raise SweepError(f"no room left to keep run {row}'s returns")  # never: see capacity
    return kept.matrix(rows, np.float32)


def credibility(result: SweepResult, blocks: int = 16, reps: int = 1000, seed: int = 0) -> Credibility:
    """The :class:`Credibility` of a finished sweep (``SweepResult.credibility`` caches it)."""
    _check(result, blocks, reps, seed)
    store, spec = result.store, result.spec
    plan = spec.returns
    assert plan is not None
    status = store.status
    done = np.flatnonzero(status == DONE)
    notes: list[str] = []
    best = result.best_index
    trades_column = spec.schema.ints.index("trades")
    best_trades = None if best is None else int(store.ints[best, trades_column])

    # The kept runs that finished (the subsample's rows when over budget), and the best.
    wanted = done if plan.rows is None else np.intersect1d(done, np.asarray(plan.rows, dtype=np.int64))
    columns = sorted(set(wanted.tolist()) | ({best} if best is not None else set()))
    if plan.rows is not None:
        notes.append(f"returns kept for a subsample of {len(plan.rows):,} of {plan.runs:,} runs"
                     f" (returns_budget={plan.budget:,} bytes), and the best run")
    matrix = _returns_of(result, columns) if columns else np.empty((plan.periods, 0), dtype=np.float32)
    matrix[~np.isfinite(matrix)] = np.nan  # a run that blew up has no return after it
    usable = np.flatnonzero(~np.isnan(matrix).all(axis=0))
    if len(usable) < len(columns):
        matrix, columns = matrix[:, usable], [columns[k] for k in usable.tolist()]

    dsr = None
    if best is None:
        notes.append("DSR, SPA: no run finished with enough trades to be the best")
    else:
        sharpe = store.floats[done, spec.schema.floats.index("sharpe")]
        per_year = store.floats[done, spec.schema.floats.index("periods_per_year")]
        per_period = sharpe / np.sqrt(per_year / plan.bars_per_period)
        per_period = per_period[np.isfinite(per_period)]
        if len(per_period) < 2:
            notes.append("DSR: fewer than 2 finished runs have a Sharpe ratio to take a variance of")
        else:
            try:
                dsr = deflated_sharpe_ratio(matrix[:, columns.index(best)], trials=len(status),
                                            sharpe_variance=float(np.var(per_period, ddof=1)))
            except (ValueError, KeyError) as error:
                notes.append(f"DSR: the best run's returns give no Sharpe ratio ({error})")

    # SPA (arch, numpy) runs in a thread beside PBO (compiled, without the GIL): their
    # times add up otherwise.
    with ThreadPoolExecutor(1) as pool:
        spa_job = None
        if best is not None and columns:
            chosen = list(range(len(columns)))
            if len(chosen) > SPA_RUNS:
                others = [k for k in chosen if columns[k] != best]
                picked = np.random.default_rng(seed).choice(len(others), SPA_RUNS - 1, replace=False)
                chosen = sorted([columns.index(best), *(others[i] for i in picked.tolist())])
                notes.append(f"SPA: over the best run and {SPA_RUNS - 1} of the other {len(others):,}"
                             f" kept runs, drawn from seed={seed}")
            spa_job = pool.submit(superior_predictive_ability, market_returns(result.data, plan),
                                  np.nan_to_num(matrix[:, chosen]), reps=reps, seed=seed)
        pbo = None
        if len(columns) < 2:
            notes.append(f"PBO: needs at least 2 runs with returns, has {len(columns)}")
        else:
            pbo = probability_of_backtest_overfitting(matrix, blocks, PBO_METRICS[result.metric])
        spa = None
        if spa_job is not None:
            try:
                spa = spa_job.result()
            except ImportError:
                notes.append('SPA: needs the arch package: pip install "nbbacktest[credibility]"')

    counts = {name: int(np.count_nonzero(status == code)) for name, code in
              (("failed", FAILED), ("cancelled", CANCELLED), ("pending", PENDING))}
    return Credibility(
        metric=result.metric, runs=len(status), finished=len(done), failed=counts["failed"],
        cancelled=counts["cancelled"] + counts["pending"], kept=len(columns), periods=plan.periods,
        bars_per_period=plan.bars_per_period, best_index=best, best_trades=best_trades,
        min_trades=spec.min_trades, dsr=dsr, pbo=pbo, spa=spa, notes=tuple(notes),
        flags=_flags(best_trades, spec.min_trades, len(status), dsr, pbo, spa))


def _shown(value: float, bar: float) -> str:
    """Two decimals, or three where two would show the value on its bar (0.949 is no 0.95)."""
    text = f"{value:.2f}"
    return f"{value:.3f}" if text == f"{bar:.2f}" and value != bar else text


def _flags(trades: int | None, min_trades: int, runs: int, dsr: DeflatedSharpe | None,
           pbo: BacktestOverfitting | None, spa: SpaPValues | None) -> tuple[str, ...]:
    flags = []
    if trades is not None and trades < max(FEW_TRADES, min_trades):
        flags.append(f"the best run has {trades} trade{'' if trades == 1 else 's'}")
    if pbo is not None and pbo.pbo > PBO_BAR:
        flags.append(f"PBO {_shown(pbo.pbo, PBO_BAR)}: the in-sample winner is more likely than not below the"
                     " median out of sample")
    if dsr is not None and not dsr.dsr >= DSR_BAR:
        flags.append(f"DSR {_shown(dsr.dsr, DSR_BAR)}: the best Sharpe is not significant given"
                     f" {runs:,} trials")
    if spa is not None and not spa.consistent <= SPA_BAR and not math.isnan(spa.consistent):
        flags.append(f"SPA p {_shown(spa.consistent, SPA_BAR)}: no run beats buy and hold once the search is"
                     " accounted for")
    return tuple(flags)
