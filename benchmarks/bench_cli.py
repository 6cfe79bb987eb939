"""What ``nbbacktest run`` costs on top of the sweep it runs, and how soon it shows progress.

Two measurements, each in one run of this script:

1. **Overhead.** The same sweep (the event-driven SmaCrossEvent on the hourly sample,
   fast 5..95 x slow 10..290 step 10, fast < slow: 461 points, ~10 s on one core) run
   three ways, each a fresh Python process so that each pays its own
   start-up and imports: a script calling ``nbb.sweep``, the same script with
   ``save=DIR`` (the checkpoint the command line always writes), and
   ``python -m nbbacktest run ... --out DIR`` (which also loads the strategy, writes
   the results table, the best run's trades and equity and the run card). Printed:
   each wall time and the command line's ratio to the plain script (target <= 1.05).
2. **First progress line.** ``nbbacktest run --engines 2``: seconds from the line
   that says the cluster is ready to the first progress line (target <= 1 s).

Usage: ``python benchmarks/bench_cli.py [--repeat 3] [--points N]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import sys
    import nbbacktest as nbb
    from nbbacktest.engine.examples import SmaCrossEvent
    save = sys.argv[2] if len(sys.argv) > 2 else None
    grid = {{"fast": range(5, 100, 5), "slow": range(10, {stop}, 10)}}
    nbb.sweep(SmaCrossEvent, nbb.load_sample("hourly"), grid, where="fast < slow", progress=False, save=save)
""")


def wall(argv: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "NBBACKTEST_PROGRESS": "0"})
    return time.perf_counter() - start


def overhead(repeat: int, stop: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        Path(work, "sweep_script.py").write_text(SCRIPT.format(stop=stop))
        runs = {"script": [], "script, save=DIR": [], "nbbacktest run": []}
        for i in range(repeat):  # interleaved: a busy moment hits all three alike
            runs["script"].append(wall([sys.executable, "sweep_script.py"], work))
            runs["script, save=DIR"].append(wall([sys.executable, "sweep_script.py", "-", f"saved{i}"], work))
            runs["nbbacktest run"].append(wall(
                [sys.executable, "-m", "nbbacktest", "run", "nbbacktest.engine.examples:SmaCrossEvent",
                 "sample:hourly", "--grid", "fast=5:100:5", f"slow=10:{stop}:10", "--where", "fast < slow",
                 "--no-progress", "--out", f"out{i}"], work))
        points = sum(1 for f in range(5, 100, 5) for s in range(10, stop, 10) if f < s)
        print(f"Overhead: {points:,}-point SmaCrossEvent sweep on the hourly sample (20,000 bars),"
              f" in-process, best of {repeat}, each a fresh process:")
        base = min(runs["script"])
        for name, times in runs.items():
            print(f"  {name:<18} {min(times):7.2f} s   {min(times) / base:5.3f}x the script")
        print(f"  target: nbbacktest run <= 1.05x -> {min(runs['nbbacktest run']) / base:.3f}x")


def first_progress(engines: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        process = subprocess.Popen(
            [sys.executable, "-m", "nbbacktest", "run", "nbbacktest.engine.examples:SmaCross",
             "sample:daily", "--grid", "fast=5:60:5", "slow=10:200:10", "--where", "fast < slow",
             "--engines", str(engines), "--out", "out"],
            cwd=work, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        stamps: dict[str, float] = {}

        def watch(stream, name: str) -> None:
            for line in stream:
                now = time.perf_counter()
                if "ready in" in line:
                    stamps.setdefault("ready", now)
                if line.startswith("["):
                    stamps.setdefault("progress", now)

        threads = [threading.Thread(target=watch, args=(s, n)) for s, n in
                   ((process.stdout, "out"), (process.stderr, "err"))]
        for thread in threads:
            thread.start()
        process.wait(timeout=300)
        for thread in threads:
            thread.join()
        gap = stamps["progress"] - stamps["ready"]
        print(f"First progress line: {gap:.3f} s after the cluster of {engines} engines said it was ready"
              f" (target <= 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slow-stop", type=int, default=300,
                        help="the slow grid's stop (default 300: 461 points, ~10 s on one core)")
    args = parser.parse_args()
    overhead(args.repeat, args.slow_stop)
    first_progress(2)


if __name__ == "__main__":
    main()
