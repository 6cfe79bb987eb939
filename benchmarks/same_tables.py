"""Sample sweeps' tables, written by one checkout and compared with another's, bit for bit.

A change that must leave results alone (a refactor) runs this twice::

    git worktree add /tmp/before <ref>
    (cd /tmp/before && python /path/to/benchmarks/same_tables.py write /tmp/before.pkl)
    python benchmarks/same_tables.py write /tmp/after.pkl
    python benchmarks/same_tables.py compare /tmp/before.pkl /tmp/after.pkl

The sweeps: in-process, with failing points, a universe, run_many, a resume, and
1 and 2 engines of a local cluster. Every column is compared except where and how
long a run ran (engine, host, seconds) and the tracebacks' file paths (their last
lines are compared).
"""

from __future__ import annotations

import os
import pickle
import sys
import tempfile

sys.path.insert(0, os.getcwd())  # the checkout this runs in, not an installed copy

import nbbacktest as nbb  # noqa: E402
from nbbacktest.engine.examples import SmaCross  # noqa: E402

RUN_COLUMNS = ["engine", "host", "seconds", "traceback"]


class Fragile(SmaCross):
    def signals(self, data):
        if self.fast == 10:
            raise ValueError("fast=10 is not allowed")
        return super().signals(data)


def write(path: str) -> None:
    out = {}
    daily, universe = nbb.load_sample("daily"), nbb.load_sample("universe")
    grid = {"fast": list(range(5, 60, 5)), "slow": [40, 80, 120]}
    small = {"fast": [5, 10, 20], "slow": [40, 80]}
    out["inprocess"] = nbb.sweep(SmaCross, daily, grid, progress=False).results
    out["failures"] = nbb.sweep(Fragile, daily, grid, progress=False).results
    out["universe"] = nbb.sweep(SmaCross, universe, small, progress=False).results
    out["run_many"] = nbb.run_many([SmaCross(10, 30), SmaCross(20, 60)], daily, progress=False,
                                   commission=0.001).results
    folder = tempfile.mkdtemp()
    nbb.sweep(SmaCross, daily, grid, save=folder, progress=False)
    rows = os.path.join(folder, "rows.jsonl")
    with open(rows, "rb") as file:
        lines = file.read().splitlines(keepends=True)
    with open(rows, "wb") as file:
        file.write(b"".join(lines[:10]))
    out["resume"] = nbb.resume(folder, progress=False).results
    with nbb.Cluster(engines=2) as cluster:
        out["1 engine"] = nbb.sweep(SmaCross, daily, grid, engines=1, cluster=cluster, progress=False).results
        out["2 engines"] = nbb.sweep(SmaCross, daily, grid, cluster=cluster, progress=False).results
        out["2 engines failures"] = nbb.sweep(Fragile, daily, grid, cluster=cluster, progress=False).results
        out["2 engines universe"] = nbb.sweep(SmaCross, universe, small, cluster=cluster,
                                              progress=False).results
    with open(path, "wb") as file:
        pickle.dump(out, file)
    print(f"wrote {len(out)} tables to {path}")


def last_lines(tracebacks):
    return [t.strip().splitlines()[-1] if isinstance(t, str) else None for t in tracebacks]


def compare(before: str, after: str) -> bool:
    with open(before, "rb") as a, open(after, "rb") as b:
        old, new = pickle.load(a), pickle.load(b)
    same_everywhere = True
    for name, table in old.items():
        x, y = table.drop(columns=RUN_COLUMNS), new[name].drop(columns=RUN_COLUMNS)
        same = x.equals(y) and list(x.dtypes) == list(y.dtypes) and list(x.columns) == list(y.columns)
        same = same and last_lines(table["traceback"]) == last_lines(new[name]["traceback"])
        same_everywhere &= same
        print(f"{name:20s} {'identical' if same else 'DIFFERENT'}")
    return same_everywhere


if __name__ == "__main__":
    if sys.argv[1:2] == ["write"]:
        write(sys.argv[2])
    else:
        sys.exit(0 if compare(sys.argv[2], sys.argv[3]) else 1)
