"""Portfolio strategies (nbbacktest.engine.portfolio): construction of weights from scores,
params, target frames (weights on some bar times), rebalance rules that never fire, and bad
input.

The simulator's rules are in test_portfolio_sim, the compiled kernel in
test_portfolio_kernel, the result's views in test_portfolio_result."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from portfolio_cases import (
    HAND,
    HAND_INDEX,
    TABLES,
    Fixed,
    Momentum,
    OneSignal,
    Table,
    five_symbols,
    hand_result,
    hand_universe,
    sample_universe,
    traded_bars,
)

import nbbacktest as nbb
from nbbacktest.engine.portfolio import check_portfolio_params, construct_weights, rolling_betas
from nbbacktest.engine.universe import Universe
from nbbacktest.errors import DataError, ParamError, StrategyError


class Exploding(nbb.PortfolioStrategy):
    zero = 0

    def scores(self, universe):
        return universe.close.pct_change(int(1 / self.zero))


@pytest.fixture(scope="module")
def hand():
    return hand_result()


@pytest.fixture(scope="module")
def sample() -> Universe:
    return sample_universe()


@pytest.fixture(scope="module")
def five(sample) -> Universe:
    return five_symbols(sample)


# ----------------------------------------------------------------- 1. target frames


def test_weights_on_some_bar_times_hold_until_the_next_row(hand):
    TABLES["hand-sparse"] = TABLES["hand"].iloc[[0, 2]]  # the two decisions only
    sparse = nbb.backtest(Table(key="hand-sparse"), HAND, cash=10_000, commission=0.001)
    assert np.array_equal(sparse.equity.to_numpy(), hand.equity.to_numpy())
    pd.testing.assert_frame_equal(sparse.target_weights, hand.target_weights)


# ----------------------------------------------------------------- 2. construction

EVERYWHERE = np.ones((1, 6), dtype=bool)
SIX = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])


def build(scores, tradable=None, **options):
    scores = np.atleast_2d(np.asarray(scores, float))
    tradable = np.ones(scores.shape, bool) if tradable is None else np.atleast_2d(tradable)
    settings = {"long": 0.2, "short": 0.0, "weighting": "equal", "gross": 1.0, "neutral": "none",
                **options}
    return construct_weights(scores, tradable, **settings)


def test_equal_weights_long_only_and_long_short():
    assert build(SIX, long=1 / 3).tolist() == [[0, 0, 0, 0, 0.5, 0.5]]
    assert build(SIX, long=1 / 3, short=1 / 3).tolist() == [[-0.25, -0.25, 0, 0, 0.25, 0.25]]
    # legs of unequal count, neutral="none": each sized by its share of the raw weights
    np.testing.assert_allclose(build(SIX, long=1 / 3, short=1 / 6), [[-1 / 3, 0, 0, 0, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(build(SIX, long=1 / 3, short=1 / 6, neutral="dollar"),
                               [[-0.5, 0, 0, 0, 0.25, 0.25]])
    np.testing.assert_allclose(build(SIX, long=1 / 3, short=1 / 3, gross=2.0),
                               [[-0.5, -0.5, 0, 0, 0.5, 0.5]])


def test_score_weights_follow_the_distance_from_the_median():
    # median 3.5: the longs 5 and 6 are 1.5 and 2.5 away, the shorts 1 and 2 2.5 and 1.5
    weights = build(SIX, long=1 / 3, short=1 / 3, weighting="score")
    np.testing.assert_allclose(weights, [[-2.5 / 8, -1.5 / 8, 0, 0, 1.5 / 8, 2.5 / 8]])
    # a leg of identical scores has no distance to weigh by: equal weights
    np.testing.assert_allclose(build([[1.0, 1.0, 1.0, 1.0]], long=0.5, weighting="score"),
                               [[0.5, 0.5, 0, 0]])


def test_score_weights_on_rows_with_nothing_ranked_warn_nothing():
    scores = np.array([[np.nan] * 4, [1.0, 2.0, 3.0, 4.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "All-NaN slice" was one, before the fix
        weights = build(scores, long=0.25, short=0.25, weighting="score")
    np.testing.assert_allclose(weights, [[0, 0, 0, 0], [-0.5, 0, 0, 0.5]])


def test_beta_neutral_legs_hedge_each_other():
    scores = np.array([[6.0, 5.0, 3.0, 2.0, 1.0, 0.0]])
    betas = np.array([[1.5, 0.5, 1.0, 1.0, 2.0, 1.0]])  # long beta 1.0, short beta 1.5
    weights = build(scores, long=1 / 3, short=1 / 3, neutral="beta", betas=betas)
    np.testing.assert_allclose(weights, [[0.3, 0.3, 0, 0, -0.2, -0.2]])
    assert (weights * betas).sum() == pytest.approx(0.0, abs=1e-12)
    assert np.abs(weights).sum() == pytest.approx(1.0)
    # a missing beta counts as 1: with none known, beta neutral is dollar neutral
    unknown = build(scores, long=1 / 3, short=1 / 3, neutral="beta", betas=np.full((1, 6), np.nan))
    np.testing.assert_allclose(unknown, build(scores, long=1 / 3, short=1 / 3, neutral="dollar"))


def test_beta_neutral_portfolio_has_no_beta_to_its_benchmark(sample):
    small = sample.select(list(sample)[:8])
    result = nbb.backtest(Momentum(lookback=40, long=0.25, short=0.25, neutral="beta", rebalance="M"), small)
    benchmark = small.returns.mean(axis=1).to_numpy()
    betas = rolling_betas(small.returns.to_numpy(), benchmark)
    betas = np.where(np.isfinite(betas), betas, 1.0)
    targets = result.target_weights.to_numpy()
    held = np.abs(targets).sum(axis=1) > 0
    assert held.sum() > 2000
    np.testing.assert_allclose((targets * betas).sum(axis=1)[held], 0.0, atol=1e-12)
    np.testing.assert_allclose(np.abs(targets).sum(axis=1)[held], 1.0)
    long_leg = np.where(targets > 0, targets, 0.0).sum(axis=1)[held]
    assert np.abs(long_leg - 0.5).max() > 0.05  # legs sized by beta, not half each


def test_ties_keep_column_order_and_both_legs_full():
    assert build([[1.0, 1.0, 1.0, 1.0]], long=0.25, short=0.25).tolist() == [[0.5, -0.5, 0, 0]]
    assert build([[3.0, 1.0, 1.0, 1.0]], long=0.25, short=0.25).tolist() == [[0.5, -0.5, 0, 0]]
    assert build([[2.0, 2.0, 2.0, 1.0]], long=0.5).tolist() == [[0.5, 0.5, 0, 0]]
    assert build([[1.0, 1.0, 1.0, 1.0]], long=0.25, short=0.25, neutral="dollar").tolist() == \
        [[0.5, -0.5, 0, 0]]


def test_nan_scores_and_symbols_that_cannot_trade_are_not_ranked():
    scores = [[np.nan, 2.0, 3.0, 4.0, 5.0, 6.0]]
    assert build(scores, long=0.2, short=0.2).tolist() == [[0, -0.5, 0, 0, 0, 0.5]]
    tradable = [[True, True, True, True, True, False]]
    assert build(SIX, tradable, long=0.2, short=0.2).tolist() == [[-0.5, 0, 0, 0, 0.5, 0]]
    assert build([[np.nan] * 6]).tolist() == [[0.0] * 6]


@pytest.mark.parametrize(("scores", "long", "short", "expected"), [
    ([[5.0, np.nan, np.nan]], 0.5, 0.0, [[0, 0, 0]]),        # n=1: floor(0.5) = 0 and no minimum
    ([[5.0, np.nan, np.nan]], 1.0, 0.0, [[1, 0, 0]]),
    ([[5.0, 1.0, np.nan]], 0.1, 0.1, [[0.5, -0.5, 0]]),      # n=2: at least one per leg
    ([[5.0, 1.0, 3.0]], 0.5, 0.5, [[0.5, -0.5, 0]]),         # n=3: floor(1.5) = 1 each
    ([[5.0, 1.0, 3.0]], 0.7, 0.3, [[1 / 3, -1 / 3, 1 / 3]]),  # 2 long, 1 short: legs 2/3 and 1/3
])
def test_small_numbers_of_symbols(scores, long, short, expected):
    np.testing.assert_allclose(build(scores, long=long, short=short), expected, atol=1e-15)


def test_long_plus_short_beyond_one_is_rejected(sample):
    with pytest.raises(ParamError, match=r"Momentum: long \+ short = 1.1 is more than 1"):
        check_portfolio_params({"long": 0.6, "short": 0.5}, None, "Momentum")
    with pytest.raises(ParamError, match=r"long \+ short = 1.2 is more than 1"):
        nbb.backtest(Momentum(long=0.6, short=0.6), sample)


# ----------------------------------------------------------------- 3. rebalance rules


def test_a_rule_that_never_fires_is_an_error_naming_rebalance(five):
    short = five.select(list(five)[:2])
    sixty = Universe(short.block[:, :60], short.index[:60], list(short))
    with pytest.raises(DataError, match=r"rebalance='Y' never fires on this universe \(60 bars"):
        nbb.backtest(Fixed(rebalance="Y"), sixty)
    assert len(traded_bars(nbb.backtest(Fixed(rebalance="M"), sixty))) == 2  # January's and February's ends


# ----------------------------------------------------------------- 4. bad input


def test_weights_with_an_unknown_symbol_name_it_with_a_hint(hand):
    TABLES["typo"] = TABLES["hand"].rename(columns={"C": "CC"})
    with pytest.raises(DataError, match=r"Table.weights\(\) has 1 column\(s\) not in the universe, first"
                                        r" 'CC'\. Did you mean: C\?"):
        nbb.backtest(Table(key="typo"), HAND)


def test_weights_on_times_that_are_not_bars(hand):
    TABLES["late"] = TABLES["hand"].set_axis(HAND_INDEX + pd.Timedelta(hours=12))
    with pytest.raises(DataError, match=r"has 6 time\(s\) that are not bars of the universe, first"
                                        r" 2024-01-01 12:00"):
        nbb.backtest(Table(key="late"), HAND)


def test_nan_weights_are_flat_and_infinite_ones_an_error(hand):
    TABLES["nan"] = TABLES["hand"].where(TABLES["hand"] != -0.2)  # C NaN throughout
    TABLES["zero"] = TABLES["nan"].fillna(0.0)
    nan = nbb.backtest(Table(key="nan"), HAND, commission=0.001)
    assert np.array_equal(nan.equity, nbb.backtest(Table(key="zero"), HAND, commission=0.001).equity)
    assert (nan.positions["C"] == 0).all()
    TABLES["inf"] = TABLES["hand"].replace(-0.3, -np.inf)
    with pytest.raises(DataError, match=r"has 4 infinite value\(s\), first for 'B' at 2024-01-03"):
        nbb.backtest(Table(key="inf"), HAND)


def test_gross_beyond_leverage_is_an_error_unless_leverage_allows_it(hand):
    TABLES["heavy"] = TABLES["hand"] * 1.5
    with pytest.raises(DataError, match=r"gross exposure \(sum of \|weights\|\) of 1\.5 at 2024-01-01,"
                                        r" beyond the leverage limit of 1, on 6 bar\(s\); pass leverage=1\.5"):
        nbb.backtest(Table(key="heavy"), HAND)
    levered = nbb.backtest(Table(key="heavy"), HAND, leverage=1.5)
    a1 = levered.positions["A"].iloc[1]
    assert a1 == pytest.approx(0.75 * 10_000 / 100)
    with pytest.raises(ParamError, match=r"gross=2 is beyond the leverage limit of 1; pass leverage=2"):
        nbb.backtest(Momentum(gross=2.0), hand_universe())


class WrongShape(nbb.PortfolioStrategy):
    def scores(self, universe):
        return universe.close.to_numpy()[:-1]


class SeriesWeights(nbb.PortfolioStrategy):
    def weights(self, universe):
        return universe.close["A"] * 0 + 0.5


def test_frames_of_the_wrong_kind():
    with pytest.raises(DataError, match=r"WrongShape.scores\(\) returned an array of shape \(5, 3\); the"
                                        r" universe is 6 bars x 3 symbols"):
        nbb.backtest(WrongShape(), HAND)
    with pytest.raises(DataError, match=r"SeriesWeights.weights\(\) returned a Series; return a DataFrame"):
        nbb.backtest(SeriesWeights(), HAND)


def test_bad_construction_and_rebalance_params():
    with pytest.raises(ParamError, match=r"neutral='dollar' needs both legs \(long > 0 and short > 0\),"
                                         r" got long=0.2, short=0"):
        nbb.backtest(Momentum(neutral="dollar"), HAND)
    with pytest.raises(ParamError, match=r"rebalance='monthly' is not a rule; use 'change', 'D'"):
        nbb.backtest(Fixed(rebalance="monthly"), HAND)


def test_data_of_the_wrong_kind(sample):
    with pytest.raises(DataError, match=r"Fixed is a portfolio strategy: it needs a universe"):
        nbb.backtest(Fixed(), sample["AAA"])
    with pytest.raises(DataError, match=r"backtest\(\) runs one instrument but data is a universe of 10"):
        nbb.backtest(OneSignal(), sample)


def test_options_that_are_not_for_portfolios(hand):
    with pytest.raises(TypeError, match=r"trade_start is for single-instrument strategies"):
        nbb.backtest(Fixed(), HAND, trade_start=2)
    with pytest.raises(ParamError, match=r"a portfolio backtest takes commission as a fraction or a"
                                         r" \(fixed, fraction\) pair"):
        nbb.backtest(Fixed(), HAND, commission=lambda size, price: 1.0)


def test_a_class_defining_both_weights_and_scores_is_refused():
    with pytest.raises(TypeError, match=r"PortfolioStrategy 'Both' defines both weights\(\) and scores\(\)"):
        class Both(nbb.PortfolioStrategy):
            def weights(self, universe):
                return universe.close * 0

            def scores(self, universe):
                return universe.close


def test_an_exception_in_scores_names_the_class():
    with pytest.raises(StrategyError, match=r"Exploding\(long=0.2, .*\): scores raised ZeroDivisionError") \
            as caught:
        nbb.backtest(Exploding(), HAND)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
