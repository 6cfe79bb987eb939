"""numba's ``njit``, or a stand-in that leaves the function as plain Python.

numba is a dependency, so the compiled loops of the engine (the portfolio fills,
PBO's splits) normally run as machine code, cached on disk so that a new process
(an engine) loads them instead of compiling. Should numba fail to import (a
broken install, a Python it does not support yet), the same functions run as
plain Python: the same results, slower.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["njit", "prange"]

try:
    from numba import njit, prange
except ImportError:  # pragma: no cover - numba is a dependency; a broken install still runs

    def njit(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:  # type: ignore[no-redef]
        return lambda function: function

    prange = range  # type: ignore[misc]
