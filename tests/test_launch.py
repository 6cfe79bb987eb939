"""nbbacktest.parallel.launch: the entry points' checks, universe_symbols, failed_error, job_bytes."""

from __future__ import annotations

import threading
import warnings

import cloudpickle
import pandas as pd
import pytest
from conftest import SmaCross

import nbbacktest as nbb
from nbbacktest.engine.backtest import Settings
from nbbacktest.errors import NbbacktestWarning, SweepError, SweepFailedError
from nbbacktest.parallel import launch as launch_module
from nbbacktest.parallel import worker
from nbbacktest.parallel.grid import plan_sweep
from nbbacktest.parallel.launch import failed_error, job_bytes, universe_symbols
from nbbacktest.parallel.runners import LocalRunner
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.sweep import SweepResult
from nbbacktest.parallel.trust import DATA_DIR_ENV

pytestmark = pytest.mark.timeout(120)

RUN_ONLY = ["engine", "host", "seconds"]
GRID = {"fast": [5, 10, 20], "slow": [30, 60]}


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=RUN_ONLY)


@pytest.fixture(autouse=True)
def own_key(tmp_path, monkeypatch):
    """This test's signing key, never the real user's."""
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "user"))


@pytest.fixture
def no_cluster(monkeypatch):
    """Starting a cluster is a failure of the test: bad inputs must be refused before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was asked for")

    monkeypatch.setattr(launch_module, "current_or_start", refuse)


def sweep_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nbbacktest-sweep"]


# ------------------------------------------------------------------ bad inputs
BAD_OPTIONS = [
    ({"chunksize": 0}, SweepError, r"^chunksize must be a positive int or 'auto', got 0$"),
    ({"chunksize": -3}, SweepError, r"chunksize must be a positive int or 'auto', got -3"),
    ({"chunksize": 2.5}, SweepError, r"chunksize must be a positive int or 'auto', got 2.5"),
    ({"chunksize": True}, SweepError, r"chunksize must be a positive int or 'auto', got True"),
    ({"chunksize": "big"}, SweepError, r"chunksize must be a positive int or 'auto', got 'big'"),
    ({"cluster": "local"}, TypeError, r"^cluster must be an nbbacktest.Cluster, got str$"),
    ({"on_result": 5}, TypeError, r"^on_result must be callable, got int$"),
    ({"progress": "yes"}, TypeError, r"^progress must be True, False or a callable taking the SweepResult, got str 'yes'$"),
    ({"progress": 0.5}, TypeError, r"progress must be True, False or a callable"),
    ({"resume": True}, SweepError, r"^resume=True needs save=DIR"),
    ({"resume": "yes"}, TypeError, r"^resume must be True or False, got 'yes'$"),
    ({"block": "no"}, TypeError, r"^block must be True or False, got 'no'$"),
    ({"block": None}, TypeError, r"^block must be True or False, got None$"),
    ({"engines": 0}, SweepError, r"engines must be a positive int"),
    ({"engines": "many"}, SweepError, r"got 'many'"),
]


@pytest.mark.parametrize("options, error, message", BAD_OPTIONS,
                         ids=[f"{next(iter(o))}={next(iter(o.values()))!r}" for o, _, _ in BAD_OPTIONS])
def test_a_bad_option_of_sweep_is_named_before_anything_runs(daily, no_cluster, options, error, message):
    before = len(sweep_threads())
    with pytest.raises(error, match=message):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, **{"progress": False, **options})
    # On the parallel path too: refused before a cluster is looked for.
    with pytest.raises(error, match=message):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, **{"engines": 2, "progress": False, **options})
    assert len(sweep_threads()) == before  # nothing was started


@pytest.mark.parametrize("options, error, message", BAD_OPTIONS[:13],
                         ids=[f"{next(iter(o))}={next(iter(o.values()))!r}" for o, _, _ in BAD_OPTIONS[:13]])
def test_a_bad_option_of_run_many_is_named_before_anything_runs(daily, no_cluster, options, error, message):
    with pytest.raises(error, match=message):
        nbb.run_many([SmaCross(5, 30)], daily, **{"progress": False, **options})


def test_a_bad_option_of_resume_is_named(tmp_path, daily, no_cluster):
    nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, save=tmp_path / "run", progress=False)
    with pytest.raises(TypeError, match=r"^trusted must be True or False, got 'yes'$"):
        nbb.resume(tmp_path / "run", trusted="yes", progress=False)
    with pytest.raises(SweepError, match="chunksize must be a positive int or 'auto', got 0"):
        nbb.resume(tmp_path / "run", chunksize=0, progress=False)
    with pytest.raises(TypeError, match="on_result must be callable"):
        nbb.resume(tmp_path / "run", on_result="print", progress=False)
    with pytest.raises(TypeError, match="block must be True or False"):
        nbb.resume(tmp_path / "run", block=1.0, progress=False)
    # None of them held the checkpoint's lock: a good resume goes on.
    assert nbb.resume(tmp_path / "run", progress=False).status == "complete"


def test_symbols_for_a_single_frame_or_not_in_the_universe(daily, small_universe):
    with pytest.raises(SweepError, match="^symbols= selects symbols of a universe, but data is a single frame$"):
        nbb.sweep(SmaCross, daily, {"fast": [5]}, symbols=["AAA"], progress=False)
    with pytest.raises(SweepError, match="symbols= selects symbols of a universe"):
        nbb.run_many([SmaCross(5, 30)], daily, symbols="AAA", progress=False)
    with pytest.raises(SweepError, match=r"^symbols \['ZZZ', 'YYY'\] are not in the data; it has AAA, BBB, CCC$"):
        nbb.sweep(SmaCross, small_universe, {"fast": [5]}, symbols=["AAA", "ZZZ", "YYY"], progress=False)
    with pytest.raises(SweepError, match=r"symbols must be a list of symbols such as \['AAA', 'BBB'\] or one"
                                         r" symbol, got int 5"):
        nbb.run_many([SmaCross(5, 30)], small_universe, symbols=5, progress=False)


def test_a_progress_display_that_fails_frees_the_checkpoint(tmp_path, daily):
    def broken(result):
        raise RuntimeError("no display here")

    with pytest.raises(RuntimeError, match="no display here"):
        nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, save=tmp_path, progress=broken)
    # The directory is not locked by the sweep that never started.
    again = nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, save=tmp_path, resume=True, progress=False)
    assert again.status == "complete" and len(again) == 2


# ------------------------------------------------------------------ universe_symbols
def test_universe_symbols(daily, small_universe):
    assert universe_symbols(small_universe, None) == ["AAA", "BBB", "CCC"]
    assert universe_symbols(small_universe, ["CCC", "AAA"]) == ["CCC", "AAA"]  # the caller's order
    assert universe_symbols(small_universe, "BBB") == ["BBB"]  # one symbol, not its letters
    assert universe_symbols(small_universe, ("AAA",)) == ["AAA"]
    assert universe_symbols(small_universe, pd.Index(["BBB"])) == ["BBB"]
    assert universe_symbols(daily, None) is None
    with pytest.raises(SweepError, match=r"symbols \['B'\] are not in the data"):
        universe_symbols(small_universe, ["B"])


def test_universe_symbols_of_an_iterator(small_universe):
    assert universe_symbols(small_universe, iter(["AAA", "BBB"])) == ["AAA", "BBB"]


# ------------------------------------------------------------------ failed_error
def test_failed_error_says_what_went_wrong_and_where_the_rows_are(daily):
    spec = SweepSpec(plan_sweep(SmaCross, GRID), Settings())
    result = SweepResult(spec, daily)
    error = failed_error(result, ValueError("engine 3 lost"))
    assert isinstance(error, SweepFailedError) and error.result is result
    assert str(error) == ("the sweep failed: ValueError: engine 3 lost; 0 of 6 rows finished and are"
                          " kept: error.result holds them (error.result.results is the table)")
    saved = failed_error(result, OSError("disk full"), "/tmp/run")
    assert str(saved).endswith("error.result holds them, and so does the checkpoint:"
                               " sweep(..., save='/tmp/run', resume=True) runs the rest")
    assert "OSError: disk full; 0 of 6 rows" in str(saved)


class Crashing(LocalRunner):
    """A runner that fails after its first chunks: what a bug of the runner does."""

    def specs(self, rows):
        if rows and rows[0] >= 2:
            raise RuntimeError("the planner lost its place")
        return super().specs(rows)


def test_a_blocking_sweep_whose_runner_fails_raises_failed_error(monkeypatch, daily):
    monkeypatch.setattr(launch_module, "LocalRunner", Crashing)
    with pytest.raises(SweepFailedError) as raised:
        nbb.sweep(SmaCross, daily, GRID, chunksize=1, progress=False)
    error = raised.value
    assert isinstance(error.__cause__, RuntimeError)
    assert str(error).startswith("the sweep failed: RuntimeError: the planner lost its place; 2 of 6 rows"
                                 " finished and are kept")
    result = error.result
    assert result.status == "failed" and result.reason == "RuntimeError: the planner lost its place"
    assert result.results.status.tolist() == ["done", "done"] + ["cancelled"] * 4
    # Without block, the failure is the Future's exception.
    sweep = nbb.sweep(SmaCross, daily, GRID, chunksize=1, progress=False, block=False)
    assert isinstance(sweep.exception(timeout=60), RuntimeError)
    assert sweep.status == "failed"


# ------------------------------------------------------------------ job_bytes
def test_job_bytes_is_a_job_the_engines_can_load():
    job = SweepSpec(plan_sweep(SmaCross, GRID), Settings(commission=0.01)).job("key")
    back = cloudpickle.loads(job_bytes(job))
    assert isinstance(back, worker.Job)
    assert back.names == job.names and back.settings == job.settings and back.data_key == "key"
    assert back.classes[0].__name__ == "SmaCross" and back.schema == job.schema


def test_job_bytes_names_an_unpicklable_class_attribute():
    class Guarded(SmaCross):
        guard = threading.Lock()

    job = SweepSpec(plan_sweep(Guarded, {"fast": [5]}), Settings()).job("key")
    with pytest.raises(SweepError, match=r"^strategy class Guarded cannot be sent to the engines: its"
                                         r" attribute 'guard' \(lock\) cannot be pickled") as raised:
        job_bytes(job)
    assert raised.value.__cause__ is not None


def test_an_unpicklable_strategy_is_refused_before_a_cluster_is_asked_for(daily, no_cluster):
    class Guarded(SmaCross):
        guard = threading.Lock()

    with pytest.raises(SweepError, match="attribute 'guard'"):
        nbb.sweep(Guarded, daily, {"fast": [5]}, engines=2, progress=False)
    # In process nothing is pickled: the same strategy runs.
    assert nbb.sweep(Guarded, daily, {"fast": [5]}, progress=False).status == "complete"


@pytest.mark.cluster
def test_unpicklable_strategy_names_the_attribute(cluster, daily):
    class Locked(SmaCross):
        guard = threading.Lock()

    with pytest.raises(SweepError, match="attribute 'guard'"):
        nbb.sweep(Locked, daily, {"fast": [5]}, cluster=cluster, progress=False)


# ------------------------------------------------------------------ sweep and run_many agree
def test_a_sweep_equals_run_many_of_the_same_instances(daily, small_universe):
    grid = {"fast": [5, 10, 20], "slow": [30, 60]}
    swept = nbb.sweep(SmaCross, daily, grid, progress=False, commission=0.001, seed=3)
    ran = nbb.run_many([SmaCross(f, s) for f in grid["fast"] for s in grid["slow"]], daily,
                       progress=False, commission=0.001, seed=3)
    assert swept.status == ran.status == "complete"
    pd.testing.assert_frame_equal(comparable(swept.results), comparable(ran.results), check_exact=True)
    assert swept.best == ran.best and swept.best_index == ran.best_index
    on_all = nbb.sweep(SmaCross, small_universe, {"fast": [5, 10]}, progress=False)
    many = nbb.run_many([SmaCross(5), SmaCross(10)], small_universe, progress=False)
    pd.testing.assert_frame_equal(comparable(on_all.results), comparable(many.results), check_exact=True)
    assert list(many.results.symbol) == ["AAA", "BBB", "CCC"] * 2


class EveryRunFails(SmaCross):
    def signals(self, data):
        raise ValueError(f"fast={self.fast} is refused")


def test_a_sweep_in_which_every_run_failed_says_so_with_the_first_error(daily):
    with pytest.warns(NbbacktestWarning, match=r"every run of the sweep failed \(2 runs\), so it has no best"
                      r" run; the first, row 0 \(fast=5, slow=30\), raised ValueError: fast=5 is refused"):
        sweep = nbb.sweep(EveryRunFails, daily, {"fast": [5, 10]}, progress=False)
    assert sweep.status == "complete" and sweep.best is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Not waited for, a sweep says it on its progress display; one with a success has a best run.
        assert nbb.sweep(EveryRunFails, daily, {"fast": [5]}, progress=False, block=False).wait()
        mixed = nbb.run_many([EveryRunFails(5), SmaCross(5)], daily, progress=False)
    assert mixed.failed == 1 and mixed.best == SmaCross(5)


# ------------------------------------------------------------------ load_sweep
def test_load_sweep_equals_the_sweep_that_saved_it_failures_and_universe_included(tmp_path, small_universe):
    from conftest import Fragile

    original = nbb.sweep(Fragile, small_universe, GRID, save=tmp_path, progress=False)
    assert original.failed == 6  # fast=10 fails on each of the 3 symbols
    loaded = nbb.load_sweep(tmp_path)
    pd.testing.assert_frame_equal(loaded.results, original.results)  # engine, host, seconds too
    assert (loaded.status, loaded.reason, loaded.done()) == ("complete", "", True)
    assert loaded.card == original.card and loaded.seconds == original.card["seconds"]
    assert loaded.results.loc[loaded.results["fast"] == 10, "error"].str.startswith("ValueError").all()
    assert loaded.best == original.best and loaded.best_value == original.best_value
    assert loaded.detail(0).stats.equals(original.detail(0).stats)
    assert loaded.table(top=3) is not None and loaded.heatmap("fast", "slow") is not None
    assert loaded.cancel() is False and loaded.checkpoint is None  # read-only: nothing runs
    assert not sweep_threads()


def test_load_sweep_of_a_partial_checkpoint_is_cancelled_and_says_resume_runs_the_rest(tmp_path, daily):
    nbb.sweep(SmaCross, daily, GRID, save=tmp_path, progress=False)
    lines = (tmp_path / "rows.jsonl").read_bytes().splitlines(keepends=True)
    (tmp_path / "rows.jsonl").write_bytes(b"".join(lines[:4]) + lines[4][:10])  # a half-written line
    loaded = nbb.load_sweep(tmp_path)
    assert loaded.status == "cancelled" and loaded.progress == 4
    assert loaded.reason == f"2 of 6 rows are not in the checkpoint: nbb.resume({str(tmp_path)!r}) runs them"
    assert loaded.results["status"].tolist()[4:] == ["cancelled", "cancelled"]
    assert loaded.detail(5).stats["trades"] >= 0  # any row re-runs locally
    # Loading wrote nothing: a resume then runs the 2 missing rows.
    assert len((tmp_path / "rows.jsonl").read_bytes().splitlines()) == 5
    assert nbb.resume(tmp_path, progress=False).status == "complete"
    assert nbb.load_sweep(tmp_path).status == "complete"


def test_load_sweep_of_a_cancelled_sweep_names_how_it_ended(tmp_path, daily, no_cluster):
    from conftest import Sleepy

    running = nbb.sweep(Sleepy, daily, {"fast": list(range(5, 45))}, save=tmp_path, progress=False,
                        block=False)
    while running.progress < 2:
        running.wait(0.05)
    running.cancel()
    running.wait()
    loaded = nbb.load_sweep(tmp_path)
    assert loaded.status == "cancelled" and loaded.progress == running.progress
    assert f"{40 - running.progress} of 40 rows are not in the checkpoint (its sweep was cancelled)" in loaded.reason
    comparable_rows = slice(0, running.progress)
    pd.testing.assert_frame_equal(loaded.results.iloc[comparable_rows], running.results.iloc[comparable_rows])


def test_load_sweep_of_an_older_checkpoint_has_no_card(tmp_path, daily):
    original = nbb.sweep(SmaCross, daily, GRID, save=tmp_path, progress=False)
    (tmp_path / "card.json").unlink()
    loaded = nbb.load_sweep(tmp_path)
    assert loaded.card is None and loaded.status == "complete"
    pd.testing.assert_frame_equal(loaded.results, original.results)


def test_load_sweep_refuses_bad_input_and_foreign_checkpoints(tmp_path, monkeypatch, daily, no_cluster):
    with pytest.raises(TypeError, match=r"^save must be the path of a sweep's save directory, got int 3$"):
        nbb.load_sweep(3)
    with pytest.raises(TypeError, match=r"^save must be the path .*got NoneType None"):
        nbb.resume(None)
    with pytest.raises(SweepError, match="holds no checkpoint"):
        nbb.load_sweep(tmp_path / "nothing")
    with pytest.raises(TypeError, match="trusted must be True or False"):
        nbb.load_sweep(tmp_path, trusted="yes")
    original = nbb.sweep(SmaCross, daily, GRID, save=tmp_path / "run", progress=False)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "someone else"))
    with pytest.raises(SweepError, match="will not load the checkpoint"):
        nbb.load_sweep(tmp_path / "run")
    loaded = nbb.load_sweep(tmp_path / "run", trusted=True)
    pd.testing.assert_frame_equal(loaded.results, original.results)
    assert "load_sweep" in nbb.__all__ and "load_sweep" in nbb.parallel.__all__


def test_load_sweep_of_a_2_engine_sweep(tmp_path, cluster, daily):
    on_engines = nbb.sweep(SmaCross, daily, GRID, cluster=cluster, save=tmp_path, progress=False)
    loaded = nbb.load_sweep(tmp_path)
    pd.testing.assert_frame_equal(loaded.results, on_engines.results)
    assert loaded.results["engine"].notna().any()  # rows of the engines (one may be measured here)
    assert loaded.card["engines"]["count"] == 2
    here = nbb.sweep(SmaCross, daily, GRID, progress=False)
    pd.testing.assert_frame_equal(comparable(loaded.results), comparable(here.results))
    assert here.card["engines"]["count"] == 0
