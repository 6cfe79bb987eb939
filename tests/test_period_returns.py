import numpy as np
import pytest

import nbbacktest as nbb
from nbbacktest.engine.backtest import PreparedData, Settings, simulate, simulate_stats
from nbbacktest.engine.examples import SmaCross
from nbbacktest.engine.period_returns import period_layout, period_returns, period_returns_into


def per_bar(equity, cash):
    values = np.concatenate(([cash], equity))
    return values[1:] / values[:-1] - 1.0


@pytest.mark.parametrize(("bars", "most", "expected"), [
    (2500, 2520, (2500, 1)), (2520, 2520, (2520, 1)), (2521, 2520, (1261, 2)),
    (10_000, 2520, (2500, 4)), (10, 4, (4, 3)), (1, 5, (1, 1)),
])
def test_period_layout(bars, most, expected):
    periods, per = period_layout(bars, most)
    assert (periods, per) == expected
    assert periods <= most and (periods - 1) * per < bars <= periods * per


def test_period_layout_refuses_nothing():
    with pytest.raises(ValueError, match="at least 1"):
        period_layout(0, 10)


def test_per_bar_returns_start_from_the_cash():
    equity = np.array([101.0, 99.0, 102.0])
    assert period_returns(equity, 100.0).tolist() == per_bar(equity, 100.0).tolist()


@pytest.mark.parametrize("per", [2, 3, 7])
def test_aggregated_periods_compound_the_bars(per):
    rng = np.random.default_rng(3)
    equity = 1000.0 * np.cumprod(1.0 + rng.normal(0, 0.01, 101))
    got = period_returns(equity, 1000.0, per)
    bars = per_bar(equity, 1000.0)
    expected = [np.prod(1.0 + bars[k:k + per]) - 1.0 for k in range(0, len(bars), per)]
    assert len(got) == -(-101 // per)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_into_float32_rounds_once_and_checks_the_length():
    equity = np.array([100.5, 100.25, 101.0, 99.0])
    out = np.empty(4, dtype=np.float32)
    period_returns_into(equity, 100.0, out, 1)
    assert out.tolist() == per_bar(equity, 100.0).astype(np.float32).tolist()
    with pytest.raises(ValueError, match="make 2"):
        period_returns_into(equity, 100.0, np.empty(3), 2)


@pytest.mark.parametrize("per", [1, 4])
def test_simulate_stats_hook_keeps_the_stats_and_gives_the_returns(per):
    data = PreparedData.from_frame(nbb.load_sample("daily"))
    settings = Settings(commission=0.001)
    out = np.full(-(-len(data) // per), np.nan, dtype=np.float32)
    plain = simulate_stats(SmaCross(10, 40), data, settings, 7)
    hooked = simulate_stats(SmaCross(10, 40), data, settings, 7, returns_out=out, bars_per_period=per)
    assert hooked == plain  # bit for bit
    equity = simulate(SmaCross(10, 40), data, settings, 7).equity
    assert out.tolist() == period_returns(equity, settings.cash, per).astype(np.float32).tolist()
