"""nbbacktest: parallel trading-strategy backtests and parameter sweeps from Jupyter.

>>> import nbbacktest as nbb
>>> data = nbb.load_sample("daily")
>>> class SmaCross(nbb.Strategy):
...     fast = nbb.Param(10, low=2, high=100)
...     slow = nbb.Param(30, low=5, high=300)
...     def signals(self, data):
...         close = data["Close"]
...         return (close.rolling(self.fast).mean() > close.rolling(self.slow).mean()).astype(float)
>>> nbb.backtest(SmaCross(), data).stats["trades"] > 0
True

The engine layer is imported eagerly (numpy and pandas only); the parallel,
display and magics layers load on first use, so a plain script never pays for
ipyparallel, ipywidgets or plotly.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from nbbacktest.engine import (
    Param,
    PortfolioResult,
    PortfolioStrategy,
    Result,
    Strategy,
    Universe,
    backtest,
    load_ohlcv,
    load_sample,
    load_universe,
    set_indicator_memo,
)
from nbbacktest.engine import views as _views
from nbbacktest.errors import (
    ClusterError,
    DataError,
    NbbacktestError,
    NbbacktestWarning,
    ParamError,
    StrategyError,
    SweepError,
    SweepFailedError,
    UnknownParamError,
)

__version__ = "0.1.0"

# Tables and charts that the engine and parallel layers offer are drawn by the display layer.
_views.set_loader(lambda: importlib.import_module("nbbacktest.display"))

# Public names served by the higher layers, imported on first access.
_LAZY = {
    "Cluster": "nbbacktest.parallel",
    "SweepResult": "nbbacktest.parallel",
    "sweep": "nbbacktest.parallel",
    "run_many": "nbbacktest.parallel",
    "resume": "nbbacktest.parallel",
    "load_sweep": "nbbacktest.parallel",
    "walk_forward": "nbbacktest.parallel",
    "WalkForwardResult": "nbbacktest.parallel",
    "SweepWidget": "nbbacktest.display",
    "explore": "nbbacktest.display",
}
# Loading these first names their default progress display (see _default_progress).
_SHOWN = {"sweep", "run_many", "resume", "walk_forward"}

__all__ = [
    "ClusterError", "DataError", "NbbacktestError", "NbbacktestWarning", "Param", "ParamError",
    "PortfolioResult", "PortfolioStrategy", "Result", "Strategy", "StrategyError", "SweepError",
    "SweepFailedError", "Universe", "UnknownParamError", "backtest", "load_ohlcv", "load_sample",
    "load_universe", "load_ipython_extension", "set_indicator_memo", "unload_ipython_extension",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'nbbacktest' has no attribute {name!r}")
    if name in _SHOWN:
        _default_progress()
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def _default_progress() -> None:
    """Where IPython runs, ``progress=True`` shows the notebook-aware display (a widget in a
    Jupyter kernel); elsewhere the parallel layer's text line on stderr stays the default."""
    if "IPython" not in sys.modules:
        return
    from nbbacktest.display import show_progress
    from nbbacktest.parallel import progress

    if progress.default_display is None:
        progress.default_display = show_progress


def __dir__() -> list[str]:
    # Tab completion on ``nbb.`` offers the public API only, not this module's own
    # imports (Any, annotations, importlib); __version__ and the rest stay reachable.
    return sorted(__all__)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext nbbacktest``: register the ``%cluster`` and ``%backtest`` magics."""
    from nbbacktest import magics

    _default_progress()  # the magics' sweeps show the notebook display too
    magics.load_ipython_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext nbbacktest``: remove the magics."""
    from nbbacktest import magics

    magics.unload_ipython_extension(ipython)
