"""Tests of nbbacktest.parallel.cluster_sizing: the engines argument resolved and checked
against this machine's cores and memory."""

from __future__ import annotations

import os

import pytest

from nbbacktest.errors import SweepError
from nbbacktest.parallel import cluster_sizing
from nbbacktest.parallel.cluster_sizing import (
    ENGINE_FOOTPRINT,
    MAX_ENGINES_PER_CORE,
    available_memory,
    check_local_engines,
    resolve_engine_count,
)

CORES = os.cpu_count() or 1


def test_available_memory_is_what_proc_meminfo_says() -> None:
    free = available_memory()
    if os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as meminfo:
            line = next(line for line in meminfo if line.startswith("MemAvailable:"))
        assert abs(free - int(line.split()[1]) * 1024) < 2**30  # moments apart
        assert free > 0
    else:
        assert free == 0


def test_a_number_of_engines_is_taken_as_is_and_minus_one_is_every_core() -> None:
    assert resolve_engine_count(3) == 3
    assert resolve_engine_count(1, data_bytes=10**12) == 1  # an explicit count is not bounded here
    assert resolve_engine_count(-1) == CORES


@pytest.mark.parametrize("bad", [0, -2, True, 2.0, "4", None])
def test_a_bad_engines_argument_names_itself_and_the_choices(bad: object) -> None:
    with pytest.raises(SweepError, match=r"n_jobs must be a positive int, -1 \(all cores\) or 'auto', got"):
        resolve_engine_count(bad, argument="n_jobs")


def test_auto_takes_every_core_that_memory_allows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_sizing, "available_memory", lambda: 0)
    assert resolve_engine_count("auto") == CORES  # memory unknown: every core
    monkeypatch.setattr(cluster_sizing, "available_memory", lambda: 10 * ENGINE_FOOTPRINT)
    assert resolve_engine_count("auto") == min(CORES, 8)  # 80% of the memory, one footprint each
    # each engine also needs room for one frame of the data
    assert resolve_engine_count("auto", data_bytes=3 * ENGINE_FOOTPRINT) == min(CORES, 2)
    monkeypatch.setattr(cluster_sizing, "available_memory", lambda: ENGINE_FOOTPRINT // 2)
    assert resolve_engine_count("auto") == 1  # at least one


def test_check_local_engines_bounds_by_cores_and_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster_sizing, "available_memory", lambda: 0)  # memory unknown
    by_cores = CORES * MAX_ENGINES_PER_CORE
    assert check_local_engines(by_cores) == by_cores
    with pytest.raises(SweepError) as raised:
        check_local_engines(by_cores + 1, argument="n")
    message = str(raised.value)
    assert message.startswith(f"n={by_cores + 1} is more local engines than this machine can run")
    assert f"(at most {by_cores} engines, {MAX_ENGINES_PER_CORE} per core)" in message
    assert "free memory" not in message and "Use n=-1 for one engine per core" in message
    monkeypatch.setattr(cluster_sizing, "available_memory", lambda: 2 * ENGINE_FOOTPRINT)
    assert check_local_engines(min(2, by_cores)) == min(2, by_cores)
    with pytest.raises(SweepError, match=r"GiB of free memory \(room for 2 engines of 150 MiB\)"):
        check_local_engines(3)
