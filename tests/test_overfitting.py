"""Tests for nbbacktest.engine.overfitting: DSR against the paper, PBO on noise and on an edge, SPA against arch."""

from __future__ import annotations

import math
import sys
from itertools import combinations
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from nbbacktest.engine.overfitting import (
    EULER_MASCHERONI,
    BacktestOverfitting,
    DeflatedSharpe,
    SpaPValues,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    superior_predictive_ability,
)

# ---------------------------------------------------------------------------
# Deflated Sharpe Ratio
# ---------------------------------------------------------------------------


def test_dsr_reproduces_the_papers_numerical_example():
    """Bailey and López de Prado (2014), "The Deflated Sharpe Ratio", numerical example.

    A strategist tries N = 100 trials; the variance of their annualised Sharpe
    ratios is V = 1/2; the winner has an annualised Sharpe of 2.5 over 5 years of
    daily returns (T = 1,250, 250 a year), skewness -3 and (non-excess) kurtosis 10.
    Per period: SR = 2.5 / sqrt(250) = 0.1581, V = 0.5 / 250, and the paper gets
    SR0 = 0.1132 (annualised 1.79) and DSR = 0.9004, "a 90% chance": not enough for
    95% confidence. Had the strategist run N = 46 trials, DSR = 0.9505.
    (The paper's text was not readable from the search corpora past its title page;
    the figures are cross-checked against a public test suite that pins them,
    0.900397 and 0.9505, and against the formulas computed by hand below.)
    """
    sr = 2.5 / math.sqrt(250)
    d = deflated_sharpe_ratio(sharpe=sr, observations=1250, skew=-3.0, kurtosis=10.0,
                              trials=100, sharpe_variance=0.5 / 250)
    assert round(d.sr0, 4) == 0.1132
    assert round(d.sr0 * math.sqrt(250), 2) == 1.79
    assert round(d.dsr, 4) == 0.9004
    assert d.dsr == pytest.approx(0.9003968344, abs=1e-9)
    assert d == DeflatedSharpe(dsr=d.dsr, sr0=d.sr0, sharpe=sr, trials=100, observations=1250,
                               skew=-3.0, kurtosis=10.0, sharpe_variance=0.5 / 250)
    d46 = deflated_sharpe_ratio(sharpe=sr, observations=1250, skew=-3.0, kurtosis=10.0,
                                trials=46, sharpe_variance=0.5 / 250)
    assert round(d46.dsr, 4) == 0.9505

    # The same numbers, by hand from the paper's two formulas.
    z = NormalDist().inv_cdf
    sr0 = math.sqrt(0.5 / 250) * ((1 - 0.5772156649) * z(1 - 1 / 100) + 0.5772156649 * z(1 - 1 / (100 * math.e)))
    stat = (sr - sr0) * math.sqrt(1250 - 1) / math.sqrt(1 + 3.0 * sr + (10.0 - 1) / 4 * sr ** 2)
    assert d.sr0 == pytest.approx(sr0, abs=1e-10)
    assert d.dsr == pytest.approx(NormalDist().cdf(stat), abs=1e-10)


def test_psr_reproduces_the_sharpe_ratio_efficient_frontier_example():
    """Bailey and López de Prado (2012), "The Sharpe Ratio Efficient Frontier": a
    monthly track record of 24 months, annualised SR 1.585, skew -2.448 and kurtosis
    10.164 gives PSR(0) = 0.9132 (as the pypbo test pins it)."""
    psr = probabilistic_sharpe_ratio(1.585 / math.sqrt(12), 0.0, 24, skew=-2.448, kurtosis=10.164)
    assert psr == pytest.approx(0.9132343069, abs=1e-6)


def test_expected_max_sharpe():
    assert expected_max_sharpe(100, 1.0) == pytest.approx(2.5306028932016846, abs=1e-9)
    assert expected_max_sharpe(2, 1.0) == pytest.approx(EULER_MASCHERONI * NormalDist().inv_cdf(1 - 1 / (2 * math.e)))
    assert expected_max_sharpe(1, 4.0) == 0.0           # one trial selects nothing
    assert expected_max_sharpe(500, 0.0) == 0.0
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0))
    assert 0 < expected_max_sharpe(10, 1.0) < expected_max_sharpe(100, 1.0) < expected_max_sharpe(1000, 1.0)


def test_psr_behaviour():
    assert probabilistic_sharpe_ratio(0.0, 0.0, 1000) == 0.5
    assert probabilistic_sharpe_ratio(0.1, 0.0, 2000) > probabilistic_sharpe_ratio(0.1, 0.0, 200)
    fat = probabilistic_sharpe_ratio(0.1, 0.0, 500, skew=-1.0, kurtosis=8.0)
    assert fat < probabilistic_sharpe_ratio(0.1, 0.0, 500)
    assert probabilistic_sharpe_ratio(0.05, 0.1, 500) < 0.5
    # a two-point distribution (kurtosis = 1 + skew**2) at SR = 2 / skew has no sampling error
    assert probabilistic_sharpe_ratio(1.0, 0.5, 100, skew=2.0, kurtosis=5.0) == 1.0


def test_dsr_from_returns_measures_the_moments():
    rng = np.random.default_rng(7)
    returns = rng.standard_t(5, 2000) * 0.01 + 0.001
    returns[10] = np.nan                                   # a missing period is skipped
    d = deflated_sharpe_ratio(returns, trials=50, sharpe_variance=0.002)
    r = returns[~np.isnan(returns)]
    c = r - r.mean()
    m2 = np.mean(c ** 2)
    assert d.observations == 1999
    assert d.sharpe == pytest.approx(r.mean() / r.std(ddof=1))
    assert d.skew == pytest.approx(np.mean(c ** 3) / m2 ** 1.5)
    assert d.kurtosis == pytest.approx(np.mean(c ** 4) / m2 ** 2)   # non-excess
    assert d.kurtosis > 3
    same = deflated_sharpe_ratio(sharpe=d.sharpe, observations=1999, skew=d.skew, kurtosis=d.kurtosis,
                                 trials=50, sharpe_variance=0.002)
    assert same == d
    assert d.dsr == probabilistic_sharpe_ratio(d.sharpe, expected_max_sharpe(50, 0.002), 1999, d.skew, d.kurtosis)
    assert deflated_sharpe_ratio(pd.Series(returns), trials=50, sharpe_variance=0.002) == d


def test_dsr_falls_as_trials_grow():
    values = [deflated_sharpe_ratio(sharpe=0.1, observations=1000, trials=n, sharpe_variance=0.001).dsr
              for n in (1, 10, 100, 1000)]
    assert values == sorted(values, reverse=True)
    assert values[0] == probabilistic_sharpe_ratio(0.1, 0.0, 1000)


def test_dsr_errors_name_the_argument():
    with pytest.raises(TypeError, match="pass returns, or sharpe and observations, not both: sharpe"):
        deflated_sharpe_ratio([0.01, 0.02, -0.01], sharpe=0.1, trials=2, sharpe_variance=0.1)
    with pytest.raises(TypeError, match="needs the winner's returns, or sharpe and observations"):
        deflated_sharpe_ratio(sharpe=0.1, trials=2, sharpe_variance=0.1)
    with pytest.raises(ValueError, match="trials must be at least 1, got 0"):
        deflated_sharpe_ratio(sharpe=0.1, observations=100, trials=0, sharpe_variance=0.1)
    with pytest.raises(TypeError, match="trials must be an int, got float 2.5"):
        expected_max_sharpe(2.5, 0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="variance .* must be >= 0"):
        expected_max_sharpe(10, -0.1)
    with pytest.raises(ValueError, match="sharpe_variance must be a finite number"):
        deflated_sharpe_ratio(sharpe=0.1, observations=100, trials=3, sharpe_variance=math.nan)
    with pytest.raises(ValueError, match="observations must be at least 2, got 1"):
        probabilistic_sharpe_ratio(0.1, 0.0, 1)
    with pytest.raises(ValueError, match="not excess kurtosis"):
        probabilistic_sharpe_ratio(0.1, 0.0, 100, skew=0.0, kurtosis=0.0)   # excess kurtosis passed
    with pytest.raises(ValueError, match="returns are all equal"):
        deflated_sharpe_ratio([0.01] * 10, trials=2, sharpe_variance=0.1)
    with pytest.raises(ValueError, match="at least 3 non-NaN values"):
        deflated_sharpe_ratio([0.01, np.nan, 0.02], trials=2, sharpe_variance=0.1)
    with pytest.raises(ValueError, match="one series of period returns"):
        deflated_sharpe_ratio(np.zeros((5, 2)), trials=2, sharpe_variance=0.1)


# ---------------------------------------------------------------------------
# Probability of Backtest Overfitting
# ---------------------------------------------------------------------------


def noise(seed: int = 0, periods: int = 1000, trials: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, size=(periods, trials))


def test_pbo_of_pure_noise_is_near_one_half():
    result = probability_of_backtest_overfitting(noise(), blocks=16)
    assert isinstance(result, BacktestOverfitting)
    assert len(result.logits) == math.comb(16, 8) == 12_870
    assert (result.blocks, result.rows_per_block, result.trials) == (16, 62, 200)
    assert 0.35 <= result.pbo <= 0.65
    assert result.pbo == pytest.approx(0.3915, abs=1e-4)   # measured, seed 0
    assert 0.3 <= result.probability_of_loss <= 0.7
    # Noise picked in sample does not carry over: the degradation slope is not positive.
    assert result.slope < 0.1


def test_pbo_of_noise_averages_one_half_over_histories():
    pbos = [probability_of_backtest_overfitting(noise(seed, 600, 50), blocks=8).pbo for seed in range(30)]
    assert 0.42 <= float(np.mean(pbos)) <= 0.58


def test_pbo_of_a_planted_edge_is_near_zero():
    m = noise()
    m[:, 17] += 0.002                            # per-period Sharpe 0.2: a consistent edge
    result = probability_of_backtest_overfitting(m, blocks=16)
    assert result.pbo < 0.1
    assert result.pbo == pytest.approx(0.0384, abs=1e-4)   # measured, seed 0
    assert np.bincount(result.selected).argmax() == 17
    assert result.probability_of_loss < 0.1
    assert float(np.median(result.logits)) > 2


def test_pbo_is_deterministic_and_read_only():
    a = probability_of_backtest_overfitting(noise(3, 400, 30), blocks=10)
    b = probability_of_backtest_overfitting(noise(3, 400, 30), blocks=10)
    assert a.pbo == b.pbo
    for name in ("logits", "selected", "is_performance", "oos_performance"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not getattr(a, name).flags.writeable
    assert a.slope == b.slope and a.intercept == b.intercept


def reference_pbo(m: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSCV written out loop by loop, straight from the paper."""
    size = len(m) // blocks
    m = m[len(m) - size * blocks:]
    parts = np.split(m, blocks)
    logits, is_perf, oos_perf = [], [], []
    for chosen in combinations(range(blocks), blocks // 2):
        inside = np.vstack([parts[i] for i in chosen])
        outside = np.vstack([parts[i] for i in range(blocks) if i not in chosen])
        sr_is = inside.mean(0) / inside.std(0, ddof=1)
        sr_oos = outside.mean(0) / outside.std(0, ddof=1)
        best = int(np.argmax(sr_is))
        rank = (sr_oos < sr_oos[best]).sum() + 1
        w = rank / (m.shape[1] + 1)
        logits.append(math.log(w / (1 - w)))
        is_perf.append(sr_is[best])
        oos_perf.append(sr_oos[best])
    return np.array(logits), np.array(is_perf), np.array(oos_perf)


def test_pbo_matches_a_loop_by_loop_reference():
    m = noise(5, 203, 12)                         # 203 % 6 = 5 leading rows left out
    result = probability_of_backtest_overfitting(m, blocks=6)
    logits, is_perf, oos_perf = reference_pbo(m, 6)
    np.testing.assert_allclose(result.logits, logits, rtol=1e-12)
    np.testing.assert_allclose(result.is_performance, is_perf, rtol=1e-9)
    np.testing.assert_allclose(result.oos_performance, oos_perf, rtol=1e-9)
    assert result.pbo == np.mean(logits <= 0)
    slope, intercept = np.polyfit(is_perf, oos_perf, 1)
    assert result.slope == pytest.approx(slope) and result.intercept == pytest.approx(intercept)
    assert result.probability_of_loss == np.mean(oos_perf < 0)


def test_pbo_with_a_callable_metric_matches_the_built_in_one():
    m = noise(6, 240, 15)
    def sharpe(x: np.ndarray) -> np.ndarray:
        return x.mean(0) / x.std(0, ddof=1)
    fast = probability_of_backtest_overfitting(m, blocks=8)
    slow = probability_of_backtest_overfitting(m, blocks=8, metric=sharpe)
    np.testing.assert_allclose(slow.logits, fast.logits)
    np.testing.assert_allclose(slow.oos_performance, fast.oos_performance, rtol=1e-9)
    mean = probability_of_backtest_overfitting(m, blocks=8, metric="mean")
    by_hand = probability_of_backtest_overfitting(m, blocks=8, metric=lambda x: x.mean(0))
    np.testing.assert_allclose(mean.is_performance, by_hand.is_performance, rtol=1e-9)
    np.testing.assert_array_equal(mean.selected, by_hand.selected)


def test_pbo_compiled_pass_matches_the_callable_metric_with_gaps_and_flat_runs():
    # 16 blocks: 6,435 pairs of splits walked in chunks by the revolving door; gaps make
    # the per-block counts differ, a flat run at 0 and one flat above 0 test the edge cases.
    m = noise(8, 320, 12)
    m[np.random.default_rng(8).random(m.shape) < 0.1] = np.nan
    m[:, 4], m[:, 7] = 0.0, 0.001
    def sharpe(x: np.ndarray) -> np.ndarray:
        mean, std = np.nanmean(x, 0), np.nanstd(x, 0, ddof=1)
        flat = np.where(mean == 0.0, 0.0, np.copysign(np.inf, mean))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(std > 1e-15, mean / std, flat)
    fast = probability_of_backtest_overfitting(m, blocks=16)
    slow = probability_of_backtest_overfitting(m, blocks=16, metric=sharpe)
    np.testing.assert_array_equal(fast.selected, slow.selected)
    np.testing.assert_allclose(fast.logits, slow.logits)
    np.testing.assert_allclose(fast.is_performance, slow.is_performance, rtol=1e-9)
    np.testing.assert_allclose(fast.oos_performance, slow.oos_performance, rtol=1e-9)


def test_pbo_ties_take_the_mid_rank_and_nan_periods_are_skipped():
    same = np.tile(noise(4, 200, 1), (1, 10))    # ten identical runs: the winner ranks mid-field
    result = probability_of_backtest_overfitting(same, blocks=4)
    np.testing.assert_allclose(result.logits, 0.0, atol=1e-12)
    assert result.pbo == 1.0
    m = noise(8, 300, 10)
    m[:40, 2] = np.nan                           # a run that started later
    frame = pd.DataFrame(m, columns=[f"run{i}" for i in range(10)])
    result = probability_of_backtest_overfitting(frame, blocks=6)
    assert np.isfinite(result.logits).all()


def test_pbo_errors_name_the_argument():
    m = noise(0, 100, 5)
    with pytest.raises(ValueError, match="blocks must be even .* got 7"):
        probability_of_backtest_overfitting(m, blocks=7)
    with pytest.raises(ValueError, match="blocks must be at least 2, got 0"):
        probability_of_backtest_overfitting(m, blocks=0)
    with pytest.raises(TypeError, match="blocks must be an int"):
        probability_of_backtest_overfitting(m, blocks=4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="blocks=16 leaves fewer than 2 of performance's 20 rows per block: "
                                         "pass blocks <= 10"):
        probability_of_backtest_overfitting(m[:20], blocks=16)
    with pytest.raises(ValueError, match="blocks=200 leaves fewer than 2"):
        probability_of_backtest_overfitting(m, blocks=200)
    with pytest.raises(ValueError, match="at least 2 trials .* got 1"):
        probability_of_backtest_overfitting(m[:, :1], blocks=4)
    with pytest.raises(ValueError, match="2-D"):
        probability_of_backtest_overfitting(m[:, 0], blocks=4)
    bad = pd.DataFrame(m, columns=list("abcde"))
    bad["c"] = np.nan
    with pytest.raises(ValueError, match=r"performance has columns with no return at all \(only NaN\): \['c'\]"):
        probability_of_backtest_overfitting(bad, blocks=4)
    with pytest.raises(ValueError, match="metric must be one of .* got 'sortino'"):
        probability_of_backtest_overfitting(m, blocks=4, metric="sortino")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"metric must return one value per trial, shape \(5,\)"):
        probability_of_backtest_overfitting(m, blocks=4, metric=lambda x: x.mean())


# ---------------------------------------------------------------------------
# SPA and White's Reality Check (arch)
# ---------------------------------------------------------------------------


def spa_data(edge: float) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(11)
    market = rng.normal(0.0003, 0.01, 500)
    runs = pd.DataFrame(rng.normal(0.0, 0.01, (500, 20)))
    runs[0] += edge
    return market, runs


@pytest.mark.parametrize("bootstrap, block_size, studentize", [
    ("stationary", None, True), ("circular", 10, True), ("mbb", 5, False)])
def test_spa_pvalues_equal_arch_on_the_losses(bootstrap, block_size, studentize):
    arch_bootstrap = pytest.importorskip("arch.bootstrap")
    market, runs = spa_data(0.001)
    ours = superior_predictive_ability(market, runs, reps=300, block_size=block_size, bootstrap=bootstrap,
                                       seed=0, studentize=studentize)
    spa = arch_bootstrap.SPA(-market, -runs.to_numpy(), block_size=block_size, reps=300, bootstrap=bootstrap,
                             studentize=studentize, seed=0)
    spa.compute()
    p = spa.pvalues
    assert ours == SpaPValues(lower=p["lower"], consistent=p["consistent"], upper=p["upper"])
    assert ours.lower <= ours.consistent <= ours.upper


def test_spa_finds_a_real_edge_and_not_noise():
    pytest.importorskip("arch")
    market, runs = spa_data(0.004)
    assert superior_predictive_ability(market, runs, reps=300).consistent < 0.05
    market, runs = spa_data(0.0)
    assert superior_predictive_ability(market, runs, reps=300).consistent > 0.1
    one = superior_predictive_ability(market, runs[0], reps=100)        # a single run, 1-D
    assert one == superior_predictive_ability(market, runs[[0]], reps=100)


def test_spa_errors_name_the_argument():
    pytest.importorskip("arch")
    market, runs = spa_data(0.0)
    with pytest.raises(ValueError, match=r"runs_returns must be a \(500, runs\) matrix"):
        superior_predictive_ability(market, runs[:400])
    with pytest.raises(ValueError, match="benchmark_returns must be one series"):
        superior_predictive_ability(runs, runs)
    with pytest.raises(ValueError, match="runs_returns holds NaN"):
        superior_predictive_ability(market, runs.where(runs > -0.02))
    with pytest.raises(ValueError, match="bootstrap must be one of"):
        superior_predictive_ability(market, runs, bootstrap="iid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_size must be between 1 and the 500 periods, got 501"):
        superior_predictive_ability(market, runs, block_size=501)
    with pytest.raises(ValueError, match="reps must be at least 1"):
        superior_predictive_ability(market, runs, reps=0)


def test_spa_without_arch_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "arch", None)
    monkeypatch.setitem(sys.modules, "arch.bootstrap", None)
    with pytest.raises(ImportError, match=r'pip install "nbbacktest\[credibility\]"'):
        superior_predictive_ability(np.zeros(10), np.zeros((10, 2)))
