"""%cluster, %backtest and %%backtest driven through a real IPython shell.

Parallel forms run on the session's 2-engine cluster, made current for the test so
that ``--engines 2`` reuses it; two tests start (and stop) a small cluster of their own.
"""

from __future__ import annotations

import os
import shlex
import sys
import textwrap
import time

import pandas as pd
import psutil
import pytest
from conftest import SmaCross
from IPython.core.error import UsageError
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

import nbbacktest as nbb
from nbbacktest import display as nbb_display
from nbbacktest.errors import StrategyError
from nbbacktest.magics import BacktestMagics, parse_grid_spec
from nbbacktest.parallel.cluster import Cluster

GRID = {"fast": range(5, 60, 5), "slow": range(10, 200, 10)}
RUN_ONLY = ["engine", "host", "seconds"]

pytestmark = pytest.mark.timeout(300)


class Knobs(nbb.Strategy):
    """One parameter of each type, for the SPEC forms."""

    n = nbb.Param(10, low=1, high=100)
    stop = nbb.Param(0.0, low=0.0, high=1.0)
    side = nbb.Param("long", choices=("long", "short"))
    hedge = False
    tag = "plain"

    def signals(self, data):
        above = (data["Close"] > data["Close"].rolling(self.n).mean()).astype(float)
        return above * (1.0 if self.side == "long" else -1.0) * (0.5 if self.hedge else 1.0)


class Broken(nbb.Strategy):
    """Raises for some parameter values: a user bug the magic must not hide."""

    n = 1

    def signals(self, data):
        if self.n > 1:
            return data["Close"] * 0.0
        return 1 / 0


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=RUN_ONLY)


@pytest.fixture(scope="module")
def shell():
    globalipapp.start_ipython()  # once per process (another test module may have); then
    ip = globalipapp.get_ipython()  # get_ipython is the shell's own
    ip.run_line_magic("load_ext", "nbbacktest")
    yield ip
    ip.run_line_magic("unload_ext", "nbbacktest")


@pytest.fixture
def ns(shell, daily, small_universe):
    """The user namespace with the test's names; names the test added are removed after."""
    before = dict(shell.user_ns)
    shell.user_ns.update(
        SmaCross=SmaCross, Knobs=Knobs, Broken=Broken, daily=daily, universe=small_universe
    )
    yield shell.user_ns
    for name in set(shell.user_ns) - set(before):
        del shell.user_ns[name]
    shell.user_ns.update(before)


@pytest.fixture
def current(cluster, monkeypatch):
    """The session cluster, current for this test (another test may have replaced it)."""
    monkeypatch.setattr(Cluster, "_current", cluster)
    return cluster


@pytest.fixture
def no_cluster(cluster, monkeypatch):
    """No current cluster for this test; the session cluster is current again after it."""
    monkeypatch.setattr(Cluster, "_current", None)


def backtest(shell, line: str, cell: str | None = None):
    with capture_output() as out:
        if cell is None:
            shell.run_line_magic("backtest", line)
        else:
            shell.run_cell_magic("backtest", line, textwrap.dedent(cell))
    return out


def cluster_magic(shell, line: str = ""):
    with capture_output() as out:
        shell.run_line_magic("cluster", line)
    return out


# ------------------------------------------------------------------ extension, help
def test_load_ext_registers_the_magics_and_unload_removes_them(shell):
    assert shell.find_line_magic("backtest") is not None
    assert shell.find_cell_magic("backtest") is not None
    assert shell.find_line_magic("cluster") is not None
    shell.run_line_magic("unload_ext", "nbbacktest")
    try:
        assert shell.find_line_magic("backtest") is None
        assert shell.find_cell_magic("backtest") is None
        assert shell.find_line_magic("cluster") is None
        with pytest.raises(UsageError, match="Line magic function `%backtest` not found"):
            shell.run_line_magic("backtest", "SmaCross daily")
    finally:
        shell.run_line_magic("load_ext", "nbbacktest")
    assert shell.find_line_magic("backtest").__self__.__class__ is BacktestMagics


def test_help_is_generated_from_the_parser_with_examples(shell):
    line_doc = shell.find_line_magic("backtest").__doc__
    for text in ("%backtest", "STRATEGY DATA", "--grid <NAME=SPEC", "--where EXPR", "--metric M",
                 "--engines N", "--save DIR", "--resume", "-o VAR", "--ui", "Examples",
                 '--grid fast=5:60:5 slow=10:200:10 --where "fast < slow"'):
        assert text in line_doc
    cell_doc = shell.find_cell_magic("backtest").__doc__
    assert "%%backtest" in cell_doc and "--strategy NAME" in cell_doc and "class Breakout" in cell_doc
    cluster_doc = shell.find_line_magic("cluster").__doc__
    for text in ("start, connect or stop", "--url-file F", "%cluster start -n 4", "%cluster stop"):
        assert text in cluster_doc
    with capture_output() as out:
        shell.run_cell("%backtest?")
    assert "--grid <NAME=SPEC" in out.stdout and "Examples" in out.stdout


# ------------------------------------------------------------------------ %backtest
def test_without_grid_one_backtest_runs_and_its_result_is_shown(shell, ns, daily):
    out = backtest(shell, "SmaCross daily --set fast=5 slow=40 --commission 0.001 --seed 3")
    expected = nbb.backtest(SmaCross(5, 40), daily, commission=0.001, seed=3)
    result = ns["_backtest"]
    assert isinstance(result, nbb.Result) and result.strategy == SmaCross(5, 40)
    pd.testing.assert_series_equal(result.stats, expected.stats)
    assert out.outputs[-1].data["text/plain"] == repr(expected)
    assert "Sweeping" not in out.stdout


def test_line_sweep_on_two_engines_states_its_size_and_equals_sweep(shell, ns, current, daily):
    out = backtest(shell, 'SmaCross daily --grid fast=5:60:5 slow=10:200:10 --where "fast < slow"'
                          " --engines 2 --commission 0.001 --no-progress -o swept")
    assert out.stdout.splitlines()[0] == "Sweeping 179 points of SmaCross on 2 engines"
    assert "Started a local cluster" not in out.stdout
    assert out.stderr == ""  # --no-progress
    swept = ns["swept"]
    expected = nbb.sweep(SmaCross, daily, GRID, where=lambda p: p.fast < p.slow, commission=0.001,
                         progress=False)
    assert swept.engines == 2 and swept.status == "complete"
    pd.testing.assert_frame_equal(comparable(swept.results), comparable(expected.results),
                                  check_exact=True)
    assert swept.best == expected.best
    assert out.outputs[-1].data["text/plain"] == repr(swept)
    assert Cluster.current() is current  # reused: no second cluster


def test_every_spec_form_is_converted_to_the_param_type(shell, ns, daily):
    out = backtest(shell, "Knobs daily --grid n=5:20:5 stop=0.1:0.3:0.05 side=long,short"
                          " hedge=true,false --no-progress")
    assert "Sweeping 48 points of Knobs in this process" in out.stdout
    got = ns["_backtest"].results
    assert sorted(got.n.unique()) == [5, 10, 15] and got.n.dtype.kind == "i"
    assert sorted(got.stop.unique()) == [0.1, 0.15, 0.2, 0.25]  # exact, no 0.30000000000000004
    assert sorted(got.side.unique()) == ["long", "short"]
    assert sorted(got.hedge.unique()) == [False, True]
    expected = nbb.sweep(Knobs, daily, {"n": range(5, 20, 5), "stop": [0.1, 0.15, 0.2, 0.25],
                                        "side": ["long", "short"], "hedge": [True, False]},
                         progress=False)
    pd.testing.assert_frame_equal(comparable(ns["_backtest"].results), comparable(expected.results),
                                  check_exact=True)

    # start:stop takes the step 1 for an int; a single value; a descending range; 10.0 -> 10
    backtest(shell, "Knobs daily --grid n=5:8 stop=0.5 side=short --no-progress -o a")
    backtest(shell, "Knobs daily --grid n=20:5:-5 --set stop=1 --no-progress -o b")
    backtest(shell, "Knobs daily --grid n=10.0,12 --no-progress -o c")
    assert list(ns["a"].results.n) == [5, 6, 7]
    assert set(ns["a"].results.stop) == {0.5} and set(ns["a"].results.side) == {"short"}
    assert list(ns["b"].results.n) == [20, 15, 10] and set(ns["b"].results.stop) == {1.0}
    assert list(ns["c"].results.n) == [10, 12]


def test_braces_and_dollars_are_not_expanded(shell, ns):
    ns["name"] = "expanded"
    backtest(shell, "Knobs daily --grid n=5,10 --set tag={name} --no-progress -o a")
    backtest(shell, "Knobs daily --grid n=5,10 --set tag=$name --no-progress -o b")
    assert set(ns["a"].results.tag) == {"{name}"}
    assert set(ns["b"].results.tag) == {"$name"}


def test_universe_symbols_and_default_point(shell, ns, small_universe):
    out = backtest(shell, "SmaCross universe --grid fast=5,10 --symbols AAA,CCC --no-progress")
    assert "Sweeping 2 points of SmaCross on 2 symbols (4 runs) in this process" in out.stdout
    expected = nbb.sweep(SmaCross, small_universe, {"fast": [5, 10]}, symbols=["AAA", "CCC"],
                         progress=False)
    pd.testing.assert_frame_equal(comparable(ns["_backtest"].results), comparable(expected.results),
                                  check_exact=True)
    # a universe without --grid: the default point on every symbol
    out = backtest(shell, "SmaCross universe --no-progress")
    assert "Sweeping 1 point of SmaCross on 3 symbols (3 runs)" in out.stdout
    assert list(ns["_backtest"].results.symbol) == ["AAA", "BBB", "CCC"]


def test_sample_seed_metric_and_minimize_reach_the_sweep(shell, ns, daily):
    out = backtest(shell, "SmaCross daily --grid fast=5:60:5 slow=10:200:10 --sample 20 --seed 7"
                          " --metric max_drawdown_pct --minimize --no-progress")
    assert "Sweeping 20 points of SmaCross" in out.stdout
    expected = nbb.sweep(SmaCross, daily, GRID, n=20, seed=7, metric="max_drawdown_pct",
                         maximize=False, progress=False)
    got = ns["_backtest"]
    pd.testing.assert_frame_equal(comparable(got.results), comparable(expected.results),
                                  check_exact=True)
    assert got.best == expected.best and got.metric == "max_drawdown_pct" and not got.maximize


def test_save_then_resume_runs_nothing_twice(shell, ns, daily, tmp_path):
    folder = shlex.quote(str(tmp_path / "run one"))
    backtest(shell, f"SmaCross daily --grid fast=5,10,20 --save {folder} --no-progress -o first")
    assert (tmp_path / "run one").is_dir()
    out = backtest(shell, f"SmaCross daily --grid fast=5,10,20 --save {folder} --resume"
                          " --no-progress -o again")
    assert "Sweeping 3 points of SmaCross in this process (3 already saved)" in out.stdout
    pd.testing.assert_frame_equal(comparable(ns["again"].results),
                                  comparable(ns["first"].results), check_exact=True)


def test_top_shows_the_table_of_the_best_runs(shell, ns, monkeypatch):
    import plotly.io as pio


    monkeypatch.setattr(pio.renderers, "default", "plotly_mimetype")  # never a browser
    out = backtest(shell, "SmaCross daily --grid fast=5:60:5 --top 3 --no-progress")
    figure = out.outputs[-1].data["application/vnd.plotly.v1+json"]
    assert len(figure["data"][0]["cells"]["values"][0]) == 3


# ---------------------------------------------------------------------- %%backtest
BREAKOUT = '''
class Breakout(Strategy):
    lookback = Param(20, low=5, high=100)
    note = "${HOME} {lookback}"

    def init(self):
        self.high = self.indicator(lambda d: d["High"].rolling(self.lookback).max())

    def next(self, bar):
        if bar.close >= self.high[bar.i]:
            self.buy()
        elif self.position and bar.i % 20 == 0:
            self.close()
'''


def test_cell_defines_the_strategy_and_sweeps_it_on_two_engines(shell, ns, current, daily):
    out = backtest(shell, "daily --grid lookback=10:50:10 --engines 2 --no-progress -o bo", BREAKOUT)
    assert "Sweeping 4 points of Breakout on 2 engines" in out.stdout
    breakout = ns["Breakout"]
    assert breakout.note == "${HOME} {lookback}"  # the cell is not expanded
    expected = nbb.sweep(breakout, daily, {"lookback": range(10, 50, 10)}, progress=False)
    assert ns["bo"].status == "complete" and ns["bo"].engines == 2
    pd.testing.assert_frame_equal(comparable(ns["bo"].results), comparable(expected.results),
                                  check_exact=True)
    # running the same cell again redefines the class: it is found again
    out = backtest(shell, "daily --grid lookback=10,20 --no-progress", BREAKOUT)
    assert "Sweeping 2 points of Breakout in this process" in out.stdout
    assert ns["Breakout"] is not breakout


def test_cell_with_several_strategies_needs_strategy_option(shell, ns, daily):
    cell = """
    class Fast(Strategy):
        n = 5
        def signals(self, data):
            return (data["Close"].diff(self.n) > 0).astype(float)

    class Slow(Fast):
        n = 50
    """
    with pytest.raises(UsageError, match=r"defines 2 Strategy subclasses \(Fast, Slow\): choose one"
                                         " with --strategy NAME"):
        backtest(shell, "daily --grid n=5,10", cell)
    out = backtest(shell, "daily --strategy Slow --grid n=40,60 --no-progress", cell)
    assert "Sweeping 2 points of Slow in this process" in out.stdout
    assert list(ns["_backtest"].results.n) == [40, 60]
    with pytest.raises(UsageError, match="the cell defines no Strategy subclass"):
        backtest(shell, "daily --grid n=5", "x = 1\n")
    with pytest.raises(UsageError, match="STRATEGY 'Slw' is not defined. Did you mean: Slow"):
        backtest(shell, "daily --strategy Slw", cell)


def test_errors_raised_by_user_code_are_not_turned_into_usage_errors(shell, ns):
    with pytest.raises(ZeroDivisionError):
        backtest(shell, "daily", "1 / 0\n")
    with pytest.raises(StrategyError, match="signals raised ZeroDivisionError") as raised:
        backtest(shell, "Broken daily")
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    # in a sweep, the failing runs are rows; the magic says so and where the tracebacks are
    out = backtest(shell, "Broken daily --grid n=1,2,3 --no-progress")
    assert ns["_backtest"].failed == 1 and ns["_backtest"].status == "complete"
    assert "1 of 3 runs raised; the first, row 0 (n=1), raised ZeroDivisionError" in out.stderr
    assert "_backtest.results.traceback" in out.stderr
    out = backtest(shell, "Broken daily --grid n=1,2,3 --stop-on-error --no-progress")
    assert ns["_backtest"].status == "stopped"
    assert "stopped at the first failure: row 0" in out.stderr and "Traceback" in out.stderr


def test_ctrl_c_cancels_the_sweep_and_keeps_finished_rows(shell, ns):
    # The fifth run (in the sweep's thread) sends SIGINT, which Python raises as
    # KeyboardInterrupt in the main thread: where the magic waits.
    cell = """
    import os, signal, time
    class Interrupted(Strategy):
        n = 1
        calls = [0]
        def signals(self, data):
            Interrupted.calls[0] += 1
            if Interrupted.calls[0] == 5:
                os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.02)
            return data["Close"] * 0.0
    """
    out = backtest(shell, "daily --grid n=1:301 --no-progress -o stopped", cell)
    stopped = ns["stopped"]
    assert stopped.status == "cancelled"
    done = int((stopped.results.status == "done").sum())
    # Cancel interrupts the running fifth run too (in-process as on engines).
    assert 4 <= done < 300 and stopped.results.status.isin(["done", "cancelled"]).all()
    assert stopped.results.loc[stopped.results.status == "done", "equity_final"].notna().all()
    assert f"Cancelled: {done} of 300 runs finished, kept in stopped" in out.stdout


# ------------------------------------------------------------------- input errors
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("SmaCros daily", "STRATEGY 'SmaCros' is not defined. Did you mean: SmaCross?"),
        ("Zzzz daily", "STRATEGY 'Zzzz' is not defined. The strategies defined: Broken, Knobs, SmaCross"),
        ("SmaCross qqqq", "DATA 'qqqq' is not defined. The data frames defined: daily, no_close, universe"),
        ("SmaCross dialy", "DATA 'dialy' is not defined. Did you mean: daily?"),
        ("daily daily", "STRATEGY 'daily' is a DataFrame, not a Strategy subclass"),
        ("SmaCross SmaCross", "DATA 'SmaCross' is the class SmaCross, not a DataFrame of OHLC bars"),
        ("SmaCross numbers", "DATA 'numbers' is a dict, not a DataFrame of OHLC bars or a"),
        ("SmaCross daily[0]", "DATA must be the name of a variable, got 'daily[0]'"),
        ("SmaCross daily.nothing", "DATA 'daily.nothing': daily has no attribute 'nothing'"),
        ("SmaCross no_close", "data is missing column(s) 'Close'"),
        ("SmaCross daily --grid fsat=5",
         "--grid fsat=5: Strategy 'SmaCross' has no parameter 'fsat'. Did you mean: fast?"),
        ("SmaCross daily --set slw=5", "Strategy 'SmaCross' has no parameter 'slw'. Did you mean: slow?"),
        ("SmaCross daily --grid fast=5:x:5", "--grid fast=5:x:5: stop 'x' is not a number"),
        ("SmaCross daily --grid fast=a:60:5", "--grid fast=a:60:5: start 'a' is not a number"),
        ("SmaCross daily --grid fast=5::5", "--grid fast=5::5: stop is missing"),
        ("SmaCross daily --grid fast=5:60:0", "--grid fast=5:60:0: step must not be 0"),
        ("SmaCross daily --grid fast=5:60:5:1", "a range is start:stop:step, got 4 parts"),
        ("SmaCross daily --grid fast=60:5:5",
         "--grid fast=60:5:5 is empty: no value from start 60 up to stop 5 (stop is excluded"),
        ("SmaCross daily --grid fast=5,,10", "--grid fast=5,,10: item 2 of '5,,10' is empty"),
        ("SmaCross daily --grid fast=5,x", "--grid fast=5,x: 'x' is not a number"),
        ("Knobs daily --grid hedge=maybe", "--grid hedge=maybe: 'maybe' is not true or false"),
        ("Knobs daily --grid stop=0:1", "--grid stop=0:1: give a step, start:stop:step"),
        ("Knobs daily --grid side=flat", "Knobs parameter 'side' must be one of ['long', 'short']"),
        ("SmaCross daily --grid fast=0:1:1e-9", "has 1,000,000,000 values; at most 1,000,000"),
        ("SmaCross daily --grid fast", "--grid 'fast' must be NAME=VALUE"),
        ("SmaCross daily --grid fast=5 --save /proc/nbbacktest/run",
         "save='/proc/nbbacktest/run': cannot write a checkpoint there (No such file or directory)"),
        ("Knobs daily --grid n=1:100:1 stop=0:1:0.00001",
         "runs (9,900,000 points (99 x 100,000)), over the limit of 1,000,000: sample it with n=..."),
        ("SmaCross daily --grid fast=5 fast=10", "--grid gives 'fast' twice"),
        ("SmaCross daily --grid fast=1", "--grid fast=1: SmaCross parameter 'fast' must be >= 2, got 1"),
        ("SmaCross daily --grid fast=5.5", "SmaCross parameter 'fast' must be int, got float 5.5"),
        ("SmaCross daily --grid fast=5 --set fast=10", "fast is both in --grid and in --set"),
        ("SmaCross daily --grid fast=5:60:5 --where 'fast > 1000'",
         "where filtered out all 11 points of the grid"),
        ("SmaCross daily --grid fast=5 --where 'fats < 3'",
         "where refers to unknown parameter 'fats'. Did you mean: fast?"),
        ("SmaCross daily --grid fast=5 --where '__import__(\"os\")'", "may not use '__import__'"),
        ("SmaCross daily --grid fast=5 --where 'open(\"x\")'", "may not use 'open'"),
        ("SmaCross daily --grid fast=5 --where 'fast.__class__'", "may not use the attribute '__class__'"),
        ("SmaCross daily --grid fast=5 --metric sharp",
         "metric 'sharp' is not a numeric stat. Did you mean: sharpe? Valid metrics: equity_final,"),
        ("SmaCross daily --grid fast=5 --engines 0", "argument --engines: 0 is not a number of engines"),
        ("SmaCross daily --grid fast=5 --engines many", "argument --engines: 'many' is not a number"),
        ("SmaCross daily --grid fast=5 --sample 0", "argument --sample: 0 must be 1 or more"),
        ("SmaCross daily --grid fast=5 --symbols AAA", "symbols= selects symbols of a universe"),
        ("SmaCross universe --grid fast=5 --symbols AAA,ZZZ", "symbols ['ZZZ'] are not in the data"),
        ("SmaCross daily -o 1x", "argument -o/--output: '1x' is not a valid variable name"),
        ("SmaCross daily --commission -1", "--commission must be a finite number >= 0.0, got -1.0"),
        ("SmaCross daily --where 'fast < slow'", "--where applies to a sweep: give --grid too"),
        ("SmaCross daily --engines 2", "--engines applies to a sweep: give --grid too"),
        ("SmaCross daily --grid fast=5 --resume", "--resume continues a sweep saved with --save DIR"),
        ("SmaCross daily --where 'fast < slow", "cannot read the options: No closing quotation"),
        ("SmaCross", "the following arguments are required: DATA"),
        ("SmaCross daily --bogus", "unrecognized arguments: --bogus"),
        ("SmaCross daily --fill later", "argument --fill: invalid choice: 'later'"),
    ],
)
def test_input_errors_are_one_line_usage_errors(shell, ns, daily, line, message):
    ns["numbers"] = {"AAA": 1}
    ns["no_close"] = daily.drop(columns="Close")
    with pytest.raises(UsageError) as raised:
        backtest(shell, line)
    assert type(raised.value) is UsageError
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


class Band(nbb.Strategy):
    """Parameter names close to one another, for the did-you-mean hints."""

    period = nbb.Param(20, low=2, high=200)
    upper = nbb.Param(2.0, low=0.0, high=5.0)
    lower = nbb.Param(2.0, low=0.0, high=5.0)

    def signals(self, data):
        return (data["Close"] > data["Close"].rolling(self.period).mean()).astype(float)


@pytest.mark.parametrize(("line", "message"), [
    ("Band daily --grid perod=5:10",
     "--grid perod=5:10: Strategy 'Band' has no parameter 'perod'. Did you mean: period?"),
    ("Band daily --set perod=5",
     "--set perod=5: Strategy 'Band' has no parameter 'perod'. Did you mean: period?"),
    ("Bnad daily", "STRATEGY 'Bnad' is not defined. Did you mean: Band?"),
])
def test_did_you_mean_offers_the_closest_name_only(shell, ns, line, message):
    ns["Band"] = Band
    with pytest.raises(UsageError) as raised:
        backtest(shell, line)
    assert str(raised.value).endswith(message)


def test_closest_keeps_names_tied_for_best():
    from nbbacktest.magics import closest

    assert closest("perod", ["period", "upper", "lower"]) == ["period"]
    assert closest("fst", ["fast", "fist", "slow"]) == ["fast", "fist"]
    assert closest("qq", ["fast"]) == []


def test_help_states_real_defaults_and_the_optional_step(shell):
    doc = " ".join(shell.find_line_magic("backtest").__doc__.split())
    assert "(0.002)" not in doc
    assert "fraction of traded notional paid per fill, e.g. 0.002 for 0.2% (default 0)" in doc
    assert "without :step, the Param's declared step, else 1 for an int parameter" in doc


def test_a_range_without_a_step_counts_by_one_for_an_int(shell, ns, daily):
    ns["Band"] = Band
    backtest(shell, "Band daily --grid period=20:40 --no-progress -o stepless")
    assert ns["stepless"].results["period"].tolist() == list(range(20, 40))
    with pytest.raises(UsageError, match="--grid upper=1:2: give a step, start:stop:step"):
        backtest(shell, "Band daily --grid upper=1:2")


def test_counts_in_the_cluster_table_have_thousands_separators():
    from nbbacktest.magics import format_status

    status = {"running": True, "kind": "connected", "engines": 1500, "hosts": {"a": 1500},
              "busy": 1200, "idle": 300, "data": {}}
    assert format_status(status).splitlines()[:3] == [
        "Cluster (connected): 1,500 engines on 1 host, 1,200 busy, 300 idle",
        "  host  engines",
        "  a       1,500",
    ]


def test_a_where_syntax_error_points_at_the_problem(shell, ns):
    with pytest.raises(UsageError, match="where='fast <' is not a valid expression"):
        backtest(shell, "SmaCross daily --grid fast=5 --where 'fast <'")


def test_ui_without_the_sweep_widget_is_a_usage_error(shell, ns, monkeypatch):
    # As when the widget module cannot load (no ipywidgets): its import fails.
    monkeypatch.setitem(sys.modules, "nbbacktest.display.sweep_widget", None)
    with pytest.raises(UsageError, match="--ui: the sweep widget is not available"):
        backtest(shell, "SmaCross daily --ui")


def test_ui_shows_the_sweep_widget_set_up_from_the_options(shell, ns):
    out = backtest(shell, 'SmaCross daily --grid fast=5:60:5 --set slow=50 --where "fast < slow"'
                          " --metric sortino --minimize --commission 0.001 --ui -o widget")
    widget = ns["widget"]
    assert isinstance(widget, nbb_display.SweepWidget)
    assert widget.grid()["fast"] == list(range(5, 60, 5))
    assert widget.strategy == SmaCross(slow=50) and widget.where() == "fast < slow"
    assert widget.metric_box.value == "sortino" and widget.maximize_box.value is False
    assert widget.settings.commission == 0.001
    assert out.outputs and "Sweeping" not in out.stdout  # shown, not run
    assert widget.result is None


def test_spec_parser_is_exact_for_decimal_steps():
    assert parse_grid_spec("stop", "0:0.35:0.1", nbb.Param(0.0), "S") == [0.0, 0.1, 0.2, 0.3]
    assert parse_grid_spec("fast", "5:30", nbb.Param(10, step=10), "S") == [5, 15, 25]
    assert parse_grid_spec("mode", "09:30,10:00", nbb.Param("09:30"), "S") == ["09:30", "10:00"]


# ------------------------------------------------------------------------ %cluster
def test_cluster_status_table_and_misuse(shell, current):
    out = cluster_magic(shell)
    assert out.stdout.startswith("Cluster (local): 2 engines on 1 host,")
    assert "  host" in out.stdout and "data" in out.stdout
    for line, message in [
        ("start", "a cluster is already running (local, 2 engines): stop it first with %cluster stop"),
        ("connect --profile default", "a cluster is already running"),
        ("stop -n 2", "-n/--engines applies to %cluster start"),
        ("--url-file x.json", "--cluster-id and --url-file apply to %cluster connect"),
        ("--profile p", "--profile applies to %cluster start and %cluster connect"),
        ("strat", "argument ACTION: invalid choice: 'strat'"),
        ("start -n zero", "argument -n/--engines: 'zero' is not a number of engines"),
    ]:
        with pytest.raises(UsageError) as raised:
            cluster_magic(shell, line)
        assert message in str(raised.value), line
    assert Cluster.current() is current and current.running


def test_cluster_with_none_running(shell, no_cluster, tmp_path):
    out = cluster_magic(shell)
    assert out.stdout.startswith("No cluster is running. Start one with %cluster start -n 4")
    with pytest.raises(UsageError, match="no cluster is running, so there is nothing to stop"):
        cluster_magic(shell, "stop")
    missing = tmp_path / "ipcontroller-client.json"
    with pytest.raises(UsageError, match="no cluster to connect to: url_file .* does not exist"):
        cluster_magic(shell, f"connect --url-file {shlex.quote(str(missing))}")
    with pytest.raises(UsageError) as raised:  # ~ is the home directory, as in a shell
        cluster_magic(shell, "connect --url-file ~/no-such-nbbacktest-client.json")
    assert repr(os.path.expanduser("~/no-such-nbbacktest-client.json")) in str(raised.value)
    assert Cluster.current() is None


def test_cluster_connect_then_stop_only_disconnects(shell, cluster, no_cluster):
    out = cluster_magic(shell, f"connect --url-file {shlex.quote(cluster.connection_file)}")
    assert out.stdout.strip() == "Connected to a cluster of 2 engines"
    connected = Cluster.current()
    assert connected is not None and connected is not cluster and not connected.owned
    out = cluster_magic(shell, "stop")
    assert out.stdout.strip() == "Disconnected from the cluster of 2 engines (it keeps running)"
    assert Cluster.current() is None and not connected.running
    assert cluster.running and len(cluster.client.ids) == 2


def test_cluster_start_status_and_stop_with_a_real_cluster(shell, ns, no_cluster):
    started = time.monotonic()
    out = cluster_magic(shell, "start -n 1")
    # (ipyparallel draws its own bar while the engines register: the last line is ours)
    assert out.stdout.splitlines()[-1].startswith("Started a local cluster of 1 engine in")
    own = Cluster.current()
    processes = own.process_ids()
    assert own is not None and own.owned and processes
    assert cluster_magic(shell).stdout.startswith("Cluster (local): 1 engine on 1 host, 0 busy")
    out = backtest(shell, "SmaCross daily --grid fast=5,10 --engines -1 --no-progress")
    assert "Sweeping 2 points of SmaCross on 1 engine" in out.stdout
    assert ns["_backtest"].engines == 1 and ns["_backtest"].status == "complete"
    out = cluster_magic(shell, "stop")
    assert out.stdout.strip() == "Stopped the local cluster of 1 engine"
    assert Cluster.current() is None
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                   for pid in processes)
    assert time.monotonic() - started < 60


def test_engines_without_a_cluster_start_a_local_one_and_say_so(shell, ns, no_cluster, daily):
    out = backtest(shell, "SmaCross daily --grid fast=5,10 --engines 2 --no-progress")
    own = Cluster.current()
    try:
        assert own is not None and own.owned and len(own.ids) == 2
        lines = out.stdout.splitlines()
        said = lines.index("Started a local cluster of 2 engines (stop it with %cluster stop)")
        assert lines[said + 1] == "Sweeping 2 points of SmaCross on 2 engines"
        expected = nbb.sweep(SmaCross, daily, {"fast": [5, 10]}, progress=False)
        pd.testing.assert_frame_equal(comparable(ns["_backtest"].results),
                                      comparable(expected.results), check_exact=True)
    finally:
        cluster_magic(shell, "stop")
    assert not own.running


def test_the_magics_sweeps_show_the_notebook_progress_display(shell, monkeypatch):
    from nbbacktest.display import show_progress
    from nbbacktest.parallel import progress

    monkeypatch.setattr(progress, "default_display", None)
    shell.run_line_magic("unload_ext", "nbbacktest")
    shell.run_line_magic("load_ext", "nbbacktest")
    assert progress.default_display is show_progress


def test_min_trades_reaches_the_sweep_and_a_bad_one_is_a_usage_error(shell, ns, daily):
    from test_ranking import GRID as SPIKY_GRID
    from test_ranking import Spiky

    ns["Spiky"] = Spiky
    backtest(shell, "Spiky daily --grid fast=2,5,10 slow=20,40,60 --min-trades 5 --no-progress")
    expected = nbb.sweep(Spiky, daily, SPIKY_GRID, min_trades=5, progress=False)
    got = ns["_backtest"]
    pd.testing.assert_frame_equal(comparable(got.results), comparable(expected.results), check_exact=True)
    assert got.min_trades == 5 and got.best_index == expected.best_index
    assert got.results.loc[got.best_index, "trades"] >= 5
    with pytest.raises(UsageError, match="min-trades"):
        backtest(shell, "Spiky daily --grid fast=2,5 --min-trades -1 --no-progress")


def test_walk_forward_in_the_magic_gives_nbb_walk_forward(shell, ns, daily):
    backtest(shell, 'SmaCross daily --grid fast=5:30:5 slow=20:60:20 --where "fast < slow"'
                    " --walk-forward 3Y:1Y --no-progress -o wf")
    got = ns["wf"]
    expected = nbb.walk_forward(SmaCross, daily, {"fast": range(5, 30, 5), "slow": [20, 40]},
                                where="fast < slow", train="3Y", test="1Y", progress=False)
    pd.testing.assert_frame_equal(got.folds, expected.folds)
    with pytest.raises(UsageError, match="--walk-forward chooses among the points of a grid"):
        backtest(shell, "SmaCross universe --walk-forward 3Y:1Y --no-progress")
    with pytest.raises(UsageError, match="--walk-forward applies to a sweep: give --grid too"):
        backtest(shell, "SmaCross daily --walk-forward 3Y:1Y")
    with pytest.raises(UsageError, match="--anchored applies to a walk-forward"):
        backtest(shell, "SmaCross daily --grid fast=5,10 --anchored")
