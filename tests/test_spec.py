"""nbbacktest.parallel.spec: what a sweep computes, in one frozen value, and its checks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.engine.backtest import Settings
from nbbacktest.errors import SweepError
from nbbacktest.parallel import worker
from nbbacktest.parallel.grid import plan_instances, plan_sweep
from nbbacktest.parallel.rows import StatSchema
from nbbacktest.parallel.spec import SweepSpec, check_metric, check_warn_after

pytestmark = pytest.mark.timeout(120)

GRID = {"fast": [5, 10, 20], "slow": [30, 60]}


class Breakout(nbb.Strategy):
    lookback = 20

    def signals(self, data):
        return (data["Close"] >= data["High"].rolling(self.lookback).max().shift()).astype(float)


def spec_of(grid=GRID, seed=0, settings=None, symbols=None, **options) -> SweepSpec:
    return SweepSpec(plan_sweep(SmaCross, grid, seed=seed, symbols=symbols), settings or Settings(),
                     **options)


# ------------------------------------------------------------------ checks
def test_an_unknown_metric_names_it_with_a_hint_and_the_valid_ones():
    with pytest.raises(SweepError) as raised:
        spec_of(metric="sharp")
    message = str(raised.value)
    assert message.startswith("metric 'sharp' is not a numeric stat. Did you mean: sharpe?")
    assert "Valid metrics: " in message and "trades" in message and "return_pct" in message
    # A stat that is not numeric is no metric either.
    with pytest.raises(SweepError, match="metric 'start' is not a numeric stat"):
        spec_of(metric="start")
    with pytest.raises(SweepError, match="metric 3 is not a numeric stat"):
        check_metric(3, True)


def test_check_metric_reads_the_schema_it_is_given():
    schema = dataclasses.replace(StatSchema.current(), floats=("edge",), ints=(), names=("edge",))
    check_metric("edge", False, schema)
    with pytest.raises(SweepError, match="Valid metrics: edge$"):
        check_metric("sharpe", True, schema)


@pytest.mark.parametrize("name, value", [("maximize", "yes"), ("maximize", 1), ("maximize", None),
                                         ("stop_on_error", "no"), ("stop_on_error", 0)])
def test_a_flag_that_is_no_bool_names_the_argument(name, value):
    with pytest.raises(TypeError, match=rf"^{name} must be True or False, got {value!r}$"):
        spec_of(**{name: value})


def test_numpy_bools_are_taken_as_bools():
    spec = spec_of(maximize=np.bool_(False), stop_on_error=np.bool_(True))
    assert spec.maximize is False and spec.stop_on_error is True


@pytest.mark.parametrize("warn_after", [0, -1.0, float("nan"), "10", True, None])
def test_a_warn_after_that_is_no_positive_number_names_the_argument(warn_after):
    with pytest.raises(SweepError, match=rf"^warn_after must be a positive number of seconds, got {warn_after!r}$"):
        spec_of(warn_after=warn_after)
    with pytest.raises(SweepError, match="warn_after"):
        check_warn_after(warn_after)


def test_warn_after_is_kept_as_float_seconds():
    spec = spec_of(warn_after=5)
    assert spec.warn_after == 5.0 and type(spec.warn_after) is float
    assert check_warn_after(0.25) == 0.25


def test_a_spec_is_frozen():
    spec = spec_of()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.metric = "trades"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.warn_after = 1.0  # type: ignore[misc]
    assert spec.metric == "sharpe"


# ------------------------------------------------------------------ identity
def test_equal_sweeps_have_one_identity():
    first, second = spec_of(), spec_of()
    assert first.identity() == second.identity()
    assert len(first.identity()) == 32 and int(first.identity(), 16) >= 0
    # What does not change the table does not change the identity: metric, rules, warn_after.
    assert spec_of(metric="trades", maximize=False, stop_on_error=True,
                   warn_after=3.0).identity() == first.identity()


@pytest.mark.parametrize("change", [
    {"settings": Settings(commission=0.001)},
    {"settings": Settings(cash=20_000.0)},
    {"grid": {"fast": [5, 10, 25], "slow": [30, 60]}},
    {"grid": {"fast": [10, 5, 20], "slow": [30, 60]}},  # the same points in another order
    {"grid": {"fast": [5, 10, 20], "slow": [30]}},
    {"seed": 1},
    {"symbols": ["AAA"]},
], ids=["commission", "cash", "a value", "order", "fewer", "seed", "symbols"])
def test_a_different_sweep_has_another_identity(change):
    assert spec_of(**change).identity() != spec_of().identity()


def test_the_identity_names_the_class():
    class SmaCross2(SmaCross):
        pass

    other = SweepSpec(plan_sweep(SmaCross2, GRID), Settings())
    assert other.identity() != spec_of().identity()
    mixed = SweepSpec(plan_instances([SmaCross(5, 30), Breakout(10)]), Settings())
    swapped = SweepSpec(plan_instances([Breakout(10), SmaCross(5, 30)]), Settings())
    assert mixed.identity() != swapped.identity()


# ------------------------------------------------------------------ summary, job, point specs
def test_the_summary_says_what_the_sweep_computes():
    spec = spec_of(settings=Settings(commission=0.002), metric="return_pct", maximize=False,
                   symbols=["AAA", "BBB"])
    summary = spec.summary("data-key")
    assert set(summary) == {"strategy", "runs", "grid_size", "symbols", "metric", "maximize",
                            "settings", "data", "identity", "created"}
    assert summary["strategy"] == "conftest.SmaCross"
    assert summary["runs"] == 12 and summary["grid_size"] == 12
    assert summary["symbols"] == ["AAA", "BBB"]
    assert (summary["metric"], summary["maximize"], summary["data"]) == ("return_pct", False, "data-key")
    assert summary["settings"] == dataclasses.asdict(Settings(commission=0.002))
    assert summary["settings"]["commission"] == 0.002
    assert summary["identity"] == spec.identity()
    assert spec_of().summary()["symbols"] is None and spec_of().summary()["data"] is None


def test_strategy_names_and_cost_key():
    mixed = SweepSpec(plan_instances([SmaCross(5, 30), Breakout(10)]), Settings())
    assert mixed.strategy_names() == "conftest.SmaCross, test_spec.Breakout"
    key = mixed.cost_key("k1")
    assert key.startswith("k1|conftest.SmaCross, test_spec.Breakout|Settings(")
    assert mixed.cost_key("k2") != key
    assert SweepSpec(mixed.plan, Settings(commission=0.01)).cost_key("k1") != key


def test_the_job_carries_what_every_run_shares():
    spec = spec_of(grid={"fast": [5]}, seed=7, settings=Settings(slippage=0.001),
                   stop_on_error=True, warn_after=12)
    job = spec.job("key-1")
    assert isinstance(job, worker.Job)
    assert job.classes == (SmaCross,) and job.names == (("fast", "slow"),)
    assert job.settings == Settings(slippage=0.001) and job.data_key == "key-1"
    assert (job.warn_after, job.stop_on_error, job.seed) == (12.0, True, 7)
    assert job.schema == spec.schema


def test_point_specs_of_one_class():
    spec = spec_of(symbols=["AAA", "BBB"])
    assert spec.point_specs([0, 1, 5]) == [(0, 0, (5, 30), "AAA"), (1, 0, (5, 30), "BBB"),
                                           (5, 0, (10, 30), "BBB")]
    assert spec.point_specs([]) == []
    assert spec_of().point_specs([3]) == [(3, 0, (10, 60), None)]


def test_point_specs_of_mixed_instances():
    plan = plan_instances([SmaCross(5, 30), Breakout(15), SmaCross(20, 60), Breakout(40)])
    spec = SweepSpec(plan, Settings())
    assert spec.point_specs(range(4)) == [(0, 0, (5, 30), None), (1, 1, (15,), None),
                                          (2, 0, (20, 60), None), (3, 1, (40,), None)]
    assert all(type(klass) is int for _, klass, _, _ in spec.point_specs([1, 3]))
    # The job's classes and names are what the class index points into.
    job = spec.job("k")
    assert job.classes == (SmaCross, Breakout) and job.names == (("fast", "slow"), ("lookback",))


# ------------------------------------------------------------------ from_state
def test_from_state_of_an_old_format_dict():
    plan = plan_sweep(SmaCross, GRID)
    state = {"plan": plan, "settings": Settings(commission=0.001), "metric": "trades",
             "maximize": False, "stop_on_error": True, "warn_after": 60, "ignored": 1}
    spec = SweepSpec.from_state(state)
    assert spec.plan is plan and spec.settings == Settings(commission=0.001)
    assert (spec.metric, spec.maximize, spec.stop_on_error, spec.warn_after) == ("trades", False, True, 60.0)
    assert spec.identity() == SweepSpec(plan, Settings(commission=0.001)).identity()
    assert SweepSpec.from_state(spec) is spec


def test_from_state_of_garbage_names_what_is_missing():
    with pytest.raises(TypeError, match="a list is not a sweep's spec"):
        SweepSpec.from_state([1, 2])
    with pytest.raises(TypeError, match="a NoneType is not a sweep's spec"):
        SweepSpec.from_state(None)
    with pytest.raises(TypeError, match=r"^it has no 'metric', 'warn_after'$"):
        SweepSpec.from_state({"plan": plan_sweep(SmaCross, GRID), "settings": Settings(),
                              "maximize": True, "stop_on_error": False})
    with pytest.raises(TypeError, match="it has no 'plan', 'settings'"):
        SweepSpec.from_state({})
    with pytest.raises(TypeError, match="it has a plan that is no Plan"):
        SweepSpec.from_state({"plan": "p", "settings": Settings(), "metric": "sharpe", "maximize": True,
                              "stop_on_error": False, "warn_after": 1.0})
    # A dict with every field is still checked as a new spec is.
    with pytest.raises(SweepError, match="metric 'nope'"):
        SweepSpec.from_state({"plan": plan_sweep(SmaCross, GRID), "settings": Settings(),
                              "metric": "nope", "maximize": True, "stop_on_error": False,
                              "warn_after": 1.0})


# ------------------------------------------------------------------ min_trades
def test_min_trades_changes_the_identity_only_when_set():
    assert spec_of(min_trades=0).identity() == spec_of().identity()
    assert spec_of(min_trades=5).identity() != spec_of().identity()
    assert spec_of(min_trades=5).identity() != spec_of(min_trades=6).identity()
    assert "min_trades" not in spec_of().summary() and spec_of(min_trades=5).summary()["min_trades"] == 5


def test_min_trades_is_checked_and_an_older_spec_reads_zero():
    for value, error in ((-1, SweepError), (1.5, TypeError), (True, TypeError), ("3", TypeError)):
        with pytest.raises(error, match="min_trades"):
            spec_of(min_trades=value)
    assert spec_of(min_trades=np.int64(3)).min_trades == 3
    # A SweepSpec pickled before the field existed has no min_trades in its state.
    old = spec_of()
    del old.__dict__["min_trades"]
    assert old.min_trades == 0 and old.identity() == spec_of().identity()
    state = {"plan": old.plan, "settings": Settings(), "metric": "sharpe", "maximize": True,
             "stop_on_error": False, "warn_after": 1.0}
    assert SweepSpec.from_state(state).min_trades == 0
    assert SweepSpec.from_state({**state, "min_trades": 4}).min_trades == 4
