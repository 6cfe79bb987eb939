from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import Fragile, SmaCross

import nbbacktest as nbb
from nbbacktest.engine import overfitting
from nbbacktest.errors import SweepError
from nbbacktest.parallel import credibility as module
from nbbacktest.parallel.credibility import Credibility
from nbbacktest.parallel.run_returns import market_returns

GRID = {"fast": [5, 10, 20, 30], "slow": [40, 60, 80, 120]}
FIELDS = ("metric", "runs", "finished", "failed", "cancelled", "kept", "periods", "bars_per_period",
          "best_index", "best_trades", "min_trades", "dsr", "pbo", "spa", "notes", "flags")


def shuffled(data: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The sample with its bars' close-to-close moves in random order and no drift: no edge."""
    close = data["Close"].to_numpy()
    moves = np.random.default_rng(seed).permutation(np.diff(np.log(close)))
    moves -= moves.mean()
    new_close = close[0] * np.exp(np.concatenate(([0.0], np.cumsum(moves))))
    scale = new_close / close
    out = data.copy()
    for column in ("Open", "High", "Low", "Close"):
        out[column] = data[column].to_numpy() * scale
    return out


@pytest.fixture(scope="module")
def sweep(daily):
    return nbb.sweep(SmaCross, daily, grid=GRID, progress=False)


def test_fields_are_the_agreed_ones(sweep):
    assert tuple(Credibility.__dataclass_fields__) == FIELDS
    c = sweep.credibility(blocks=8, reps=200)
    assert (c.metric, c.runs, c.finished, c.failed, c.cancelled, c.kept) == ("sharpe", 16, 16, 0, 0, 16)
    assert (c.periods, c.bars_per_period, c.best_index) == (2500, 1, sweep.best_index)
    assert c.best_trades == sweep.results["trades"][sweep.best_index]
    assert sweep.credibility(blocks=8, reps=200) is c  # cached
    assert repr(c) == c.summary() and len(c.summary().splitlines()) == 2


def test_numbers_equal_the_statistics_called_directly(sweep, daily):
    c = sweep.credibility(blocks=8, reps=200, seed=3)
    rows = list(range(16))
    matrix = sweep.kept_returns.matrix(rows)
    table = sweep.results
    per_period = table["sharpe"] / np.sqrt(table["periods_per_year"])
    dsr = overfitting.deflated_sharpe_ratio(matrix[:, sweep.best_index], trials=16,
                                            sharpe_variance=float(np.var(per_period, ddof=1)))
    assert c.dsr == dsr
    pbo = overfitting.probability_of_backtest_overfitting(matrix, 8, "sharpe")
    assert c.pbo.pbo == pbo.pbo and np.array_equal(c.pbo.logits, pbo.logits)
    spa = overfitting.superior_predictive_ability(market_returns(daily, sweep.spec.returns), matrix,
                                                  reps=200, seed=3)
    assert c.spa == spa


def test_returns_metric_ranks_by_the_mean(daily):
    sweep = nbb.sweep(SmaCross, daily, grid=GRID, metric="return_pct", progress=False)
    c = sweep.credibility(blocks=4, reps=20)
    matrix = sweep.kept_returns.matrix(range(16))
    assert c.pbo.pbo == overfitting.probability_of_backtest_overfitting(matrix, 4, "mean").pbo


def test_a_shuffled_sample_looks_overfit_and_the_real_one_less(daily):
    grid = {"fast": [3, 5, 8, 13, 21, 34], "slow": [30, 50, 80, 130, 210]}
    real = nbb.sweep(SmaCross, daily, grid=grid, progress=False).credibility(blocks=8, reps=100)
    noise = [nbb.sweep(SmaCross, shuffled(daily, seed), grid=grid, progress=False)
             .credibility(blocks=8, reps=100) for seed in (1, 2, 3)]
    # PBO of noise is itself noisy (0.51, 0.97, 0.86 here): its mean, against the real 0.26.
    assert np.mean([c.pbo.pbo for c in noise]) >= 0.5 > real.pbo.pbo
    assert max(c.dsr.dsr for c in noise) < min(0.8, real.dsr.dsr)


def test_failures_count_as_trials(daily):
    sweep = nbb.sweep(Fragile, daily, grid={"fast": [5, 10, 20], "slow": [40, 80]}, progress=False)
    c = sweep.credibility(blocks=4, reps=20)
    assert (c.runs, c.finished, c.failed, c.kept) == (6, 4, 2, 4)
    assert c.dsr.trials == 6


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"blocks": 7}, "blocks=7"), ({"blocks": 0}, "blocks="), ({"blocks": 2000}, "blocks=2000"),
    ({"reps": 0}, "reps="), ({"seed": -1}, "seed="), ({"blocks": 8.0}, "blocks="),
])
def test_bad_arguments_are_named(sweep, kwargs, named):
    with pytest.raises(SweepError, match=named):
        sweep.credibility(**kwargs)


def test_refusals(daily, small_universe):
    for sweep, why in [
        (nbb.sweep(SmaCross, daily, grid=GRID, metric="trades", progress=False), "metric must be"),
        (nbb.sweep(SmaCross, daily, grid=GRID, returns_budget=0, progress=False), "returns_budget=0"),
        (nbb.sweep(SmaCross, small_universe, grid={"fast": [5]}, progress=False), "symbols="),
    ]:
        with pytest.raises(SweepError, match=why):
            sweep.credibility()


def test_flags_and_notes(daily, monkeypatch):
    def no_arch(*args, **kwargs):
        raise ImportError("no arch")

    monkeypatch.setattr(module, "superior_predictive_ability", no_arch)
    sweep = nbb.sweep(SmaCross, daily.iloc[:400], grid={"fast": [50, 60], "slow": [200, 250]},
                      progress=False)
    c = sweep.credibility(blocks=4, reps=10)
    assert c.spa is None and any("arch" in note for note in c.notes)
    assert f"the best run has {c.best_trades} trade" in c.flags[0]
    assert "SPA n/a" in c.summary()


def test_load_sweep_and_resume_give_the_same_credibility(daily, tmp_path):
    first = nbb.sweep(SmaCross, daily, grid=GRID, save=tmp_path, returns_budget=6 * 2500 * 4,
                      progress=False).credibility(blocks=4, reps=50)
    assert "subsample of 5 of 16 runs" in first.notes[0]
    loaded = nbb.load_sweep(tmp_path).credibility(blocks=4, reps=50)
    (tmp_path / "returns.npz").unlink()
    resumed = nbb.resume(tmp_path, progress=False).credibility(blocks=4, reps=50)
    for other in (loaded, resumed):
        assert (other.dsr, other.spa, other.kept, other.flags) == (first.dsr, first.spa, first.kept, first.flags)
        assert np.array_equal(other.pbo.logits, first.pbo.logits)
