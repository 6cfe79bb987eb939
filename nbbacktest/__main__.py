"""``python -m nbbacktest demo``: run the sample strategy on the sample data, headless."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd

from nbbacktest.engine import Param, Strategy, backtest, load_sample


class SmaCross(Strategy):
    """Long while the fast simple moving average is above the slow one."""

    fast = Param(10, low=2, high=100, step=5, doc="fast SMA length")
    slow = Param(30, low=5, high=300, step=10, doc="slow SMA length")

    def signals(self, data: pd.DataFrame) -> pd.Series:
        close = data["Close"]
        return (close.rolling(self.fast).mean() > close.rolling(self.slow).mean()).astype(float)


def demo(args: argparse.Namespace) -> int:
    data = load_sample("daily")
    result = backtest(SmaCross(), data, cash=10_000, commission=0.002)
    print(f"{SmaCross()!r} on the daily sample ({len(data)} bars, synthetic):")
    print(result.stats.to_string())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbbacktest", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the sample strategy on the sample data").set_defaults(run=demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
