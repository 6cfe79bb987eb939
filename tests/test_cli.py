"""``nbbacktest run``, ``compare`` and ``report``: real sweeps into real folders, real exit statuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest import cli, cli_inputs
from nbbacktest.__main__ import _subparser, main, parser
from nbbacktest.magics import BacktestMagics

pytestmark = pytest.mark.timeout(180)

STRATEGIES = textwrap.dedent('''
    import time
    from nbbacktest import Param, Strategy

    class Cross(Strategy):
        fast = Param(10, low=2)
        slow = Param(30, low=3)

        def signals(self, data):
            close = data["Close"]
            return (close.rolling(self.fast).mean() > close.rolling(self.slow).mean()).astype(float)

    class Slow(Cross):
        """Cross that takes a while: long enough to interrupt."""

        def signals(self, data):
            time.sleep(0.05)
            return super().signals(data)

    class Raises(Cross):
        def signals(self, data):
            raise RuntimeError("no signal today")
''')
GRID = ["--grid", "fast=5:25:5", "slow=20:50:10", "--where", "fast < slow"]


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder holding strategies.py, which is the current directory."""
    (tmp_path / "strategies.py").write_text(STRATEGIES)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("strategies", None)


def run_cli(*argv: str) -> int:
    return main(list(argv))


def without_runtime(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=list(cli.RUNTIME_COLUMNS))


def start(*argv: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nbbacktest", *argv], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


# ------------------------------------------------------------------------- run
def test_run_writes_the_results_identical_to_a_sweep_in_a_notebook(folder, capsys):
    assert run_cli("run", "strategies.py:Cross", "sample:daily", *GRID, "--commission", "0.001",
                   "--out", "out") == 0
    out = folder / "out"
    for name in ("results.csv", "results.parquet", "best_trades.csv", "best_equity.csv", "spec.json",
                 "rows.jsonl"):
        assert (out / name).is_file(), name
    import strategies  # what the command imported

    expected = nbb.sweep(strategies.Cross, nbb.load_sample("daily"),
                         {"fast": range(5, 25, 5), "slow": range(20, 50, 10)},
                         where="fast < slow", commission=0.001, progress=False)
    written = pd.read_parquet(out / "results.parquet")
    pd.testing.assert_frame_equal(without_runtime(written), without_runtime(expected.results))
    loaded = nbb.load_sweep(out)  # in a notebook: the same SweepResult as the command line had
    pd.testing.assert_frame_equal(loaded.results, written)
    assert loaded.best == expected.best and loaded.card["trials"]["runs"] == 11
    best = expected.detail(expected.best_index)
    trades = pd.read_csv(out / "best_trades.csv")
    assert len(trades) == len(best.trades)
    equity = pd.read_csv(out / "best_equity.csv", index_col=0)
    assert equity["equity"].to_numpy().tolist() == pytest.approx(best.equity.to_numpy().tolist())
    printed = capsys.readouterr()
    assert f"Best: {expected.best!r}" in printed.out
    assert "Sweeping 11 runs in this process" in printed.out
    # Not a terminal: plain progress lines, the last one complete.
    assert printed.err.strip().splitlines()[-1].startswith("[####################] 11/11")


def test_run_on_a_folder_universe_writes_a_summary_and_trades_per_symbol(folder, capsys):
    universe = folder / "prices"
    universe.mkdir()
    for symbol, frame in list(nbb.load_sample("universe").items())[:4]:
        frame.iloc[:500].to_csv(universe / f"{symbol}.csv")
    assert run_cli("run", "strategies.py:Cross", str(universe), "--grid", "fast=5:15:5",
                   "--max-symbols", "3", "--out", "out") == 0
    summary = pd.read_csv(folder / "out" / "symbols.csv", index_col=0)
    assert list(summary.index) == ["AAA", "BBB", "CCC"]
    assert summary["runs"].tolist() == [2, 2, 2]
    assert sorted(p.name for p in (folder / "out" / "trades").iterdir()) == ["AAA.csv", "BBB.csv", "CCC.csv"]
    assert run_cli("run", "strategies.py:Cross", str(universe), "--grid", "fast=5:15:5",
                   "--symbols", "DDD", "--out", "one") == 0
    assert set(pd.read_csv(folder / "one" / "results.csv")["symbol"]) == {"DDD"}


def test_a_folder_that_holds_a_sweep_needs_resume_or_force(folder, capsys):
    argv = ["run", "strategies.py:Cross", "sample:daily", *GRID, "--out", "out"]
    assert run_cli(*argv) == 0
    capsys.readouterr()
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert "already holds a sweep (strategies.Cross, 11 runs)" in err and "--resume" in err
    assert len(err.strip().splitlines()) == 1
    assert run_cli(*argv, "--resume") == 0
    assert "(11 already saved)" in capsys.readouterr().out
    assert run_cli("run", "strategies.py:Cross", "sample:daily", "--grid", "fast=5,10", "--out", "out",
                   "--force") == 0
    assert len(pd.read_csv(folder / "out" / "results.csv")) == 2


def test_every_run_failing_exits_1_with_the_tracebacks_saved(folder, capsys):
    assert run_cli("run", "strategies.py:Raises", "sample:daily", "--grid", "fast=5,10",
                   "--out", "out") == 1
    assert "Every run failed" in capsys.readouterr().err
    assert "no signal today" in (folder / "out" / "errors.log").read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_interrupted_run_exits_130_keeps_its_rows_and_resume_finishes_it(folder, signum):
    argv = ["run", "strategies.py:Slow", "sample:daily", "--grid", "fast=2:42:1", "--out", "out"]
    process = start(*argv, cwd=folder)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (folder / "out" / "rows.jsonl").is_file():
        time.sleep(0.1)
    time.sleep(0.8)  # some rows finish
    process.send_signal(signum)  # SIGTERM: what Slurm sends at the end of a job's time
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Interrupted:" in err and "--resume" in err
    kept = len((folder / "out" / "rows.jsonl").read_text().splitlines())
    assert 0 < kept < 40
    resumed = start("run", "--out", "out", "--resume", cwd=folder)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert f"({kept:,} already saved)" in out
    slow = cli_inputs.load_strategy("strategies.py:Slow")
    whole = nbb.sweep(slow, nbb.load_sample("daily"), {"fast": range(2, 42)}, progress=False)
    pd.testing.assert_frame_equal(without_runtime(pd.read_parquet(folder / "out" / "results.parquet")),
                                  without_runtime(whole.results))


# --------------------------------------------------------------------- config
def test_a_toml_config_gives_the_options_and_the_command_line_wins(folder, capsys):
    (folder / "sweep.toml").write_text(textwrap.dedent('''
        strategy = "strategies.py:Cross"
        data = "sample:daily"
        where = "fast < slow"
        metric = "sortino"
        commission = 0.001
        out = "out"
        [grid]
        fast = "5:25:5"
        slow = [20, 40]
    '''))
    assert run_cli("run", "--config", "sweep.toml", "--metric", "return_pct") == 0
    spec = nbb.load_sweep("out")
    assert spec.metric == "return_pct" and spec.settings.commission == 0.001
    assert len(spec) == 7  # fast 5..20 x slow 20, 40, fast < slow
    assert run_cli("run", "--config", "sweep.toml", "--grid", "fast=5,10", "--out", "other") == 0
    assert len(nbb.load_sweep("other")) == 2  # the command line's grid replaces the config's


def test_a_yaml_config_works_too(folder, capsys):
    (folder / "sweep.yaml").write_text("grid:\n  fast: '5:15:5'\nstop_on_error: true\nout: out\n")
    assert run_cli("run", "strategies.py:Cross", "sample:daily", "--config", "sweep.yaml") == 0
    assert nbb.load_sweep("out").stop_on_error is True


@pytest.mark.parametrize("text, suffix, message", [
    ("metrc = 'sharpe'\n", ".toml", "unknown key 'metrc'. Did you mean: metric?"),
    ("metric = \n", ".toml", "cannot parse it"),
    ("- a\n- b\n", ".yaml", "must hold a table of options, not a list"),
    ("", ".ini", "give a .toml, .yaml or .yml file"),
    ("close_at_end = 'yes'\n", ".toml", "close_at_end must be true or false"),
])
def test_a_bad_config_is_one_line_and_exit_2(folder, capsys, text, suffix, message):
    path = folder / f"sweep{suffix}"
    path.write_text(text)
    assert run_cli("run", "strategies.py:Cross", "sample:daily", "--config", path.name, "--out", "o") == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_config_that_cannot_be_read_is_exit_2(folder, capsys):
    assert run_cli("run", "--config", "missing.toml", "--out", "o") == 2
    assert "--config missing.toml: cannot read it" in capsys.readouterr().err


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("argv, message", [
    (["nowhere.py:Cross", "sample:daily"], "no file 'nowhere.py'"),
    (["strategies.py:Crosss", "sample:daily"], "has no class 'Crosss'. Did you mean: Cross?"),
    (["strategies.py", "sample:daily"], "must be FILE.py:CLASS or MODULE:CLASS"),
    (["strategies.py:time", "sample:daily"], "time is a module, not a Strategy subclass"),
    (["no_such_module:Cross", "sample:daily"], "no module 'no_such_module'"),
    (["strategies.py:Cross", "missing.csv"], "DATA 'missing.csv': no such file or folder"),
    (["strategies.py:Cross", "sample:dialy"], "no sample 'dialy'. Did you mean: daily?"),
    (["strategies.py:Cross", "sample:daily", "--max-symbols", "2"], "--max-symbols applies to a universe"),
    (["strategies.py:Cross", "sample:daily", "--grid", "fsat=5:10"], "has no parameter 'fsat'"),
    (["strategies.py:Cross", "sample:daily", "--metric", "sharp"], "Did you mean: sharpe?"),
    (["strategies.py:Cross", "sample:daily", "--engines", "2", "--profile", "x"], "not both"),
    (["strategies.py:Cross"], "give STRATEGY and DATA"),
])
def test_bad_input_is_one_line_and_exit_2(folder, capsys, argv, message):
    assert run_cli("run", *argv, "--out", "out") == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_out_is_required_and_a_file_is_refused(folder, capsys):
    assert run_cli("run", "strategies.py:Cross", "sample:daily") == 2
    assert "--out DIR is required" in capsys.readouterr().err
    (folder / "file").write_text("")
    assert run_cli("run", "strategies.py:Cross", "sample:daily", "--out", "file") == 2
    assert "it is a file, not a folder" in capsys.readouterr().err


def test_a_module_that_fails_to_import_shows_its_shortened_traceback(folder, capsys):
    (folder / "broken.py").write_text("import math\n\nvalue = math.sqrt(-1)\n")
    assert run_cli("run", "broken.py:Cross", "sample:daily", "--out", "out") == 2
    err = capsys.readouterr().err
    assert "importing broken.py failed" in err and "value = math.sqrt(-1)" in err
    assert "ValueError: math domain error" in err
    assert "importlib" not in err  # the import machinery's frames are cut
    assert not (folder / "out").exists()


def test_argparse_errors_exit_2(folder):
    with pytest.raises(SystemExit) as exited:
        run_cli("run", "strategies.py:Cross", "sample:daily", "--engines", "zero", "--out", "o")
    assert exited.value.code == 2


# ------------------------------------------------------- one parser, two fronts
def test_the_command_line_has_every_sweep_option_of_the_magic_with_the_same_help():
    magic = BacktestMagics.backtest.parser  # type: ignore[attr-defined]
    run = _subparser(parser(), "run")
    cli_options = {o: a for a in run._actions for o in a.option_strings}
    notebook_only = {"-o", "--output", "--ui", "--save", "-h", "--help"}
    for action in magic._actions:
        for option in action.option_strings:
            if option in notebook_only:
                continue
            assert option in cli_options, option
            assert cli_options[option].help == action.help, option
            assert cli_options[option].type == action.type, option


# -------------------------------------------------------------------- compare
def test_compare_says_identical_or_which_rows_and_columns_differ(folder, capsys):
    assert run_cli("run", "strategies.py:Cross", "sample:daily", *GRID, "--out", "a") == 0
    assert run_cli("run", "strategies.py:Cross", "sample:daily", *GRID, "--out", "b") == 0
    assert run_cli("run", "strategies.py:Cross", "sample:daily", *GRID, "--commission", "0.01",
                   "--out", "c") == 0
    capsys.readouterr()
    assert run_cli("compare", "a", "b") == 0
    assert "a and b: identical" in capsys.readouterr().out
    assert run_cli("compare", "a", "c") == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "11 of 11 rows differ" in out and "return_pct" in out
    assert "why: other settings" in out
    assert run_cli("compare", "a", "nowhere") == 2


# --------------------------------------------------------------------- report
def test_report_writes_one_html_file_from_a_folder(folder, capsys):
    assert run_cli("run", "strategies.py:Cross", "sample:daily", *GRID, "--out", "out") == 0
    capsys.readouterr()
    assert run_cli("report", "out") == 0
    assert "Wrote out/report.html" in capsys.readouterr().out
    html = (folder / "out" / "report.html").read_text()
    assert "<html" in html.lower() and "Cross" in html
    assert run_cli("report", "nowhere") == 2


# ------------------------------------------------------------- ipcluster --profile
def test_run_on_a_cluster_started_with_ipcluster_gives_the_in_process_results(folder, capsys):
    """``ipcluster start --profile P`` then ``run --profile P``: the head-node and Slurm recipe."""
    env = {**os.environ, "IPYTHONDIR": str(folder / "ipython")}
    ipcluster = [sys.executable, "-m", "ipyparallel.cluster", "start", "--profile", "clitest", "-n", "1"]
    subprocess.run([*ipcluster, "--daemonize"], env=env, check=True, timeout=60, capture_output=True)
    try:
        argv = ["strategies.py:Cross", "sample:daily", *GRID]
        ran = subprocess.run([sys.executable, "-m", "nbbacktest", "run", *argv, "--profile", "clitest",
                              "--out", "parallel"], cwd=folder, env=env, text=True, capture_output=True,
                             timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert "Connected to the cluster of profile 'clitest' (1 engine)" in ran.stdout
        assert "Sweeping 11 runs on 1 engine" in ran.stdout
    finally:
        subprocess.run([sys.executable, "-m", "ipyparallel.cluster", "stop", "--profile", "clitest"],
                       env=env, timeout=60, capture_output=True)
    assert run_cli("run", *argv, "--out", "sequential") == 0
    assert run_cli("compare", "sequential", "parallel") == 0
    assert "identical" in capsys.readouterr().out


def test_min_trades_on_the_command_line(folder, capsys):
    from test_ranking import GRID as SPIKY_GRID
    from test_ranking import Spiky

    assert run_cli("run", "test_ranking:Spiky", "sample:daily", "--grid", "fast=2,5,10",
                   "slow=20,40,60", "--min-trades", "5", "--no-progress", "--out", "out") == 0
    expected = nbb.sweep(Spiky, nbb.load_sample("daily"), SPIKY_GRID, min_trades=5, progress=False)
    written = pd.read_parquet(folder / "out" / "results.parquet")
    pd.testing.assert_frame_equal(without_runtime(written), without_runtime(expected.results))
    assert f"Best: {expected.best!r}" in capsys.readouterr().out
    assert written.loc[expected.best_index, "trades"] >= 5 and written["too_few_trades"].sum() == 3
    with pytest.raises(SystemExit):
        run_cli("run", "test_ranking:Spiky", "sample:daily", "--min-trades", "x", "--out", "bad")


def test_the_console_script_is_installed_and_names_itself_in_errors(folder):
    script = Path(sys.executable).parent / "nbbacktest"
    assert script.is_file(), "pip install -e . installs the nbbacktest console script"
    ran = subprocess.run([str(script), "run", "nowhere.py:Cross", "sample:daily", "--out", "o"],
                         cwd=folder, text=True, capture_output=True, timeout=60)
    assert ran.returncode == 2
    assert ran.stderr.startswith("nbbacktest run: error: STRATEGY nowhere.py:Cross: no file")


def test_compare_shows_a_few_cells_of_a_row_and_counts_the_rest():
    a = pd.DataFrame({name: [1.0, 2.0] for name in "abcde"})
    identical, lines = cli.compare_results(a, a + 1)
    assert not identical
    assert lines[1] == "row 0: a 1.0 vs 2.0; b 1.0 vs 2.0; c 1.0 vs 2.0; and 2 more columns"


# --------------------------------------------------------------- walk-forward
def test_run_walk_forward_writes_the_folds_of_nbb_walk_forward(folder, capsys):
    assert run_cli("run", "strategies.py:Cross", "sample:daily", "--grid", "fast=5:30:5", "slow=20:60:20",
                   "--where", "fast < slow", "--walk-forward", "3Y:1Y", "--anchored", "--out", "wf") == 0
    cross = cli_inputs.load_strategy("strategies.py:Cross")
    expected = nbb.walk_forward(cross, nbb.load_sample("daily"), {"fast": range(5, 30, 5), "slow": [20, 40]},
                                where="fast < slow", train="3Y", test="1Y", anchored=True, progress=False)
    folds = pd.read_csv(folder / "wf" / "folds.csv")
    assert folds["fold"].tolist() == expected.folds["fold"].tolist()
    assert folds[["fast", "slow"]].to_numpy().tolist() == expected.folds[["fast", "slow"]].to_numpy().tolist()
    assert folds["oos_sharpe"].to_numpy() == pytest.approx(expected.folds["oos_sharpe"].to_numpy())
    equity = pd.read_csv(folder / "wf" / "walk_forward_equity.csv", index_col=0)
    assert equity["equity"].iloc[-1] == pytest.approx(expected.equity.iloc[-1])
    assert expected.summary() in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--anchored"], "--anchored applies to a walk-forward"),
    (["--walk-forward", "3Y:1Y", "--sample", "3"], "--sample does not apply to --walk-forward"),
    (["--walk-forward", "3Y:1Y", "--symbols", "AAA"], "--symbols does not apply"),
])
def test_walk_forward_options_that_do_not_fit_are_exit_2(folder, capsys, argv, message):
    assert run_cli("run", "strategies.py:Cross", "sample:daily", "--grid", "fast=5,10", *argv,
                   "--out", "o") == 2
    assert message in capsys.readouterr().err


def test_a_walk_forward_length_that_is_not_train_test_is_an_argparse_error(folder, capsys):
    with pytest.raises(SystemExit):
        run_cli("run", "strategies.py:Cross", "sample:daily", "--walk-forward", "3Y", "--out", "o")
    assert "'3Y' is not TRAIN:TEST" in capsys.readouterr().err
