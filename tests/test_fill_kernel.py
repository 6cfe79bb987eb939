"""nbbacktest.engine.fill_kernel: the compiled fill loop against the Broker, change by change."""

from __future__ import annotations

import numpy as np
import pytest

from nbbacktest.engine.broker import Broker
from nbbacktest.engine.fill_kernel import follow_pass


def run(targets, prices, cash=10_000.0, commission=0.001, fractional=True):
    logs = [np.full(len(targets), np.nan) for _ in range(4)]
    out = follow_pass(np.array(targets), np.array(prices), np.array(prices), cash, commission,
                      fractional, *logs)
    return out, logs


@pytest.mark.parametrize("fractional", [True, False])
def test_each_change_leaves_the_brokers_state_to_the_bit(fractional):
    targets = [1.0, 0.0, -1.0, 1.0, 0.0, -2.0, 0.0]
    prices = [100.0, 103.5, 97.25, 99.0, 104.0, 101.0, 95.5]
    (done, trades, cash, units, *_rest, paid), (unit_log, cash_log, pnl, ret) = run(
        targets, prices, fractional=fractional)
    broker = Broker(10_000.0, 0.001, 0.0, fractional)
    for k, (target, price) in enumerate(zip(targets, prices)):
        broker.to_target(target, bar=k, raw_price=price)
        assert (unit_log[k], cash_log[k]) == (broker.units, broker.cash)
    assert done == len(targets) and trades == len(broker.trades) == 4
    assert (cash, units, paid) == (broker.cash, broker.units, broker.paid)
    assert pnl[:trades].tolist() == [t[5] for t in broker.trades]
    assert ret[:trades].tolist() == [t[6] for t in broker.trades]


def test_a_resize_on_the_same_side_stops_the_loop_there():
    (done, trades, _cash, units, entry_price, *_), (unit_log, *_) = run([1.0, 0.5, 0.0], [10.0, 11.0, 12.0])
    assert (done, trades) == (1, 0)  # change 1 only resizes: Broker.follow fills it
    assert units == unit_log[0] > 0 and entry_price == 10.0


def test_no_cash_opens_nothing():
    (done, trades, cash, units, *_), _ = run([1.0, 0.0], [10.0, 11.0], cash=0.0)
    assert (done, trades, cash, units) == (2, 0, 0.0, 0.0)
