"""The engine: strategies, parameters, data, the simulator, metrics and results.

Needs only numpy and pandas: it runs in a plain script, a test or an engine, with
neither Jupyter nor ipyparallel involved.
"""

from nbbacktest.engine.backtest import backtest, derive_seed, simulate
from nbbacktest.engine.data import is_universe, validate_data, validate_ohlcv
from nbbacktest.engine.indicators import set_indicator_memo
from nbbacktest.engine.loading import load_ohlcv
from nbbacktest.engine.metrics import NUMERIC_STATS, STAT_LABELS, STAT_NAMES, compute_stats
from nbbacktest.engine.orders import Bar, Order, Position
from nbbacktest.engine.params import Param
from nbbacktest.engine.portfolio import PortfolioStrategy
from nbbacktest.engine.portfolio_result import PortfolioResult
from nbbacktest.engine.result import Result
from nbbacktest.engine.samples import SAMPLE_NAMES, load_sample
from nbbacktest.engine.strategy import Strategy
from nbbacktest.engine.types import PreparedData, Settings
from nbbacktest.engine.universe import Universe
from nbbacktest.engine.universe_loading import load_universe

__all__ = [
    "NUMERIC_STATS", "SAMPLE_NAMES", "STAT_LABELS", "STAT_NAMES", "Bar", "Order", "Param",
    "PortfolioResult", "PortfolioStrategy", "Position", "PreparedData", "Result", "Settings",
    "Strategy", "Universe", "backtest", "compute_stats", "derive_seed", "is_universe", "load_ohlcv",
    "load_sample", "load_universe", "set_indicator_memo", "simulate", "validate_data",
    "validate_ohlcv",
]
