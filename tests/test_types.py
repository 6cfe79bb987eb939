"""Tests of nbbacktest.engine.types: Settings, PreparedData and Run."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

import nbbacktest as nbb
from nbbacktest.engine.ledger import Ledger
from nbbacktest.engine.types import FILL_MODES, PreparedData, Run, Settings


def test_settings_defaults_and_keyword_round_trip():
    settings = Settings()
    assert (settings.cash, settings.fill, settings.leverage) == (10_000.0, "next_open", None)
    assert Settings(**Settings(cash=5, commission=0.001).as_dict()) == Settings(5.0, 0.001)
    assert isinstance(Settings(cash=5).cash, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.cash = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"cash": 0}, ValueError, "cash must be a finite number > 0.0, got 0"),
        ({"cash": "100"}, TypeError, "cash must be a number, got str '100'"),
        ({"commission": 1.0}, ValueError, "commission must be below 1.0, got 1.0"),
        ({"slippage": -0.1}, ValueError, "slippage must be a finite number >= 0.0"),
        ({"fill": "open"}, ValueError, f"fill must be one of {FILL_MODES}"),
        ({"fractional": 1}, TypeError, "fractional must be True or False, got 1"),
        ({"leverage": 0.5}, ValueError, "leverage must be a finite number >= 1.0, got 0.5"),
        ({"close_at_end": float("nan")}, TypeError, "close_at_end must be True or False"),
    ],
)
def test_settings_name_the_bad_setting(options, error, message):
    with pytest.raises(error, match=re.escape(message)):
        Settings(**options)


def test_from_options_names_the_owner_and_the_valid_names():
    assert Settings.from_options({"fill": "close"}, "sweep").fill == "close"
    with pytest.raises(TypeError, match=r"^sweep got an unknown option 'fil'; the simulation "
                                        r"settings are cash, commission, slippage, fill, "):
        Settings.from_options({"fil": "close"}, "sweep")


def test_prepared_data_reads_the_columns_with_or_without_one_float_block():
    frame = nbb.load_sample("daily")
    one_block = PreparedData.from_frame(frame)
    assert np.shares_memory(one_block.close, frame["Close"].to_numpy())
    mixed = frame.assign(Note="x")  # no single float block: columns one by one
    other = PreparedData.from_frame(mixed)
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(other, name), getattr(one_block, name))
    assert other.index.equals(one_block.index) and len(other) == len(frame)
    assert PreparedData.from_frame(frame).timeline is one_block.timeline  # one per index
    assert one_block.buy_hold_pct == pytest.approx(
        (frame["Close"].iloc[-1] / frame["Close"].iloc[0] - 1) * 100)


def test_prepared_data_without_volume_reads_nan_and_keeps_the_time_zone():
    frame = nbb.load_sample("daily").drop(columns="Volume")
    frame.index = frame.index.tz_localize("UTC")
    data = PreparedData.from_frame(frame)
    assert np.isnan(data.volume).all() and len(data.volume) == len(frame)
    assert str(data.tz) == "UTC"
    assert data.index_ns.dtype == np.int64 and data.index_ns[0] == frame.index[0].value


def test_each_run_frame_is_private_and_read_only():
    data = PreparedData.from_frame(nbb.load_sample("daily"))
    first, second = data.run_frame(), data.run_frame()
    first["sma"] = 1.0
    assert "sma" not in second and "sma" not in data.run_frame() and "sma" not in data.frame
    with pytest.raises(ValueError, match="read-only"):
        second["Close"].to_numpy()[0] = 0.0
    assert first.index is data.index


def test_run_reads_trades_and_notes_from_its_ledger():
    ledger = Ledger(100.0, 3, np.array([1]), [1.0], [0.0], np.empty(0), np.empty(0), [("trade",)])
    ledger.notes = [("note",)]
    run = Run(np.ones(3), np.zeros(3), {"trades": 1}, ledger)
    assert run.trades == [("trade",)] and run.notes == [("note",)]
    assert run.stats == {"trades": 1} and not hasattr(run, "__dict__")
    assert isinstance(pd.Series(run.equity), pd.Series)


def test_settings_take_the_commission_forms_and_a_spread():
    pair = Settings(commission=(1.0, 0.002), spread=0.001, slippage=0.0005)
    assert (pair.costs.fixed, pair.costs.rate, pair.costs.plain) == (1.0, 0.002, False)
    assert pair.fill_slippage == 0.0005 + 0.001 / 2
    assert Settings(slippage=0.001).fill_slippage == 0.001  # no spread: the slippage itself
    assert Settings(commission=0.003).costs.plain
    assert Settings.from_options({"spread": 0.002}, "run_many").spread == 0.002
    assert Settings(**pair.as_dict()) == pair


def test_a_callable_commission_pickles_with_cloudpickle():
    import cloudpickle

    settings = Settings(commission=lambda size, price: 1.0 + 0.001 * size * price)
    back = cloudpickle.loads(cloudpickle.dumps(settings))
    assert back.costs.charge(10.0, 100.0) == 2.0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"commission": (-2.0, 0.001)}, "commission fixed fee must be a finite number >= 0, got -2.0"),
        ({"spread": 1.0}, "spread must be below 1.0, got 1.0"),
        ({"spread": -0.001}, "spread must be a finite number >= 0.0"),
        ({"slippage": 0.7, "spread": 0.8}, "slippage + spread / 2 must be below 1"),
    ],
)
def test_bad_costs_name_the_argument(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Settings(**options)
