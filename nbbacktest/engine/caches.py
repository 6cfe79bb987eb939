"""What the simulator remembers between runs: per-object results and a scratch row.

A sweep runs the same frame thousands of times. Work that depends only on an
immutable object (a columns Index, the bar times) is done once and remembered per
object in an :class:`IdentityCache`; a run's per-bar temporary (its equity) goes to
:func:`scratch_row`, reused call after call on the same thread. Needs only numpy.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

__all__ = ["IdentityCache", "release_scratch", "scratch_row"]


class IdentityCache:
    """Values computed from immutable objects (a pandas Index), remembered per object.

    A backtest on a frame already seen skips work that depends only on its column
    names or bar times. Entries hold weak references, so an object that dies is never
    mistaken for a new one at the same address, and its entry goes with it; the
    cache is cleared when full.

    Examples
    --------
    >>> import pandas as pd
    >>> cache = IdentityCache(kept=8)
    >>> index = pd.Index(["a", "b"])
    >>> cache.get(index, len), cache.get(index, lambda i: 0)  # computed once
    (2, 2)
    """

    def __init__(self, kept: int) -> None:
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}
        self._kept = kept

    def get(self, key: Any, compute: Any) -> Any:
        """``compute(key)``, or what it returned the last time for this very object."""
        entry = self._entries.get(id(key))
        if entry is not None and entry[0]() is key:
            return entry[1]
        value = compute(key)
        entries = self._entries
        if len(entries) >= self._kept:
            entries.clear()
        ident = id(key)

        def forget(reference: weakref.ref) -> None:
            if entries.get(ident, (None,))[0] is reference:
                entries.pop(ident, None)

        try:
            entries[ident] = (weakref.ref(key, forget), value)
        except TypeError:  # no weak references to it: just don't remember it
            pass
        return value


def scratch_row(n: int) -> np.ndarray:
    """A float64 row of ``n`` values for one call's per-bar temporary (a run's equity).

    Reused call after call on the same thread (threads never share it): a sweep
    then allocates no per-bar memory, which on long series saves more time in page
    faults than the arithmetic costs. The row holds garbage; the caller must not
    run user code while it uses it (user code may start a backtest of its own).

    Examples
    --------
    >>> scratch_row(10).shape
    (10,)
    """
    if n > _SCRATCH_MAX_BARS:
        return np.empty(n)
    row = getattr(_SCRATCH, "row", None)
    if row is None or row.shape[0] < n:
        row = _SCRATCH.row = np.empty(n)
    return row[:n]


def release_scratch() -> None:
    """Let this thread's scratch row go (an engine, when a sweep ends).

    Examples
    --------
    >>> first = scratch_row(10)
    >>> np.shares_memory(scratch_row(10), first)
    True
    >>> release_scratch()
    >>> np.shares_memory(scratch_row(10), first)
    False
    """
    _SCRATCH.__dict__.pop("row", None)


_SCRATCH = threading.local()
#: Data up to this many bars keeps its scratch row (8 bytes per bar) between calls;
#: longer data gets a fresh one, so that no thread holds more than 8 MiB.
_SCRATCH_MAX_BARS = 1 << 20
