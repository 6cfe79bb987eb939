"""``python -m nbbacktest``: its help, its options, and what the demo shows and leaves behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid

import pandas as pd
import psutil
import pytest

from nbbacktest.__main__ import _compare, _speedup_text, main, parser
from nbbacktest.engine import backtest, load_sample
from nbbacktest.engine.examples import SmaCross, SmaCrossEvent

pytestmark = pytest.mark.timeout(180)


def marked(marker: str) -> list[psutil.Process]:
    """Processes whose environment carries ``marker`` (what the demo started, inherited)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("NBBACKTEST_TEST_MARK") == marker:
                found.append(process)
        except psutil.Error:
            continue
    return found


# ---------------------------------------------------------------------- help, options
def test_help_is_plain_text_listing_the_commands(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text  # no reST markup
    assert "demo" in text and "bench" in text and "python -m nbbacktest demo -n 4" in text


def test_each_command_lists_only_its_own_options(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    demo_help = capsys.readouterr().out
    assert "-n N, --engines N" in demo_help and "--repeat" not in demo_help
    assert "``" not in demo_help
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    bench_help = capsys.readouterr().out
    assert "--repeat REPEAT" in bench_help and "-n N, --engines N" in bench_help
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--repeat", "3"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --repeat 3" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["bench", "--repeat", "0"], "argument --repeat: 0 repetitions: give 1 or more"),
    (["demo", "-n", "0"], "argument -n/--engines: 0 engines: give 1 or more"),
    (["demo", "-n", "two"], "argument -n/--engines: 'two' is not a whole number of engines"),
])
def test_bad_options_name_the_argument(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------- the demo
def test_demo_says_what_it_does_prints_formatted_tables_and_returns_at_once():
    marker = uuid.uuid4().hex
    env = dict(os.environ, NBBACKTEST_TEST_MARK=marker)
    process = subprocess.Popen([sys.executable, "-m", "nbbacktest", "demo"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    lines: list[tuple[float, str]] = []
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True)
    reader.start()
    try:
        for line in process.stdout:
            lines.append((time.monotonic(), line.rstrip("\n")))
        process.wait(timeout=120)
        ended = time.monotonic()
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(timeout=10)
    out = "\n".join(text for _, text in lines)
    assert process.returncode == 0, "".join(errors)
    # What happens while the cluster starts, runs and stops is said as it happens.
    assert "Starting a local cluster of 2 engines ... ready in" in out
    assert "Sweeping fast x slow (179 points, fast < slow) on 2 engines" in out
    assert any("179/179" in line and "complete" in line for line in errors)
    stopping = next(t for t, text in lines if text.startswith("Stopping the cluster"))
    assert ended - stopping < 1.0, f"the prompt came back {ended - stopping:.1f} s after 'Stopping'"
    # Stats as the notebook's table shows them: labels and formatted values.
    stats = {text.strip().rsplit("  ", 1)[0].strip(): text.strip().rsplit("  ", 1)[1].strip()
             for _, text in lines[1:23]}
    assert stats["Duration"] == "3,499 days" and stats["Sharpe ratio"] == "0.54"
    assert stats["Equity Final [$]"] == "18,016.65" and stats["# Trades"] == "43"
    assert "00:00:00" not in out and "18016.654665" not in out
    assert "row  fast  slow  sharpe  return_pct  max_drawdown_pct  trades" in out
    assert "Best: SmaCross(fast=5, slow=20)" in out
    # Nothing the demo started outlives it for long: the watchdog ends the cluster.
    deadline = time.monotonic() + 20
    while marked(marker) and time.monotonic() < deadline:
        time.sleep(0.25)
    left = [(p.pid, " ".join(p.cmdline()[-3:])) for p in marked(marker)]
    for survivor in marked(marker):  # never leave them to the next test
        survivor.kill()
    assert not left, f"processes left behind: {left}"


def test_bench_says_each_step_as_it_runs():
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "nbbacktest", "bench", "--repeat", "1", "--strategy", "vector"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Starting a local cluster of 2 engines ... ready in")
    assert lines[1] == "179-point sweep of SmaCross on the daily sample (2,500 bars), best of 1:"
    assert lines[2].startswith("  warm-up on the cluster (sends the data and the strategy class) ...")
    assert lines[3].startswith("  sequential (in-process) x 1 ...") and "ms a backtest" in lines[3]
    assert lines[4].startswith("  parallel (2 engines) x 1 ...") and "backtests/s" in lines[4]
    assert lines[5].startswith("  speedup ") and f"(2 engines on {os.cpu_count()} cores)" in lines[5]
    assert "the cluster added" in lines[5]
    assert re.fullmatch(r"  tables identical: yes \(179 rows x \d+ columns, every value to the bit\)", lines[6])
    assert lines[7] == "Stopping the cluster (its processes end in the background)"
    assert time.monotonic() - started < 60


def test_bench_defaults_to_points_heavy_enough_for_engines_to_pay_off():
    args = parser().parse_args(["bench"])
    assert (args.strategy, args.sample, args.repeat, args.engines) == ("event", "daily", 5, 2)
    data = load_sample("daily")

    def seconds(strategy: type[SmaCross] | type[SmaCrossEvent]) -> float:
        """The best of three backtests, after one that warms the caches."""
        backtest(strategy(), data)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            backtest(strategy(), data)
            times.append(time.perf_counter() - started)
        return min(times)

    heavy, light = seconds(SmaCrossEvent), seconds(SmaCross)
    assert heavy > 1.5 * light, (heavy, light)


def test_speedup_line_gives_the_bound_and_the_clusters_cost():
    assert _speedup_text(0.36, 0.2, 2, 2) == (
        "speedup 1.80x of at most 2x (2 engines on 2 cores); the cluster added 20 ms to the sweep")
    assert _speedup_text(0.36, 0.1, 4, 8).startswith("speedup 3.60x of at most 4x (4 engines on 8 cores)")
    slower = _speedup_text(0.08, 0.1, 2, 2)
    assert slower.startswith("speedup 0.80x") and "the cluster added 60 ms to the sweep" in slower
    assert "more than the work it saved: heavier points (--strategy event)" in slower
    assert "load average" not in _speedup_text(0.36, 0.2, 2, 2, load=0.2)
    assert _speedup_text(0.36, 0.2, 2, 2, load=3.04).endswith(
        "; other programs were using the cores (load average 3.0 before the bench), so the engines"
        " shared them: timings vary")


def test_compare_says_identical_or_where_the_tables_differ():
    table = pd.DataFrame({"fast": [5, 10, 15], "sharpe": [0.5, float("nan"), 0.25]})
    assert _compare(table, table.copy()) == (True, "yes (3 rows x 2 columns, every value to the bit)")
    assert _compare(table, table.assign(sharpe=[0.5, float("nan"), 0.3])) == (
        False, "NO: 1 of 3 rows differ (first: row 2, column sharpe)")
    identical, text = _compare(table, table.iloc[:2])
    assert not identical and text.startswith("NO: shapes differ")
