"""Where this code runs: in a Jupyter kernel, or not (a script, a terminal IPython)."""

from __future__ import annotations

import sys


def in_kernel() -> bool:
    """True when this code runs in a Jupyter kernel (IPython's shell has a ``kernel``).

    Examples
    --------
    >>> in_kernel()
    False
    """
    ipython = sys.modules.get("IPython")  # not imported: no shell can be running
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None) is not None
