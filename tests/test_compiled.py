"""nbbacktest.engine.compiled: numba's njit and prange, or plain-Python stand-ins."""

from __future__ import annotations

import numpy as np

from nbbacktest.engine import compiled


@compiled.njit(cache=False, nogil=True)
def _total(values: np.ndarray) -> float:
    out = 0.0
    for i in compiled.prange(len(values)):
        out += values[i]
    return out


def test_a_compiled_loop_gives_the_plain_python_result():
    values = np.arange(10.0)
    assert _total(values) == 45.0 == _total.py_func(values)  # numba keeps the Python function


def test_numba_is_what_njit_is_when_installed():
    import numba

    assert compiled.njit is numba.njit and compiled.prange is numba.prange
