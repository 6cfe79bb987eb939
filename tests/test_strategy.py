"""Strategy and Param: declaration, validation, identity, pickling."""

from __future__ import annotations

import pickle
import re

import pytest

import nbbacktest as nbb
from nbbacktest.errors import ParamError, UnknownParamError


class SmaCross(nbb.Strategy):
    fast = nbb.Param(10, low=2, high=100, step=1, doc="fast SMA")
    slow = nbb.Param(30, low=5, high=300)
    stop = 0.0
    kind = nbb.Param("sma", choices=["sma", "ema"])
    allow_short = False

    def signals(self, data):
        return data["Close"] * 0


def test_params_come_from_param_and_plain_attributes_in_order():
    params = SmaCross.params()
    assert list(params) == ["fast", "slow", "stop", "kind", "allow_short"]
    assert params["fast"].type is int and params["stop"].type is float
    assert params["kind"].choices == ("sma", "ema")
    assert params["allow_short"].type is bool
    assert params["fast"].doc == "fast SMA"


def test_construction_positional_keyword_and_defaults():
    s = SmaCross(5, slow=50)
    assert s.fast == 5 and s.slow == 50 and s.stop == 0.0 and s.kind == "sma"
    assert SmaCross.fast.default == 10  # class access gives the declaration


def test_unknown_parameter_has_did_you_mean():
    message = "Strategy 'SmaCross' has no parameter 'fsat'. Did you mean: fast?"
    with pytest.raises(UnknownParamError, match=re.escape(message)):
        SmaCross(fsat=5)
    with pytest.raises(TypeError):  # still a TypeError for plain Python callers
        SmaCross(zzz=1)
    with pytest.raises(UnknownParamError, match="takes 5 positional"):
        SmaCross(1, 2, 3, 4, 5, 6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fast": 1}, "'fast' must be >= 2, got 1"),
        ({"slow": 301}, "'slow' must be <= 300, got 301"),
        ({"fast": 2.5}, "'fast' must be int, got float 2.5"),
        ({"fast": "10"}, "'fast' must be int, got str"),
        ({"fast": True}, "'fast' must be int, got bool"),
        ({"kind": "wma"}, "'kind' must be one of \\['sma', 'ema'\\], got 'wma'"),
        ({"stop": "x"}, "'stop' must be float"),
        ({"stop": float("nan")}, "'stop' must be a number, got NaN"),
        ({"allow_short": 1}, "'allow_short' must be bool"),
    ],
)
def test_wrong_type_or_out_of_range_names_the_param(kwargs, message):
    with pytest.raises(ParamError, match=message):
        SmaCross(**kwargs)


def test_lossless_conversions_are_accepted():
    import numpy as np

    s = SmaCross(fast=np.int64(12), slow=40.0, stop=1)
    assert s.fast == 12 and type(s.fast) is int
    assert s.slow == 40 and type(s.slow) is int
    assert s.stop == 1.0 and type(s.stop) is float


def test_repr_eq_hash_pickle():
    a, b = SmaCross(fast=5), SmaCross(5)
    assert repr(a) == "SmaCross(fast=5, slow=30, stop=0.0, kind='sma', allow_short=False)"
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != SmaCross(fast=6)
    clone = pickle.loads(pickle.dumps(a))
    assert clone == a and clone.param_values == a.param_values


def test_instances_of_different_classes_are_not_equal():
    class Other(SmaCross):
        pass

    assert Other() != SmaCross()


def test_with_params_validates():
    s = SmaCross()
    assert s.with_params(fast=20).fast == 20
    with pytest.raises(ParamError):
        s.with_params(fast=0)


def test_subclass_inherits_and_overrides_params():
    class Child(SmaCross):
        fast = 15
        extra = nbb.Param(1.5, low=0.0)

    assert list(Child.params())[-1] == "extra"
    assert Child().fast == 15 and Child().extra == 1.5


def test_bad_declarations_fail_at_class_time():
    with pytest.raises(TypeError, match="clash with the Strategy API"):
        class Bad(nbb.Strategy):  # noqa: F841
            data = 3
    with pytest.raises(ParamError, match="must be >= 5"):
        nbb.Param(1, low=5)
    with pytest.raises(ValueError, match="low=10 is above high=5"):
        nbb.Param(7, low=10, high=5)
    with pytest.raises(TypeError, match="default must be a bool, int, float or str"):
        nbb.Param([1, 2])
    with pytest.raises(ValueError, match="step"):
        nbb.Param(3, step=0)
    with pytest.raises(TypeError, match="Strategy is a base class"):
        nbb.Strategy()


def test_backtest_bad_arguments_name_the_argument():
    data = nbb.load_sample("daily")
    with pytest.raises(TypeError, match="strategy must be a Strategy instance"):
        nbb.backtest(42, data)
    with pytest.raises(ValueError, match="cash must be a finite number > 0"):
        nbb.backtest(SmaCross(), data, cash=-1)
    with pytest.raises(ValueError, match="commission must be a finite number >= 0"):
        nbb.backtest(SmaCross(), data, commission=-0.1)
    with pytest.raises(ValueError, match="slippage must be below 1"):
        nbb.backtest(SmaCross(), data, slippage=2)
    with pytest.raises(ValueError, match="fill must be one of"):
        nbb.backtest(SmaCross(), data, fill="open")
    with pytest.raises(ValueError, match="leverage must be a finite number >= 1"):
        nbb.backtest(SmaCross(), data, leverage=0.5)
    with pytest.raises(TypeError, match="fractional must be True or False"):
        nbb.backtest(SmaCross(), data, fractional="yes")
    with pytest.raises(TypeError, match="seed must be an int"):
        nbb.backtest(SmaCross(), data, seed="1")
    with pytest.raises(nbb.DataError, match="universe"):
        nbb.backtest(SmaCross(), nbb.load_sample("universe"))
    with pytest.raises(nbb.DataError, match="missing"):
        nbb.backtest(SmaCross(), data.drop(columns="Close"))


def test_backtest_accepts_a_class_with_defaults():
    result = nbb.backtest(SmaCross, nbb.load_sample("daily"))
    assert result.strategy == SmaCross()
