"""How many engines a local cluster gets: the ``engines`` argument resolved and checked
against this machine's cores and free memory.

Needs only the standard library: :mod:`nbbacktest.parallel.cluster`, the sweeps and
the magics check an engine count before anything starts.
"""

from __future__ import annotations

import os
from typing import Any

from nbbacktest.errors import SweepError

__all__ = [
    "ENGINE_FOOTPRINT",
    "MAX_ENGINES_PER_CORE",
    "available_memory",
    "check_local_engines",
    "resolve_engine_count",
]

#: Memory one engine process takes before it holds any data (measured: ~90 MB).
ENGINE_FOOTPRINT = 150 * 2**20
#: Local engines per core, at most: more than one per core only helps points that wait
#: (on I/O, a lock); beyond a few, engines just take turns on the cores, each with its
#: own ~90 MB and a second of start-up.
MAX_ENGINES_PER_CORE = 4


def available_memory() -> int:
    """Bytes of memory available to new processes (MemAvailable), or 0 if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def resolve_engine_count(engines: Any, data_bytes: int = 0, argument: str = "engines") -> int:
    """Turn ``engines`` (N, -1 for all cores, or "auto") into a number of engines.

    ``"auto"`` takes every core, but no more engines than free memory holds: each
    needs its footprint plus working room the size of one frame of the data.

    Examples
    --------
    >>> resolve_engine_count(3)
    3
    >>> resolve_engine_count(-1) == (os.cpu_count() or 1)
    True
    """
    cores = os.cpu_count() or 1
    if engines == "auto":
        free = available_memory()
        if not free:
            return cores
        per_engine = ENGINE_FOOTPRINT + data_bytes
        return max(1, min(cores, int(free * 0.8) // per_engine))
    if isinstance(engines, bool) or not isinstance(engines, int):
        raise SweepError(
            f"{argument} must be a positive int, -1 (all cores) or 'auto', got {engines!r}"
        )
    if engines == -1:
        return cores
    if engines < 1:
        raise SweepError(
            f"{argument} must be a positive int, -1 (all cores) or 'auto', got {engines}"
        )
    return engines


def check_local_engines(n: int, argument: str = "engines") -> int:
    """Check that this machine can run ``n`` local engines; returns ``n``.

    At most :data:`MAX_ENGINES_PER_CORE` per core, and no more than free memory holds
    at :data:`ENGINE_FOOTPRINT` each. A connected cluster's engines run elsewhere and
    are not checked here.

    Raises
    ------
    SweepError
        ``n`` is beyond either bound; the message names ``argument`` and both bounds.

    Examples
    --------
    >>> check_local_engines(1)
    1
    >>> check_local_engines(10**6)
    Traceback (most recent call last):
    ...
    nbbacktest.errors.SweepError: engines=1000000 is more local engines than this machine can run: ...
    """
    cores = os.cpu_count() or 1
    by_cores = cores * MAX_ENGINES_PER_CORE
    free = available_memory()
    by_memory = free // ENGINE_FOOTPRINT if free else by_cores
    if n > min(by_cores, by_memory):
        raise SweepError(
            f"{argument}={n} is more local engines than this machine can run: it has {cores} core(s)"
            f" (at most {by_cores} engines, {MAX_ENGINES_PER_CORE} per core)"
            + (f" and {free / 2**30:.1f} GiB of free memory (room for {by_memory} engines of"
               f" {ENGINE_FOOTPRINT // 2**20} MiB)" if free else "")
            + f". Use {argument}=-1 for one engine per core, or connect to a larger cluster with"
            " nbb.Cluster.connect(profile=...)"
        )
    return n
