"""Tests for nbbacktest.engine.metrics: every statistic against hand arithmetic."""

from __future__ import annotations

import doctest
import math
import pathlib
import pickle
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from nbbacktest.engine import metrics
from nbbacktest.engine.metrics import (
    NUMERIC_STATS,
    STAT_LABELS,
    STAT_NAMES,
    compute_stats,
    periods_per_year,
)

DAY = pd.Timedelta(days=1)
SQRT_365_25 = math.sqrt(365.25)  # 4 daily bars over 3 days: bpy = 3 / (3 / 365.25)


def ns(index: pd.DatetimeIndex) -> np.ndarray:
    """What the simulator passes: int64 nanoseconds (pandas 3 defaults to us)."""
    return index.as_unit("ns").asi8


def daily(n: int, start: str = "2024-01-01") -> np.ndarray:
    return ns(pd.date_range(start, periods=n, freq="D"))


def stats(
    equity: Sequence[float],
    *,
    index: np.ndarray | None = None,
    initial_cash: float = 100.0,
    close: Sequence[float] | None = None,
    in_market: Sequence[bool] | None = None,
    pnl: Sequence[float] = (),
    rets: Sequence[float] = (),
    tz: object = None,
) -> dict[str, object]:
    n = len(equity)
    return compute_stats(
        daily(n) if index is None else index,
        np.array(equity, dtype=float),
        initial_cash,
        np.ones(n) if close is None else np.array(close, dtype=float),
        np.zeros(n, bool) if in_market is None else np.array(in_market, bool),
        np.array(pnl, dtype=float),
        np.array(rets, dtype=float),
        tz=tz,
    )


def is_nan(x: object) -> bool:
    return isinstance(x, float) and math.isnan(x)


# --- the worked example: equity [100, 110, 99, 121] over 4 daily dates -------------

@pytest.fixture(scope="module")
def example() -> dict[str, object]:
    return stats(
        [100.0, 110.0, 99.0, 121.0],
        close=[10.0, 11.0, 10.0, 12.0],
        in_market=[True, True, True, False],
        pnl=[10.0, -5.0, 16.0],
        rets=[0.10, -0.05, 0.16],
    )


def test_example_dates(example: dict[str, object]) -> None:
    assert example["start"] == pd.Timestamp("2024-01-01")
    assert example["end"] == pd.Timestamp("2024-01-04")
    assert example["duration"] == 3 * DAY
    # 3 intervals over 3 / 365.25 years
    assert example["periods_per_year"] == pytest.approx(365.25)


def test_example_equity_and_returns(example: dict[str, object]) -> None:
    assert example["equity_final"] == 121.0
    assert example["equity_peak"] == 121.0
    assert example["return_pct"] == pytest.approx(21.0)  # 121 / 100 - 1
    assert example["buy_hold_return_pct"] == pytest.approx(20.0)  # 12 / 10 - 1
    # 1.21 over 3 days, compounded to a year of 365.25 days
    assert example["cagr_pct"] == pytest.approx((1.21 ** (365.25 / 3) - 1) * 100)


def test_example_risk_ratios(example: dict[str, object]) -> None:
    # r = [100/100-1, 110/100-1, 99/110-1, 121/99-1] = [0, 1/10, -1/10, 2/9]
    # mean = (2/9) / 4 = 1/18
    # deviations: -1/18, 2/45, -7/45, 1/6 -> squares sum to 462/8100
    # std(ddof=1) = sqrt(462/8100 / 3) = sqrt(154) / 90
    std = math.sqrt(154) / 90
    assert example["volatility_ann_pct"] == pytest.approx(std * SQRT_365_25 * 100)
    # sharpe = (1/18) / (sqrt(154)/90) * sqrt(365.25) = 5 / sqrt(154) * sqrt(365.25)
    assert example["sharpe"] == pytest.approx(5 / math.sqrt(154) * SQRT_365_25)
    assert example["sharpe"] == pytest.approx(7.700249, rel=1e-6)
    # downside deviation = sqrt(mean([0, 0, 0.01, 0])) = sqrt(0.0025) = 0.05
    assert example["sortino"] == pytest.approx((1 / 18) / 0.05 * SQRT_365_25)


def test_example_drawdown(example: dict[str, object]) -> None:
    # running peak [100, 110, 110, 121]: worst is 99 / 110 - 1 = -10 %
    assert example["max_drawdown_pct"] == pytest.approx(-10.0)
    assert example["calmar"] == pytest.approx(example["cagr_pct"] / 10.0)
    # peak on Jan 2, back above it on Jan 4
    assert example["max_drawdown_duration"] == 2 * DAY


def test_example_trades(example: dict[str, object]) -> None:
    assert example["trades"] == 3
    assert example["win_rate_pct"] == pytest.approx(200 / 3)  # 2 of 3 with pnl > 0
    assert example["best_trade_pct"] == pytest.approx(16.0)
    assert example["worst_trade_pct"] == pytest.approx(-5.0)
    assert example["avg_trade_pct"] == pytest.approx(7.0)  # (10 - 5 + 16) / 3
    assert example["profit_factor"] == pytest.approx(5.2)  # (10 + 16) / 5
    assert example["exposure_time_pct"] == 75.0  # 3 of 4 bars


def test_example_types(example: dict[str, object]) -> None:
    assert tuple(example) == STAT_NAMES
    assert type(example["start"]) is pd.Timestamp
    assert type(example["end"]) is pd.Timestamp
    assert type(example["duration"]) is pd.Timedelta
    assert type(example["max_drawdown_duration"]) is pd.Timedelta
    assert type(example["trades"]) is int
    for key in NUMERIC_STATS:
        if key != "trades":
            assert type(example[key]) is float, key


# --- names ----------------------------------------------------------------------------

def test_names_labels_and_numeric_stats() -> None:
    assert STAT_NAMES[:3] == ("start", "end", "duration")
    assert STAT_NAMES[-1] == "exposure_time_pct"
    assert set(STAT_LABELS) == set(STAT_NAMES)
    assert STAT_LABELS["return_pct"] == "Return [%]"
    assert STAT_LABELS["sharpe"] == "Sharpe ratio"
    assert set(NUMERIC_STATS) == set(STAT_NAMES) - {
        "start", "end", "duration", "max_drawdown_duration", "avg_drawdown_duration",
        "max_trade_duration", "avg_trade_duration",
    }
    assert NUMERIC_STATS == tuple(k for k in STAT_NAMES if k in NUMERIC_STATS)


# --- degenerate inputs ----------------------------------------------------------------

def test_zero_trades() -> None:
    st = stats([100.0, 101.0, 102.0])
    assert st["trades"] == 0 and type(st["trades"]) is int
    for key in ("win_rate_pct", "best_trade_pct", "worst_trade_pct", "avg_trade_pct",
                "profit_factor"):
        assert is_nan(st[key]), key


def test_all_losing_trades() -> None:
    st = stats([100.0, 97.0, 92.0], pnl=[-3.0, -5.0], rets=[-0.03, -0.05])
    assert st["win_rate_pct"] == 0.0
    assert st["profit_factor"] == 0.0  # no gains over 8 of losses
    assert st["best_trade_pct"] == pytest.approx(-3.0)
    assert st["worst_trade_pct"] == pytest.approx(-5.0)
    assert st["avg_trade_pct"] == pytest.approx(-4.0)


def test_profit_factor_without_losses_is_inf() -> None:
    # a break-even trade (pnl 0) is neither a gain nor a loss, nor a win
    st = stats([100.0, 105.0, 108.0], pnl=[5.0, 0.0, 3.0], rets=[0.05, 0.0, 0.03])
    assert st["profit_factor"] == math.inf
    assert st["win_rate_pct"] == pytest.approx(200 / 3)


def test_profit_factor_with_only_break_even_trades_is_nan() -> None:
    st = stats([100.0, 100.0], pnl=[0.0, 0.0], rets=[0.0, 0.0])
    assert is_nan(st["profit_factor"])
    assert st["win_rate_pct"] == 0.0


def test_flat_equity() -> None:
    st = stats([100.0, 100.0, 100.0, 100.0])
    assert st["return_pct"] == 0.0
    assert st["cagr_pct"] == 0.0
    assert st["volatility_ann_pct"] == 0.0  # std 0 times sqrt(365.25)
    assert is_nan(st["sharpe"])  # std == 0
    assert is_nan(st["sortino"])  # downside deviation == 0
    assert st["max_drawdown_pct"] == 0.0
    assert math.copysign(1.0, st["max_drawdown_pct"]) == 1.0  # not -0.0
    assert is_nan(st["calmar"])
    assert st["max_drawdown_duration"] == pd.Timedelta(0)


def test_one_bar() -> None:
    st = stats([105.0], close=[20.0], in_market=[True])
    assert st["start"] == st["end"] == pd.Timestamp("2024-01-01")
    assert st["duration"] == pd.Timedelta(0)
    assert st["equity_final"] == st["equity_peak"] == 105.0
    assert st["return_pct"] == pytest.approx(5.0)
    assert st["buy_hold_return_pct"] == 0.0
    for key in ("periods_per_year", "cagr_pct", "volatility_ann_pct", "sharpe", "sortino",
                "calmar"):
        assert is_nan(st[key]), key
    assert st["max_drawdown_pct"] == 0.0
    assert st["max_drawdown_duration"] == pd.Timedelta(0)
    assert st["exposure_time_pct"] == 100.0


def test_one_bar_below_initial_cash() -> None:
    st = stats([95.0])
    assert st["max_drawdown_pct"] == pytest.approx(-5.0)  # 95 / 100 - 1
    assert st["max_drawdown_duration"] == pd.Timedelta(0)  # one bar spans no time


def test_never_recovered_drawdown() -> None:
    # peak 120 on Jan 2; 90, 100, 110 after it never get back: Jan 2 -> Jan 5
    st = stats([100.0, 120.0, 90.0, 100.0, 110.0])
    assert st["max_drawdown_pct"] == pytest.approx(-25.0)  # 90 / 120 - 1
    assert st["max_drawdown_duration"] == 3 * DAY


def test_drawdown_below_initial_cash_from_first_bar() -> None:
    # running peak starts at 100: 90 and 95 are under water, 105 recovers on Jan 3
    st = stats([90.0, 95.0, 105.0])
    assert st["max_drawdown_pct"] == pytest.approx(-10.0)  # 90 / 100 - 1
    assert st["max_drawdown_duration"] == 2 * DAY
    assert st["equity_peak"] == 105.0


def test_longest_of_several_drawdowns() -> None:
    # peaks 110 (Jan 2) -> recovered Jan 4 (2 d); 112 (Jan 4) -> back to 112 Jan 8 (4 d)
    st = stats([100.0, 110.0, 105.0, 112.0, 100.0, 104.0, 111.0, 112.0, 113.0])
    assert st["max_drawdown_duration"] == 4 * DAY
    assert st["max_drawdown_pct"] == pytest.approx((100 / 112 - 1) * 100)


def test_drawdown_duration_ignores_gaps_between_new_highs() -> None:
    # Jan 1 -> Jan 10 is a 9-day data gap between two new highs, not a drawdown;
    # the only drawdown runs from the Jan 10 peak to the Jan 12 recovery.
    index = ns(pd.DatetimeIndex(["2024-01-01", "2024-01-10", "2024-01-11", "2024-01-12"]))
    st = stats([100.0, 110.0, 105.0, 111.0], index=index)
    assert st["max_drawdown_duration"] == 2 * DAY


def test_blown_up_account_raises_nothing() -> None:
    # equity hits 0: the return after it is 0/0; undefined ratios become NaN
    st = stats([100.0, 0.0, 0.0])
    assert st["return_pct"] == -100.0
    assert st["cagr_pct"] == -100.0  # final equity <= 0
    assert st["max_drawdown_pct"] == -100.0
    assert is_nan(st["sharpe"]) and is_nan(st["volatility_ann_pct"])
    assert st["max_drawdown_duration"] == 2 * DAY  # at the peak on Jan 1, never back


def test_cagr_overflow_is_inf() -> None:
    # doubling in one minute compounds past the float range in a year
    index = np.array([0, 60_000_000_000], dtype=np.int64)
    st = stats([100.0, 200.0], index=index)
    assert st["cagr_pct"] == math.inf


def test_buy_hold_with_zero_first_close_is_nan() -> None:
    assert is_nan(stats([100.0, 100.0], close=[0.0, 1.0])["buy_hold_return_pct"])


def test_duplicate_timestamps_have_no_annualisation() -> None:
    index = np.array([5, 5, 5], dtype=np.int64)
    st = stats([100.0, 101.0, 102.0], index=index)
    assert is_nan(st["periods_per_year"]) and is_nan(st["cagr_pct"]) and is_nan(st["sharpe"])


# --- time index -----------------------------------------------------------------------

def test_periods_per_year_business_days() -> None:
    # 5 business days a week: 365.25 * 5 / 7 = 260.89 a year (no holidays in
    # bdate_range; exchange calendars with ~9 holidays give the familiar ~252)
    index = pd.bdate_range("2015-01-01", "2024-12-31")
    assert periods_per_year(ns(index)) == pytest.approx(365.25 * 5 / 7, rel=2e-3)


def test_periods_per_year_hourly_24_7() -> None:
    # 24 * 365 intervals over 365 days: 8760 / (365 / 365.25) = 24 * 365.25
    index = pd.date_range("2023-01-01", periods=24 * 365 + 1, freq="h")
    assert periods_per_year(ns(index)) == pytest.approx(8766.0)


def test_periods_per_year_needs_two_bars_and_a_span() -> None:
    assert is_nan(periods_per_year(np.array([0], dtype=np.int64)))
    assert is_nan(periods_per_year(np.array([], dtype=np.int64)))
    assert is_nan(periods_per_year(np.array([7, 7], dtype=np.int64)))


def test_periods_per_year_accepts_datetime64_of_any_unit() -> None:
    index = pd.date_range("2023-01-01", periods=24 * 365 + 1, freq="h")
    expected = periods_per_year(ns(index))
    assert periods_per_year(index.as_unit("ns").values) == expected
    assert periods_per_year(index.as_unit("s").values) == expected
    assert periods_per_year(index.as_unit("us")) == expected  # a DatetimeIndex too


def test_tz_aware_start_and_end() -> None:
    # DST starts on 2024-03-10 in New York: Mar 8 00:00 EST -> Mar 11 00:00 EDT is 71 h
    index = pd.date_range("2024-03-08", periods=4, freq="D", tz="America/New_York")
    st = stats([100.0, 101.0, 102.0, 103.0], index=ns(index), tz=index.tz)
    assert st["start"] == index[0] and st["end"] == index[-1]
    assert str(st["start"].tz) == "America/New_York"
    assert st["start"].hour == 0 and st["end"].hour == 0
    assert st["duration"] == pd.Timedelta(hours=71) == st["end"] - st["start"]


def test_index_forms_agree() -> None:
    index = pd.date_range("2024-01-01", periods=4, freq="D")  # unit "us" in pandas 3
    kwargs = dict(equity=[100.0, 110.0, 99.0, 121.0])
    base = stats(index=ns(index), **kwargs)
    assert stats(index=index.as_unit("ns").values, **kwargs) == base
    assert stats(index=index.values, **kwargs) == base  # datetime64[us] is converted
    assert stats(index=index, **kwargs) == base


def test_datetime_index_brings_its_tz() -> None:
    index = pd.date_range("2024-01-01 09:30", periods=3, freq="h", tz="Europe/Berlin")
    st = stats([100.0, 100.0, 100.0], index=index)
    assert st["start"] == index[0] and st["end"] == index[-1]


# --- errors ---------------------------------------------------------------------------

def test_mismatched_bar_arrays() -> None:
    idx, eq = daily(3), np.array([100.0, 101.0, 102.0])
    empty = np.array([])
    with pytest.raises(ValueError, match=r"`close` has shape \(2,\) but `equity` has 3 bars"):
        compute_stats(idx, eq, 100.0, np.ones(2), np.zeros(3, bool), empty, empty)
    with pytest.raises(ValueError, match="`in_market` has shape"):
        compute_stats(idx, eq, 100.0, np.ones(3), np.zeros(4, bool), empty, empty)
    with pytest.raises(ValueError, match="`index` has shape"):
        compute_stats(daily(2), eq, 100.0, np.ones(3), np.zeros(3, bool), empty, empty)


def test_mismatched_trade_arrays() -> None:
    idx, eq = daily(2), np.array([100.0, 101.0])
    with pytest.raises(ValueError, match="`trade_pnl` has shape .* `trade_returns` has shape"):
        compute_stats(idx, eq, 100.0, np.ones(2), np.zeros(2, bool),
                      np.array([1.0, 2.0]), np.array([0.01]))


def test_empty_equity() -> None:
    empty = np.array([])
    with pytest.raises(ValueError, match="`equity` is empty"):
        compute_stats(np.array([], dtype=np.int64), empty, 100.0, empty,
                      np.array([], bool), empty, empty)


def test_bad_index_dtype_and_initial_cash() -> None:
    eq, empty = np.array([100.0]), np.array([])
    with pytest.raises(ValueError, match="`index` must be datetime64 or int64"):
        compute_stats(np.array(["2024-01-01"], dtype=object), eq, 100.0, np.ones(1),
                      np.zeros(1, bool), empty, empty)
    for cash in (0.0, -5.0, math.nan):
        with pytest.raises(ValueError, match="`initial_cash` must be a positive"):
            compute_stats(daily(1), eq, cash, np.ones(1), np.zeros(1, bool), empty, empty)


# --- determinism ----------------------------------------------------------------------

def _random_inputs() -> tuple:
    rng = np.random.default_rng(12345)
    n = 3000
    index = ns(pd.bdate_range("2010-01-01", periods=n))
    equity = 10_000 * np.cumprod(1 + rng.normal(0.0003, 0.01, n))
    close = 50 * np.cumprod(1 + rng.normal(0.0002, 0.012, n))
    in_market = rng.random(n) > 0.3
    pnl = rng.normal(5.0, 80.0, 40)
    return index, equity, 10_000.0, close, in_market, pnl, pnl / 2_000


def test_same_inputs_same_outputs() -> None:
    args = _random_inputs()
    first, second = compute_stats(*args), compute_stats(*args)
    assert first == second
    assert pickle.dumps(first) == pickle.dumps(second)


def test_memory_layout_does_not_change_results() -> None:
    # the same values at an odd address (e.g. a view into shared memory)
    args = _random_inputs()
    moved = []
    for a in args:
        if isinstance(a, np.ndarray):
            raw = np.zeros(a.nbytes + 8, dtype=np.uint8)
            view = raw[4:4 + a.nbytes].view(a.dtype)
            view[:] = a
            moved.append(view)
        else:
            moved.append(a)
    assert compute_stats(*moved) == compute_stats(*args)


def test_same_outputs_in_another_process() -> None:
    code = (
        "import pickle, sys\n"
        "from tests.test_metrics import _random_inputs\n"
        "from nbbacktest.engine.metrics import compute_stats\n"
        "sys.stdout.buffer.write(pickle.dumps(compute_stats(*_random_inputs())))\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         check=True, timeout=120).stdout
    assert pickle.loads(out) == compute_stats(*_random_inputs())


def test_docstring_examples_run() -> None:
    result = doctest.testmod(metrics, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# --- against a plain, slow reference ------------------------------------------------

def _reference(index: np.ndarray, equity: np.ndarray, cash: float) -> dict[str, object]:
    """The brief's definitions written the obvious way, bar by bar."""
    r = np.diff(np.concatenate([[cash], equity])) / np.concatenate([[cash], equity[:-1]])
    bpy = (len(equity) - 1) / ((index[-1] - index[0]) / (365.25 * 86_400e9))
    peak, peak_at, longest, worst = cash, 0, 0, 0.0
    for i, e in enumerate(equity):
        if e >= peak:
            if i > peak_at + 1 or (i > 0 and peak_at == 0 and equity[0] < cash):
                longest = max(longest, index[i] - index[peak_at])
            peak, peak_at = e, i
        worst = min(worst, e / peak - 1)
    if equity[-1] < peak:
        longest = max(longest, index[-1] - index[peak_at])
    return {
        "sharpe": r.mean() / r.std(ddof=1) * math.sqrt(bpy),
        "sortino": r.mean() / math.sqrt(np.mean(np.minimum(r, 0) ** 2)) * math.sqrt(bpy),
        "volatility_ann_pct": r.std(ddof=1) * math.sqrt(bpy) * 100,
        "max_drawdown_pct": worst * 100,
        "max_drawdown_duration": pd.Timedelta(int(longest)),
    }


@pytest.mark.parametrize("seed", range(20))
def test_matches_reference_on_random_curves(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    # irregular bar spacing, and a first bar that may already be below the cash
    index = np.cumsum(rng.integers(1, 5, n)) * 3_600_000_000_000
    equity = 100 * np.cumprod(1 + rng.normal(0.0, 0.02, n))
    st = compute_stats(index, equity, 100.0, np.ones(n), np.zeros(n, bool),
                       np.array([]), np.array([]))
    expected = _reference(index, equity, 100.0)
    assert st["max_drawdown_duration"] == expected.pop("max_drawdown_duration")
    for key, value in expected.items():
        assert st[key] == pytest.approx(value, rel=1e-9), key


# --- the per-data-set Timeline and the per-run summarize ------------------------------

def test_timeline_reads_any_unit_without_converting_the_index() -> None:
    ns_index = pd.date_range("2024-01-01", periods=5, freq="h").as_unit("ns")
    for unit in ("s", "ms", "us", "ns"):
        index = ns_index.as_unit(unit)
        line = metrics.Timeline(index)
        assert (line.n, line.first_ns, line.last_ns) == (5, ns_index.asi8[0], ns_index.asi8[-1])
        assert line.start == ns_index[0] and line.duration == pd.Timedelta(hours=4)
        assert line.bars_per_year == pytest.approx(24 * 365.25)
        as_array = metrics.Timeline(index.to_numpy())
        assert (as_array.first_ns, as_array.ns_per_unit) == (line.first_ns, line.ns_per_unit)
    zoned = metrics.Timeline(ns_index.tz_localize("Europe/Paris"))
    assert str(zoned.start.tz) == "Europe/Paris"
    assert metrics.Timeline(ns_index, tz="UTC").end == ns_index[-1].tz_localize("UTC")


def test_timeline_rejects_empty_and_unrepresentable_times() -> None:
    with pytest.raises(ValueError, match="`index` must hold at least one bar time"):
        metrics.Timeline(np.array([], dtype="M8[ns]"))
    far = pd.DatetimeIndex(["2100-01-01", "2300-01-01"]).as_unit("s")
    with pytest.raises(pd.errors.OutOfBoundsDatetime, match="nanoseconds cannot express"):
        metrics.Timeline(far)


def test_stats_are_the_same_for_every_unit_of_the_index() -> None:
    args = _random_inputs()
    index = pd.DatetimeIndex(args[0])
    expected = compute_stats(*args)
    for unit in ("ms", "us"):
        assert compute_stats(index.as_unit(unit), *args[1:]) == expected
        assert compute_stats(index.as_unit(unit).to_numpy(), *args[1:]) == expected


def test_summarize_matches_compute_stats() -> None:
    index, equity, cash, close, in_market, pnl, rets = _random_inputs()
    line = metrics.Timeline(index)
    got = metrics.summarize(line, equity, cash, metrics.buy_and_hold_pct(close),
                            int(in_market.sum()), pnl, rets, market=metrics.Market(close))
    assert got == compute_stats(index, equity, cash, close, in_market, pnl, rets)
    assert metrics.buy_and_hold_pct(np.array([4.0, 5.0])) == 25.0
    assert math.isnan(metrics.buy_and_hold_pct(np.array([0.0, 5.0])))


@pytest.mark.parametrize(
    ("equity", "days"),
    [
        ([90.0, 95.0, 100.0, 99.0, 101.0], 2),  # under water from bar 0, recovered at bar 2
        ([90.0, 80.0, 85.0], 2),  # never back at the initial cash
        ([100.0, 110.0, 105.0, 104.0], 2),  # never recovered after the last peak
        ([100.0, 99.0, 100.0, 100.0, 98.0, 97.0, 96.0, 100.0], 4),  # two drawdowns, the longer last
    ],
)
def test_drawdown_duration_from_flips(equity: list[float], days: int) -> None:
    assert stats(equity)["max_drawdown_duration"] == pd.Timedelta(days=days)


# --- the newer statistics, each by hand -----------------------------------------------

def _newer(**kwargs: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        equity=[100.0, 110.0, 99.0, 121.0], close=[10.0, 11.0, 10.0, 12.0],
        pnl=[10.0, -5.0, 16.0], rets=[0.1, -0.05, 0.16],
    )
    base.update(kwargs)
    n = len(base["equity"])  # type: ignore[arg-type]
    return compute_stats(
        daily(n), np.array(base["equity"]), 100.0, np.array(base["close"]), np.ones(n, bool),
        np.array(base["pnl"]), np.array(base["rets"]),
        trade_bars=base.get("trade_bars"), commissions=base.get("commissions", 0.0),  # type: ignore[arg-type]
    )


def test_beta_and_alpha_against_buy_and_hold() -> None:
    st = _newer()
    r = [110 / 100 - 1, 99 / 110 - 1, 121 / 99 - 1]
    m = [11 / 10 - 1, 10 / 11 - 1, 12 / 10 - 1]
    rm, mm = sum(r) / 3, sum(m) / 3
    beta = sum((a - rm) * (b - mm) for a, b in zip(r, m)) / sum((b - mm) ** 2 for b in m)
    assert st["beta"] == pytest.approx(beta, rel=1e-12)
    assert st["alpha_pct"] == pytest.approx(21.0 - beta * 20.0, rel=1e-12)  # return 21 %, B&H 20 %
    flat = _newer(close=[5.0, 5.0, 5.0, 5.0])  # a constant market: no beta
    assert is_nan(flat["beta"]) and is_nan(flat["alpha_pct"])
    assert is_nan(_newer(equity=[100.0, 101.0], close=[1.0, 2.0], pnl=[], rets=[])["beta"])


def test_average_drawdown_and_its_duration() -> None:
    # 0 -> 2: -10 % over 2 days; 3 -> 6: -20 % over 3 days
    st = _newer(equity=[100.0, 90.0, 100.0, 120.0, 108.0, 96.0, 125.0], close=[1.0] * 7)
    assert st["avg_drawdown_pct"] == pytest.approx(-15.0)
    assert st["avg_drawdown_duration"] == 2.5 * DAY
    assert st["max_drawdown_duration"] == 3 * DAY
    rising = _newer(equity=[100.0, 101.0, 102.0], close=[1.0] * 3)
    assert rising["avg_drawdown_pct"] == 0.0 and rising["avg_drawdown_duration"] == pd.Timedelta(0)


def test_sqn_kelly_and_expectancy() -> None:
    st = _newer()  # pnl 10, -5, 16: mean 7, std(ddof=1) sqrt((9 + 144 + 81) / 2)
    assert st["expectancy"] == 7.0
    assert st["sqn"] == pytest.approx(math.sqrt(3) * 7 / math.sqrt(117))
    # win rate 2/3, mean win 13, mean loss -5
    assert st["kelly"] == pytest.approx(2 / 3 - (1 / 3) / (13 / 5))
    wins_only = _newer(pnl=[1.0, 2.0, 3.0])
    assert is_nan(wins_only["kelly"]) and wins_only["sqn"] == pytest.approx(math.sqrt(3) * 2 / 1)
    none = _newer(pnl=[], rets=[])
    assert all(is_nan(none[k]) for k in ("expectancy", "sqn", "kelly"))
    assert none["max_trade_duration"] is pd.NaT and none["avg_trade_duration"] is pd.NaT


def test_trade_durations_and_commissions() -> None:
    st = _newer(trade_bars=(np.array([0, 1, 2]), np.array([1, 3, 3])), commissions=12.5)
    assert st["max_trade_duration"] == 2 * DAY
    assert st["avg_trade_duration"] == pd.Timedelta(days=4 / 3)  # (1 + 2 + 1) / 3 days
    assert st["commissions"] == 12.5
    assert _newer()["max_trade_duration"] is pd.NaT  # no trade bars given
    with pytest.raises(ValueError, match="`trade_bars` holds"):
        _newer(trade_bars=(np.array([0]), np.array([1])))


def test_the_simulator_fills_the_newer_stats() -> None:
    import nbbacktest as nbb
    from nbbacktest.engine.examples import SmaCross

    result = nbb.backtest(SmaCross(), nbb.load_sample("daily"), commission=0.001)
    st, trades = result.stats, result.trades
    assert st["expectancy"] == pytest.approx(trades["pnl"].mean())
    assert st["max_trade_duration"] == trades["duration"].max()
    gross = (trades["size"] * (trades["exit_price"] - trades["entry_price"]) - trades["pnl"]).sum()
    assert st["commissions"] >= gross * (1 - 1e-9)  # the closed trades', plus an open entry's
    assert 0 < st["beta"] < 1.5
