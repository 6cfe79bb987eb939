"""nbbacktest.engine.curve_kernel: the compiled passes against numpy, curve by curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nbbacktest.engine.curve_kernel import NO_MARKET, curve_pass, deviation_pass, equity_of_segments
from nbbacktest.engine.ledger import Ledger
from nbbacktest.engine.stat_formulas import Market


def numpy_facts(equity: np.ndarray, cash: float, close: np.ndarray, times: np.ndarray) -> tuple:
    """What curve_pass counts, as numpy array operations (the summarize of before)."""
    with np.errstate(all="ignore"):
        centred = Market(close).centred if len(close) else close
        r = equity[1:] / equity[:-1] - 1.0
        peak = np.maximum(np.maximum.accumulate(equity), cash)
        ratio = equity / peak
        at_peak = equity >= peak
        sums = (float(r.sum()), float((r * centred).sum()) if len(centred) else 0.0,
                float((np.minimum(r, 0.0) ** 2).sum()), float(np.maximum.accumulate(equity)[-1]),
                float(ratio.min()))
    # Drawdown periods from the flips of at_peak (the algorithm of the numpy version).
    flips = list((at_peak[1:] != at_peak[:-1]).nonzero()[0])
    bounds = ([0] if not at_peak[0] else []) + [
        f + 1 if (not at_peak[f]) else f for f in flips]
    starts, ends = bounds[0::2], bounds[1::2]
    spans = [int(times[e] - times[s]) for s, e in zip(starts, ends)]
    depths = [float(ratio[s:e].min()) for s, e in zip(starts, ends)]
    open_start = -1
    if len(starts) > len(ends):
        depths.append(float(ratio[starts[-1]:].min()))
        open_start = int(times[starts[-1]])
    return (*sums, len(starts), max(spans, default=0), sum(spans), sum(depths), open_start)


def curves(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    walk = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, 500))
    flat_then_moving = np.concatenate((np.full(50, 100.0), walk[:200]))
    below_from_the_start = 95.0 + np.abs(rng.normal(0.0, 1.0, 100)).cumsum() * 0.01
    return [walk, flat_then_moving, below_from_the_start, np.array([100.0]), np.array([90.0, 80.0]),
            np.array([100.0, 90.0, 100.0, 100.0, 80.0])]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curve_pass_counts_what_numpy_does(seed):
    rng = np.random.default_rng(seed)
    for equity in curves(seed):
        times = np.cumsum(rng.integers(1, 5, len(equity)))
        close = 50.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, len(equity)))
        for market in (close, NO_MARKET):
            mean_q = Market(market).mean_q if len(market) else 0.0
            got = curve_pass(equity, 100.0, market, mean_q, times)
            expected = numpy_facts(equity, 100.0, market, times)
            assert got[5:8] == expected[5:8] and got[9] == expected[9]  # counts and times exactly
            np.testing.assert_allclose(got[:5] + (got[8],), expected[:5] + (expected[8],),
                                       rtol=1e-12, atol=1e-15)


def test_a_blown_up_curve_gives_nan_where_numpy_does():
    equity = np.array([100.0, 0.0, 0.0, -5.0])  # 0 / 0 returns, then -inf
    got = curve_pass(equity, 100.0, NO_MARKET, 0.0, np.arange(4))
    assert math.isnan(got[0]) and math.isnan(got[2])  # the returns' sums
    with_nan = np.array([100.0, np.nan, 101.0])
    facts = curve_pass(with_nan, 100.0, NO_MARKET, 0.0, np.arange(3))
    assert math.isnan(facts[3]) and math.isnan(facts[4])  # peak and deepest ratio


def test_deviation_pass_is_the_second_pass_of_the_variance():
    equity = curves(3)[0]
    r = equity[1:] / equity[:-1] - 1.0
    mean = float(r.mean())
    assert deviation_pass(equity, mean) == pytest.approx(float(((r - mean) ** 2).sum()), rel=1e-12)


def test_equity_of_segments_has_the_bits_of_repeat_and_allocates_into_out():
    rng = np.random.default_rng(4)
    n = 1000
    bars = np.sort(rng.choice(n, 40, replace=False))
    bars[5] = bars[4]  # two fills on one bar: an empty segment
    units = rng.normal(0.0, 10.0, 40).tolist()
    cash = rng.normal(1e4, 100.0, 40).tolist()
    ledger = Ledger(1e4, n, bars, units, cash, np.empty(0), np.empty(0), [])
    close = 100.0 + rng.normal(0.0, 1.0, n).cumsum()
    out = np.full(n, np.nan)
    equity_of_segments(ledger._lengths, ledger.units, ledger.cash, close, out)
    expected = np.repeat(ledger.cash, ledger._lengths) + np.repeat(ledger.units, ledger._lengths) * close
    assert out.tobytes() == expected.tobytes()
