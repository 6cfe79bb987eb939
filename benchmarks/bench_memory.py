"""Memory and time to make a 1 GiB OHLCV frame available to 2 engines.

Builds a 1 GiB minute-bar OHLCV frame (5 float64 columns x 26,843,545 rows, plus
its DatetimeIndex), starts ``nbb.Cluster(engines=2)`` and compares two ways of
giving the frame to both engines, on the same cluster:

1. nbbacktest: ``fingerprint(frame)`` + ``cluster.share(frame, key)``. The client
   writes one shared-memory segment in /dev/shm and the engines map it
   (zero-copy numpy views). Timed, then PSS is read again; then the engines read
   every byte (sum of each column and of the index) and PSS is read once more.
2. plain ipyparallel: ``client[:].push({"frame": frame}, block=True)``. Timed,
   with a thread sampling PSS/RSS every 50 ms to catch the controller's peak.

PSS (proportional set size, the ``Pss:`` line of /proc/PID/smaps_rollup) is
reported for the client, each engine (and its nanny) and the controller (its
process and children, summed), before and after each step. The /dev/shm segment
is the one physical copy of the host; it is reported separately. Every ratio comes
from one run and nothing is asserted: the script prints whether the targets
(available in <= 1 s, engines + controller adding <= 10% of 1 GiB of PSS) are met.

Needs ~10 GiB of free memory at its peak (the push) and takes about a minute:

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import psutil

import nbbacktest as nbb
from nbbacktest.parallel.fingerprint import fingerprint
from nbbacktest.parallel.segment_files import SEGMENT_PREFIX, segment_dir

GIB = 2**30
MIB = 2**20
ROWS = GIB // (5 * 8)  # 26,843,545 rows of 5 float64 columns = 1 GiB of column data
COLUMNS = ["Open", "High", "Low", "Close", "Volume"]
TARGET_SECONDS = 1.0
TARGET_FRACTION = 0.10
SAMPLE_EVERY = 0.05


# ---------------------------------------------------------------- the frame


def make_frame(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    """A valid OHLCV frame of minute bars, generated in place with numpy.

    The five columns are rows of one (5, rows) C-contiguous block, so every
    column is contiguous and the frame wraps the block without a copy.
    """
    rng = np.random.default_rng(seed)
    block = np.empty((5, rows))
    open_, high, low, close, volume = block
    # Close: a geometric random walk (log-steps of 1e-4), positive by construction
    rng.standard_normal(out=close)
    close *= 1e-4
    np.cumsum(close, out=close)
    np.exp(close, out=close)
    close *= 100.0
    open_[0] = 100.0
    open_[1:] = close[:-1]
    # High >= max(Open, Close), Low <= min(Open, Close), both within 0.05%
    extreme = np.maximum(open_, close)
    rng.random(out=high)
    high *= 5e-4
    high += 1.0
    high *= extreme
    np.minimum(open_, close, out=extreme)
    rng.random(out=low)
    low *= -5e-4
    low += 1.0
    low *= extreme
    del extreme
    rng.random(out=volume)
    volume *= 1e4
    np.floor(volume, out=volume)
    volume += 1.0
    index = pd.date_range("2000-01-03", periods=rows, freq="min", name="Date")
    return pd.DataFrame(block.T, index=index, columns=COLUMNS, copy=False)


def column_sums(frame: pd.DataFrame) -> dict[str, float]:
    """Sum of every column and of the index: reads every byte of the frame."""
    sums = {name: float(np.sum(frame[name].to_numpy())) for name in frame.columns}
    sums["index"] = int(frame.index.asi8.view(np.uint64).sum(dtype=np.uint64))
    return sums


# ------------------------------------------------------- run on the engines
# Functions sent to the engines import what they use: they run there.


def engine_warm_up() -> int:
    """Import what the later steps use, so the baseline PSS already includes it."""
    import os

    import numpy  # noqa: F401
    import pandas  # noqa: F401

    from nbbacktest.parallel import shared, worker  # noqa: F401

    return os.getpid()


def engine_check(key: str) -> dict:
    """Rows, last Close and whether Close is a view of the mapped segment."""
    import numpy as np

    from nbbacktest.parallel import shared, worker

    data = worker._DATA[key]
    close = data["Close"].to_numpy()
    views = any(np.may_share_memory(close, mapped) for mapped in shared._MAPS.values())
    return {"rows": len(data), "last_close": float(close[-1]), "segment_view": bool(views)}


def engine_read_all(key: str) -> dict:
    """Sum every column and the index of the shared frame (touches every page)."""
    import numpy as np

    from nbbacktest.parallel import worker

    data = worker._DATA[key]
    sums = {name: float(np.sum(data[name].to_numpy())) for name in data.columns}
    sums["index"] = int(data.index.asi8.view(np.uint64).sum(dtype=np.uint64))
    return sums


# -------------------------------------------------------------------- memory


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss, Pss_Anon and Pss_Shmem of a process, in bytes (0 if it is gone)."""
    wanted = ("Rss:", "Pss:", "Pss_Anon:", "Pss_Shmem:")
    out = dict.fromkeys((w[:-1] for w in wanted), 0)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith(wanted):
                    name, value, _ = line.split()
                    out[name[:-1]] = int(value) * 1024
    except OSError:
        pass
    return out


@dataclass
class Processes:
    """The processes measured, grouped: client, each engine (+ nanny), controller."""

    groups: dict[str, list[int]] = field(default_factory=dict)

    @property
    def engine_groups(self) -> list[str]:
        return [g for g in self.groups if g.startswith("engine")]

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Per group, every smaps field summed over its processes."""
        result = {}
        for group, pids in self.groups.items():
            total = dict.fromkeys(("Rss", "Pss", "Pss_Anon", "Pss_Shmem"), 0)
            for pid in pids:
                for name, value in smaps(pid).items():
                    total[name] += value
            result[group] = total
        return result


def classify(cluster: nbb.Cluster) -> Processes:
    """Group the cluster's processes by their command line and parent."""
    engine_of_pid = {pid: engine for engine, pid in cluster.pids.items()}
    controllers, nannies = [], {}
    for pid in cluster.process_ids():
        try:
            process = psutil.Process(pid)
            cmdline = " ".join(process.cmdline())
            parent = process.ppid()
        except psutil.Error:
            continue
        if "ipyparallel.controller" in cmdline:
            controllers.append(pid)
        elif "ipyparallel.engine.nanny" in cmdline and parent in engine_of_pid:
            nannies[engine_of_pid[parent]] = pid
    groups = {"client": [os.getpid()]}
    for engine, pid in sorted(cluster.pids.items()):
        groups[f"engine {engine}"] = [pid] + ([nannies[engine]] if engine in nannies else [])
    groups["controller"] = controllers
    return Processes(groups)


class PeakSampler:
    """Reads smaps_rollup of every group every 50 ms in a thread; keeps the peaks."""

    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.peak: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for group, values in self.processes.snapshot().items():
                peak = self.peak.setdefault(group, dict(values))
                for name, value in values.items():
                    peak[name] = max(peak[name], value)
            self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def engines_and_controller(processes: Processes, before: dict, after: dict, field_: str = "Pss") -> int:
    """Bytes added to ``field_`` by the engines (with nannies) and the controller."""
    groups = processes.engine_groups + ["controller"]
    return sum(after[g][field_] - before[g][field_] for g in groups)


# ------------------------------------------------------------------ printing


def mib(n: float) -> str:
    return f"{n / MIB:9.1f}"


def print_table(processes: Processes, before: dict, after: dict, peak: dict | None = None) -> None:
    """PSS before/after/delta per group, with the anonymous and shmem parts of the delta."""
    head = f"  {'process':<24}{'PSS before':>11}{'PSS after':>11}{'delta':>11}{'anon':>11}{'shmem':>11}"
    if peak:
        head += f"{'peak PSS':>11}{'peak RSS':>11}"
    print(head + "   (MiB)")
    for group, pids in processes.groups.items():
        b, a = before[group], after[group]
        label = group if group != "controller" else f"controller ({len(pids)} procs)"
        if group.startswith("engine") and len(pids) > 1:
            label += " + nanny"
        row = (
            f"  {label:<24}{mib(b['Pss']):>11}{mib(a['Pss']):>11}{mib(a['Pss'] - b['Pss']):>11}"
            f"{mib(a['Pss_Anon'] - b['Pss_Anon']):>11}{mib(a['Pss_Shmem'] - b['Pss_Shmem']):>11}"
        )
        if peak:
            row += f"{mib(peak[group]['Pss']):>11}{mib(peak[group]['Rss']):>11}"
        print(row)
    added = engines_and_controller(processes, before, after)
    print(
        f"  engines + controller added {added / MIB:.1f} MiB of PSS"
        f" = {100 * added / GIB:.2f}% of 1 GiB"
    )


def our_leftovers(key: str) -> tuple[list[str], list[str]]:
    """nbbacktest-* files in the segment directory: ours (this key or pid) and others."""
    names = sorted(n for n in os.listdir(segment_dir()) if n.startswith(SEGMENT_PREFIX))
    ours = [n for n in names if key in n or n.startswith(f"{SEGMENT_PREFIX}{os.getpid()}-")]
    return ours, [n for n in names if n not in ours]


# --------------------------------------------------------------------- steps


def step_share(cluster: nbb.Cluster, processes: Processes, frame: pd.DataFrame) -> dict:
    print("\n[nbbacktest] key = fingerprint(frame); cluster.share(frame, key)")
    before = processes.snapshot()
    with PeakSampler(processes) as sampler:
        start = time.perf_counter()
        key = fingerprint(frame)
        hashed = time.perf_counter()
        sent = cluster.share(frame, key)
        seconds = time.perf_counter() - start
    print(
        f"  made available in {seconds:.3f} s (fingerprint {hashed - start:.3f} s,"
        f" share {seconds - (hashed - start):.3f} s); bytes sent over the network: {sent}"
    )
    checks = cluster.client[:].apply_sync(engine_check, key)
    for engine, check in zip(cluster.client.ids, checks):
        print(
            f"  engine {engine}: {check['rows']:,} rows, last Close {check['last_close']:.6f},"
            f" Close is a view of the mapped segment: {check['segment_view']}"
        )
    after = processes.snapshot()
    print_table(processes, before, after, sampler.peak)
    segments = []
    for path in cluster.segment_paths():
        stat = os.stat(path)
        segments.append(path)
        print(
            f"  /dev/shm segment {os.path.basename(path)}: {stat.st_size / MIB:.1f} MiB"
            f" ({stat.st_blocks * 512 / MIB:.1f} MiB allocated) = the one physical copy"
            " on this host, shared by its engines (in nobody's PSS until mapped and read)"
        )
    return {"key": key, "seconds": seconds, "before": before, "after": after, "segments": segments}


def step_read_all(cluster: nbb.Cluster, processes: Processes, frame: pd.DataFrame, shared: dict) -> dict:
    print("\n[nbbacktest] every engine reads all of it (sum of each column and the index)")
    start = time.perf_counter()
    sums = cluster.client[:].apply_sync(engine_read_all, shared["key"])
    seconds = time.perf_counter() - start
    expected = column_sums(frame)
    print(f"  {seconds:.3f} s; engine sums equal the client's: {all(s == expected for s in sums)}")
    after = processes.snapshot()
    print_table(processes, shared["before"], after)
    segment_bytes = sum(os.stat(p).st_blocks * 512 for p in shared["segments"])
    shmem = engines_and_controller(processes, shared["before"], after, "Pss_Shmem")
    print(
        "  PSS divides each shared page among the processes mapping it, so the engines'"
        f" shmem parts add up to one copy: {shmem / MIB:.1f} MiB vs the segment's"
        f" {segment_bytes / MIB:.1f} MiB"
    )
    return {"after": after}


def step_push(cluster: nbb.Cluster, processes: Processes, frame: pd.DataFrame) -> dict:
    print('\n[ipyparallel] cluster.client[:].push({"frame": frame}, block=True)')
    view = cluster.client[:]
    before = processes.snapshot()
    with PeakSampler(processes) as sampler:
        start = time.perf_counter()
        view.push({"frame": frame}, block=True)
        seconds = time.perf_counter() - start
    after = processes.snapshot()
    view.execute("_bench_rows = len(frame)", block=True)
    rows = view.pull("_bench_rows", block=True)
    print(f"  pushed in {seconds:.3f} s; rows on the engines: {rows}")
    print_table(processes, before, after, sampler.peak)
    controller = sampler.peak["controller"]
    print(
        f"  controller peak during the push: PSS {controller['Pss'] / GIB:.2f} GiB,"
        f" RSS {controller['Rss'] / GIB:.2f} GiB (summed over its processes, sampled every 50 ms)"
    )
    view.execute("del frame, _bench_rows; import gc; gc.collect()", block=True)
    freed = processes.snapshot()
    print("  after `del frame; gc.collect()` on the engines (memory the allocators kept):")
    print_table(processes, before, freed)
    return {"seconds": seconds, "before": before, "after": after}


def summary(processes: Processes, shared: dict, read: dict, pushed: dict) -> None:
    nbb_seconds, push_seconds = shared["seconds"], pushed["seconds"]
    nbb_added = engines_and_controller(processes, shared["before"], shared["after"])
    read_added = engines_and_controller(processes, shared["before"], read["after"])
    push_added = engines_and_controller(processes, pushed["before"], pushed["after"])
    print("\nSummary (one run)")
    print(
        f"  time to make available: nbbacktest {nbb_seconds:.3f} s, push {push_seconds:.3f} s"
        f" -> nbbacktest {push_seconds / nbb_seconds:.1f} times faster"
    )
    print(
        f"  engines + controller PSS added: nbbacktest {nbb_added / MIB:.1f} MiB"
        f" (after reading everything {read_added / MIB:.1f} MiB, i.e. the one shared copy),"
        f" push {push_added / MIB:.1f} MiB"
    )
    ratio = push_added / nbb_added if nbb_added > 0 else float("inf")
    print(
        f"  -> push adds {ratio:.1f} times nbbacktest's PSS when made available,"
        f" {push_added / read_added:.1f} times once the engines read everything"
    )
    met = "MET" if nbb_seconds <= TARGET_SECONDS else "NOT MET"
    print(f"  target: available to 2 engines in <= {TARGET_SECONDS:g} s: {nbb_seconds:.3f} s -> {met}")
    fraction = nbb_added / GIB
    met = "MET" if fraction <= TARGET_FRACTION else "NOT MET"
    print(
        f"  target: engines + controller add <= {TARGET_FRACTION:.0%} of 1 GiB of PSS:"
        f" {fraction:.2%} -> {met}"
    )


# ---------------------------------------------------------------------- main


def main() -> None:
    start = time.perf_counter()
    frame = make_frame()
    data_bytes = sum(frame[c].to_numpy().nbytes for c in frame.columns)
    print(
        f"frame: {len(frame):,} minute bars x {frame.shape[1]} float64 columns ="
        f" {data_bytes / GIB:.4f} GiB of column data (+ {frame.index.asi8.nbytes / MIB:.0f} MiB"
        f" index), built in {time.perf_counter() - start:.2f} s"
    )
    start = time.perf_counter()
    cluster = nbb.Cluster(engines=2)
    key = ""
    try:
        cluster.client[:].apply_sync(engine_warm_up)
        processes = classify(cluster)
        print(f"cluster of 2 engines started in {time.perf_counter() - start:.1f} s; processes:")
        for group, pids in processes.groups.items():
            print(f"  {group:<12} pids {pids}")
        shared = step_share(cluster, processes, frame)
        key = shared["key"]
        read = step_read_all(cluster, processes, frame, shared)
        pushed = step_push(cluster, processes, frame)
        summary(processes, shared, read, pushed)
    finally:
        cluster.stop()
    ours, others = our_leftovers(key) if key else ([], [])
    print(f"\nafter cluster.stop(): nbbacktest-* files of this run left in {segment_dir()}: {ours or 'none'}")
    if others:
        print(f"  (other processes' nbbacktest-* files there, not ours: {others})")


if __name__ == "__main__":
    main()
