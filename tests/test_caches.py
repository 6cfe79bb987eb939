"""Tests of nbbacktest.engine.caches: per-object results and per-thread scratch rows."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pandas as pd

from nbbacktest.engine import caches
from nbbacktest.engine.caches import IdentityCache, scratch_row


def test_identity_cache_remembers_per_object_and_forgets_the_dead():
    cache = IdentityCache(kept=2)
    calls = []

    def compute(index):
        calls.append(len(index))  # not the index itself: that would keep it alive
        return len(index)

    first = pd.Index(["a", "b"])
    assert cache.get(first, compute) == cache.get(first, compute) == 2
    assert len(calls) == 1
    equal_but_other = pd.Index(["a", "b"])
    assert cache.get(equal_but_other, compute) == 2 and len(calls) == 2  # identity, not equality
    del equal_but_other
    gc.collect()
    assert len(cache._entries) == 1  # the dead object's entry went with it
    for _ in range(3):  # a full cache starts over rather than growing
        cache.get(pd.Index(["c"]), compute)
    assert len(cache._entries) <= 2


def test_an_object_without_weak_references_is_computed_each_time():
    cache = IdentityCache(kept=4)
    calls = []
    key = (1, 2)  # tuples take no weak references
    for _ in range(2):
        assert cache.get(key, lambda k: calls.append(k) or len(k)) == 2
    assert len(calls) == 2 and cache._entries == {}


def test_scratch_rows_are_reused_on_one_thread_and_never_shared_across_threads():
    first = scratch_row(100)
    again = scratch_row(50)
    assert first.shape == (100,) and again.shape == (50,)
    assert np.shares_memory(first, again)  # the same rows, call after call
    seen = {}

    def other_thread():
        seen["rows"] = scratch_row(100)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert not np.shares_memory(seen["rows"], first)


def test_long_data_gets_fresh_rows_that_are_not_kept():
    n = caches._SCRATCH_MAX_BARS + 1
    kept = scratch_row(10)
    long = scratch_row(n)
    assert long.shape == (n,) and not np.shares_memory(long, kept)
    assert np.shares_memory(scratch_row(10), kept)  # the kept row did not grow
