"""Sweep planning: grid order, where, sampling, symbols, seeds, and every bad input."""

from __future__ import annotations

import itertools
import re
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.backtest import derive_seed
from nbbacktest.errors import ParamError, SweepError, UnknownParamError
from nbbacktest.parallel.grid import Plan, plan_instances, plan_sweep


class SmaCross(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100)
    slow = nbb.Param(30, low=5, high=300)
    stop = 0.0
    kind = nbb.Param("sma", choices=["sma", "ema"])

    def signals(self, data):
        return data["Close"] * 0


class Breakout(nbb.Strategy):
    lookback = 20

    def signals(self, data):
        return data["Close"] * 0


class NoParams(nbb.Strategy):
    def signals(self, data):
        return data["Close"] * 0


def points(plan: Plan, *names: str) -> list[tuple]:
    return [tuple(plan.params(i)[name] for name in names) for i in range(len(plan))]


# ------------------------------------------------------------------------ grid order
def test_product_order_first_name_slowest_and_defaults_filled_in():
    plan = plan_sweep(SmaCross, {"fast": [5, 10], "slow": [40, 50, 60]})
    assert points(plan, "fast", "slow") == list(itertools.product([5, 10], [40, 50, 60]))
    assert plan.names == ("fast", "slow", "stop", "kind")
    assert plan.values[0] == (5, 40, 0.0, "sma")
    assert plan.strategy is SmaCross and len(plan) == plan.grid_size == 6


def test_grid_order_follows_the_dict_not_the_declaration():
    plan = plan_sweep(SmaCross, {"slow": [40, 50], "fast": [5, 6, 7]})
    assert points(plan, "slow", "fast") == list(itertools.product([40, 50], [5, 6, 7]))
    # Values stay in declaration order whatever the grid's order.
    assert plan.values[1] == (6, 40, 0.0, "sma")


def test_scalar_str_and_array_values():
    plan = plan_sweep(
        SmaCross,
        {"fast": np.array([5, 10]), "slow": pd.Index([40]), "stop": 0.05, "kind": "ema"},
    )
    expected = [(5, 40, 0.05, "ema"), (10, 40, 0.05, "ema")]
    assert points(plan, "fast", "slow", "stop", "kind") == expected
    # numpy scalars become Python types through Param.validate.
    assert all(type(value) is int for value in points(plan, "fast")[0])
    assert type(plan.params(0)["fast"]) is int
    # A str is one value, not a list of characters; a tuple is iterated.
    assert len(plan_sweep(SmaCross, {"kind": ("sma", "ema")})) == 2


def test_no_grid_is_the_default_point_and_an_instance_gives_the_defaults():
    for grid in (None, {}):
        plan = plan_sweep(SmaCross, grid)
        assert len(plan) == 1 and plan.params(0) == SmaCross().param_values
    plan = plan_sweep(SmaCross(fast=7, kind="ema"), {"slow": [40, 50]})
    assert plan.params(1) == {"fast": 7, "slow": 50, "stop": 0.0, "kind": "ema"}
    assert plan_sweep(NoParams).values == [()]


def test_list_of_dicts_is_the_union_without_duplicates_first_kept():
    plan = plan_sweep(
        SmaCross,
        [
            {"fast": [5, 10], "kind": "sma"},
            {"fast": [10, 20], "kind": ["ema", "sma"]},
        ],
    )
    assert points(plan, "fast", "kind") == [
        (5, "sma"), (10, "sma"), (10, "ema"), (20, "ema"), (20, "sma"),
    ]
    assert plan.grid_size == 5


def test_duplicate_values_in_one_entry_are_removed():
    plan = plan_sweep(SmaCross, {"fast": [5, 5.0, 10, 5], "slow": [40, 40]})
    assert points(plan, "fast", "slow") == [(5, 40), (10, 40)]


# ----------------------------------------------------------------------------- where
def test_where_as_callable_and_as_str_agree():
    grid = {"fast": range(5, 30, 5), "slow": range(10, 40, 10)}
    by_callable = plan_sweep(SmaCross, grid, where=lambda p: p.fast < p.slow)
    by_str = plan_sweep(SmaCross, grid, where="fast < slow")
    assert by_callable.values == by_str.values
    assert all(f < s for f, s in points(by_str, "fast", "slow"))
    assert by_str.grid_size == 15 and len(by_str) == 9


def test_where_sees_every_param_including_defaults():
    plan = plan_sweep(SmaCross, {"fast": [5, 10]}, where=lambda p: p.kind == "sma" and p.fast > 5)
    assert points(plan, "fast") == [(10,)]
    assert len(plan_sweep(SmaCross, {"fast": [5, 10]}, where="stop == 0 and kind == 'sma'")) == 2


def test_where_results_go_through_bool():
    plan = plan_sweep(SmaCross, {"fast": [5, 10, 15]}, where=lambda p: p.fast % 10)
    assert points(plan, "fast") == [(5,), (15,)]


def test_design_example_has_179_points():
    grid = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}
    plan = plan_sweep(SmaCross, grid, where=lambda p: p.fast < p.slow)
    assert len(plan) == 179 and plan.grid_size == 11 * 19
    assert len(plan_sweep(SmaCross, grid, where="fast < slow")) == 179


def test_where_str_allows_whitelisted_builtins_and_comprehensions():
    plan = plan_sweep(
        SmaCross,
        {"fast": [5, 10, 20], "slow": [30]},
        where="abs(slow - fast) >= 20 and max(fast, 1) > 2"
        " and max([x for x in [fast] if x < slow]) > 0",
    )
    assert points(plan, "fast") == [(5,), (10,)]


def test_where_applies_once_per_point_not_per_symbol():
    calls = []
    where = lambda p: calls.append(p.fast) or True  # noqa: E731
    plan_sweep(SmaCross, {"fast": [5, 10]}, where=where, symbols=["A", "B"])
    assert calls == [5, 10]


# ---------------------------------------------------------------------------- sample
def test_sampling_is_deterministic_and_keeps_grid_order():
    grid = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}
    first = plan_sweep(SmaCross, grid, where="fast < slow", n=20, seed=1)
    again = plan_sweep(SmaCross, grid, where="fast < slow", n=20, seed=1)
    other = plan_sweep(SmaCross, grid, where="fast < slow", n=20, seed=2)
    assert len(first) == 20 and first.values == again.values
    assert first.values != other.values
    full = plan_sweep(SmaCross, grid, where="fast < slow").values
    rows = [full.index(v) for v in first.values]
    assert rows == sorted(rows)
    assert first.grid_size == 209  # the grid before where and sampling


def test_n_above_the_number_of_points_keeps_them_all():
    plan = plan_sweep(SmaCross, {"fast": [5, 10]}, n=50)
    assert points(plan, "fast") == [(5,), (10,)]


def test_sampling_is_of_points_before_symbols():
    plan = plan_sweep(SmaCross, {"fast": range(2, 50)}, n=3, symbols=["A", "B"])
    assert len(plan) == 6 and plan.symbols == ["A", "B"] * 3


# ------------------------------------------------------------------- symbols / seeds
def test_symbols_vary_fastest():
    plan = plan_sweep(SmaCross, {"fast": [5, 10]}, symbols=["AAA", "BBB", "CCC"])
    assert len(plan) == 6 and plan.grid_size == 6
    assert [(p[0], s) for p, s in zip(plan.values, plan.symbols)] == list(
        itertools.product([5, 10], ["AAA", "BBB", "CCC"])
    )
    assert plan.universe == ("AAA", "BBB", "CCC")
    assert plan_sweep(SmaCross).symbols == [None]


def test_seeds_are_derive_seed_of_each_run():
    plan = plan_sweep(SmaCross, {"fast": [5, 10], "slow": [40, 50]}, seed=7, symbols=["A", "B"])
    for i in range(len(plan)):
        assert plan.seeds[i] == plan.seed_at(i) == derive_seed(7, plan.params(i), plan.symbols[i])
    single = plan_sweep(SmaCross, {"fast": [5]}, seed=7)
    assert single.seeds == [derive_seed(7, single.params(0), None)]


def test_a_points_seed_does_not_depend_on_the_rest_of_the_grid():
    big = plan_sweep(SmaCross, {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}, seed=3)
    one = plan_sweep(SmaCross, {"fast": 25, "slow": 120}, seed=3)
    assert one.seeds[0] == big.seeds[big.values.index(one.values[0])]
    assert plan_sweep(SmaCross, {"fast": 25, "slow": 120}, seed=4).seeds != one.seeds


def test_backtest_of_a_point_gets_the_same_seed():
    plan = plan_sweep(SmaCross, {"fast": [5, 10]}, seed=11)
    assert plan.seeds[1] == derive_seed(11, SmaCross(fast=10).param_values)



def test_hundred_thousand_points_plan_quickly():
    grid = {"fast": range(2, 101), "slow": range(5, 301), "kind": ["sma", "ema"], "stop": [0, 0.1]}
    start = time.perf_counter()
    plan = plan_sweep(SmaCross, grid, where="stop < 1", n=100_000)
    assert time.perf_counter() - start < 3  # smoke check only: about 0.4 s here
    assert len(plan) == 100_000 and plan.grid_size == 99 * 296 * 4


# -------------------------------------------------------------------- plan_instances
def test_plan_instances_with_mixed_classes():
    instances = [SmaCross(10, 30), Breakout(20), SmaCross(5, 50)]
    plan = plan_instances(instances, seed=5, symbols=["A", "B"])
    assert len(plan) == 6 and plan.is_mixed
    assert plan.classes == (SmaCross, Breakout)
    assert [plan.strategy_at(i) for i in range(0, 6, 2)] == instances
    assert plan.symbols == ["A", "B"] * 3
    assert plan.params(2) == {"lookback": 20} and plan.names_at(3) == ("lookback",)
    assert plan.seeds[3] == plan.seed_at(3) == derive_seed(5, {"lookback": 20}, "B")
    assert plan.seeds == [derive_seed(5, plan.params(i), plan.symbols[i]) for i in range(6)]
    frame = plan.frame()
    assert list(frame.columns) == ["strategy", "params", "symbol"]
    assert frame["strategy"].tolist() == ["SmaCross"] * 2 + ["Breakout"] * 2 + ["SmaCross"] * 2
    assert frame.loc[2, "params"] == "{'lookback': 20}"
    sub = plan.subset([3, 4])
    assert [type(sub.strategy_at(i)) for i in range(2)] == [Breakout, SmaCross]
    with pytest.raises(SweepError, match=r"mixes 2 strategy classes \(SmaCross, Breakout\)"):
        plan.strategy
    with pytest.raises(SweepError, match="Plan.names is undefined"):
        plan.names


def test_plan_instances_of_one_class_looks_like_a_sweep():
    plan = plan_instances([SmaCross(10, 30), SmaCross(5, 50)])
    assert not plan.is_mixed and plan.strategy is SmaCross and plan.class_index is None
    assert list(plan.frame().columns) == ["fast", "slow", "stop", "kind"]
    assert plan.seeds[1] == derive_seed(0, SmaCross(5, 50).param_values)


def test_plan_instances_errors():
    with pytest.raises(SweepError, match="instances is empty"):
        plan_instances([])
    with pytest.raises(TypeError, match=r"instances\[2\] must be a Strategy instance, got int 3"):
        plan_instances([SmaCross(), Breakout(), 3])
    with pytest.raises(TypeError, match=r"instances\[1\] is the class Breakout, not an instance"):
        plan_instances([SmaCross(), Breakout])
    with pytest.raises(TypeError, match="wrap it in a list"):
        plan_instances(SmaCross())
    with pytest.raises(TypeError, match="seed must be an int"):
        plan_instances([SmaCross()], seed=1.5)


# -------------------------------------------------------------------------- errors
def test_strategy_must_be_a_strategy():
    for bad in (42, "SmaCross", nbb.Strategy, object):
        with pytest.raises(TypeError, match="strategy must be a Strategy instance .* or a Strategy subclass"):
            plan_sweep(bad)


def test_unknown_grid_name_has_did_you_mean():
    message = "Strategy 'SmaCross' has no parameter 'fsat'. Did you mean: fast?"
    with pytest.raises(UnknownParamError, match=re.escape(message)):
        plan_sweep(SmaCross, {"fsat": [5]})
    with pytest.raises(UnknownParamError, match="has no parameter 'slwo'"):
        plan_sweep(SmaCross, [{"fast": 5}, {"slwo": 5}])


@pytest.mark.parametrize(
    "grid, error, message",
    [
        ({"fast": [5, 1]}, ParamError, "SmaCross parameter 'fast' must be >= 2, got 1"),
        ({"fast": [5.5]}, ParamError, "SmaCross parameter 'fast' must be int, got float 5.5"),
        ({"kind": "wma"}, ParamError, r"'kind' must be one of \['sma', 'ema'\], got 'wma'"),
        ({"fast": []}, SweepError, r"grid\['fast'\] is empty"),
        ({"fast": range(0)}, SweepError, r"grid\['fast'\] is empty"),
        ([{"fast": 5}, {"slow": []}], SweepError, r"grid\[1\]\['slow'\] is empty"),
        ({"fast": {5, 10}}, TypeError, r"grid\['fast'\] is a set"),
        ({"fast": {"a": 5}}, TypeError, r"grid\['fast'\] is a dict"),
        ({"fast": np.ones((2, 2))}, SweepError, r"grid\['fast'\] must be one-dimensional"),
        ([], SweepError, "grid is an empty list"),
        ([{"fast": 5}, 7], TypeError, r"grid\[1\] must be a dict"),
        ("fast=5", TypeError, "grid must be a dict"),
        ({5: [1]}, TypeError, "grid keys must be parameter names"),
    ],
)
def test_bad_grids(grid, error, message):
    with pytest.raises(error, match=message):
        plan_sweep(SmaCross, grid)


def test_grid_value_errors_name_the_entry():
    with pytest.raises(ParamError, match=r"got 1 \(in grid\['fast'\]\)"):
        plan_sweep(SmaCross, {"fast": [5, 1]})


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "10"])
def test_bad_n(n):
    with pytest.raises(SweepError, match="n must be a positive int"):
        plan_sweep(SmaCross, {"fast": [5, 10]}, n=n)


@pytest.mark.parametrize("seed", [True, 1.0, "1", None])
def test_bad_seed(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        plan_sweep(SmaCross, seed=seed)


def test_numpy_and_negative_seeds_are_ints():
    assert plan_sweep(SmaCross, seed=np.int64(3)).seeds == plan_sweep(SmaCross, seed=3).seeds
    assert len(plan_sweep(SmaCross, {"fast": range(2, 50)}, n=5, seed=-1)) == 5


@pytest.mark.parametrize(
    "symbols, message",
    [
        ([], "symbols is empty"),
        ("AAPL", r"not one str: use \['AAPL'\]"),
        (["A", 1], r"symbols\[1\] must be a str, got int 1"),
        (["A", "B", "A"], "symbols must be unique; repeated: A"),
        (5, "symbols must be a list of str"),
    ],
)
def test_bad_symbols(symbols, message):
    with pytest.raises(SweepError, match=message):
        plan_sweep(SmaCross, symbols=symbols)


def test_where_unknown_name_has_did_you_mean():
    message = "where refers to unknown parameter 'fsat'. Did you mean: fast?"
    with pytest.raises(UnknownParamError, match=re.escape(message)):
        plan_sweep(SmaCross, {"fast": [5]}, where=lambda p: p.fsat < p.slow)
    with pytest.raises(UnknownParamError, match=re.escape(message)):
        plan_sweep(SmaCross, {"fast": [5]}, where="fsat < slow")


def test_where_exception_names_the_point():
    message = (
        "where raised ZeroDivisionError for point {'fast': 5, 'slow': 10, 'stop': 0.0,"
        " 'kind': 'sma'}: division by zero"
    )
    with pytest.raises(SweepError, match=re.escape(message)) as caught:
        plan_sweep(SmaCross, {"fast": [5], "slow": [10]}, where=lambda p: p.fast / 0)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)
    with pytest.raises(SweepError, match="where raised ZeroDivisionError"):
        plan_sweep(SmaCross, {"fast": [5], "slow": [10]}, where="fast / (slow - 10)")
    # An AttributeError that is not a lookup of a parameter is the user's own bug.
    with pytest.raises(SweepError, match="where raised AttributeError"):
        plan_sweep(SmaCross, {"fast": [5]}, where=lambda p: p.kind.nope)


def test_where_filtering_everything_out():
    with pytest.raises(SweepError, match="where filtered out all 36 points of the grid"):
        plan_sweep(SmaCross, {"fast": range(2, 8), "slow": range(5, 11)}, where="fast > 1000")
    with pytest.raises(SweepError, match="filtered out all 2 points"):
        plan_sweep(SmaCross, {"fast": [5, 6]}, where=lambda p: False)


def test_where_of_the_wrong_type():
    with pytest.raises(TypeError, match="where must be a callable .* or a str expression"):
        plan_sweep(SmaCross, where=5)



# ----------------------------------------------------------------- grids too big to expand
HUGE = {"fast": range(2, 10_002), "slow": np.arange(5, 10_005)}  # 10**8 points


class Wide(nbb.Strategy):
    fast = nbb.Param(10, low=0, high=10**9)
    slow = nbb.Param(30, low=0, high=10**9)

    def signals(self, data):
        return data["Close"] * 0


def _peak_bytes(call):
    import tracemalloc

    tracemalloc.start()
    try:
        result = call()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_grid_over_the_limit_fails_at_once_with_its_size_and_the_way_out():
    huge = {"fast": range(10_000), "slow": range(10_000)}
    with pytest.raises(SweepError, match=r"would hold 100,000,000 runs \(100,000,000 points "
                       r"\(10,000 x 10,000\)\), over the limit of 1,000,000: sample it with n="):
        _peak_bytes(lambda: plan_sweep(Wide, huge))
    _, peak = _peak_bytes(lambda: pytest.raises(SweepError, plan_sweep, Wide, huge))
    assert peak < 20 * 2**20  # counted, not expanded (expanding took ~4.7 GB)
    with pytest.raises(SweepError, match=r"x 3 symbols\), over the limit"):
        plan_sweep(Wide, {"fast": range(1000), "slow": range(1000)}, symbols=["A", "B", "C"])
    with pytest.raises(SweepError, match=r"1,000,000 \+ 1,000 points"):
        plan_sweep(Wide, [{"fast": range(1000), "slow": range(1000)}, {"fast": range(1000)}])


def test_sampling_a_huge_grid_expands_only_the_sample():
    plan, peak = _peak_bytes(lambda: plan_sweep(Wide, HUGE, n=10, seed=3))
    assert len(plan) == 10 and plan.grid_size == 10**8 and peak < 20 * 2**20
    rows = [plan.params(i) for i in range(10)]
    assert rows == sorted(rows, key=lambda p: (p["fast"], p["slow"]))  # grid order
    # The same points as drawing from the expanded grid: index i is product's i-th.
    chosen = np.sort(np.random.default_rng(3).choice(10**8, size=10, replace=False))
    assert [(r["fast"], r["slow"]) for r in rows] == [(2 + i // 10_000, 5 + i % 10_000)
                                                      for i in chosen.tolist()]


def test_lazy_sampling_equals_sampling_the_expanded_grid():
    grid = {"slow": range(5, 60, 7), "kind": ["sma", "ema"], "fast": range(2, 30, 3)}
    expanded = [dict(zip(["slow", "kind", "fast"], values))
                for values in itertools.product(*grid.values())]
    for n, where in [(17, None), (5, "fast < slow"), (40, lambda p: p.kind == "ema")]:
        plan = plan_sweep(SmaCross, grid, n=n, where=where, seed=11)
        kept = [p for p in expanded if where is None or (
            p["fast"] < p["slow"] if isinstance(where, str) else where(SimpleNamespace(**p)))]
        chosen = np.sort(np.random.default_rng(11).choice(len(kept), size=n, replace=False))
        want = [kept[i] for i in chosen.tolist()]
        got = [{k: plan.params(i)[k] for k in ("slow", "kind", "fast")} for i in range(len(plan))]
        assert got == want


def test_where_on_a_huge_grid_fails_at_once_and_runs_lazily_below_the_scan_limit():
    with pytest.raises(SweepError, match=r"too many for where to test \(at most 20,000,000\)"):
        plan_sweep(Wide, HUGE, where="fast == slow")
    with pytest.raises(SweepError, match="too many for where to test"):
        plan_sweep(Wide, HUGE, where="fast < 0", n=10)
    # 1.5 million points, of which where keeps 1,500: only those are kept.
    plan, peak = _peak_bytes(lambda: plan_sweep(Wide, {"fast": range(1500), "slow": range(1500)},
                                                where="fast == slow"))
    assert len(plan) == 1500 and plan.grid_size == 1500**2 and peak < 20 * 2**20
    with pytest.raises(SweepError, match="more than 1,000,000 points pass where"):
        plan_sweep(Wide, {"fast": range(1500), "slow": range(1500)}, where="fast != slow")
    with pytest.raises(SweepError, match=r"where filtered out all 2250000 points"):
        plan_sweep(Wide, {"fast": range(1500), "slow": range(1500)}, where="fast < 0")
