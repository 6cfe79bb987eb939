"""Tests of nbbacktest.engine.params: Param declarations, their checks and the did-you-mean hint."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nbbacktest.engine.params import Param, bind_params, collect_params, unknown_param_message
from nbbacktest.errors import ParamError, UnknownParamError


def test_the_type_comes_from_the_default_and_values_convert_losslessly():
    fast = Param(10, low=2, high=100)
    fast.name = "fast"
    assert fast.type is int and fast.validate(np.int64(12), "S") == 12
    assert fast.validate(20.0, "S") == 20 and type(fast.validate(20.0, "S")) is int
    with pytest.raises(ParamError, match=r"S parameter 'fast' must be int, got float 2\.5"):
        fast.validate(2.5, "S")
    with pytest.raises(ParamError, match=r"S parameter 'fast' must be <= 100, got 101"):
        fast.validate(101, "S")
    assert Param(0.5).validate(1, "S") == 1.0
    with pytest.raises(ParamError, match="must be a number, got NaN"):
        Param(0.5).validate(float("nan"), "S")
    with pytest.raises(ParamError, match=r"must be one of \['a', 'b'\], got 'c'"):
        Param("a", choices=["a", "b"]).validate("c", "S")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: Param(Param(1)), TypeError, "got another Param"),
        (lambda: Param([1]), TypeError, "must be a bool, int, float or str, not list"),
        (lambda: Param("x", low=1), TypeError, "low=1 needs a numeric default"),
        (lambda: Param(5, low=10, high=1), ValueError, "low=10 is above high=1"),
        (lambda: Param(5, step=0), ValueError, "step=0 must be positive"),
        (lambda: Param("a", choices=[]), ValueError, "choices must not be empty"),
        (lambda: Param(50, high=10), ParamError, "Param must be <= 10, got 50"),
    ],
)
def test_bad_declarations_raise_at_declaration(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_bind_params_matches_positions_and_keywords():
    class Base:
        pass

    class S(Base):
        fast = Param(10)
        slow = 30
        _private = 1

    declared = collect_params(S, Base)
    assert list(declared) == ["fast", "slow"] and declared["slow"].default == 30
    assert bind_params("S", declared, (5,), {"slow": 40}) == {"fast": 5, "slow": 40}
    with pytest.raises(UnknownParamError, match=r"S got parameter 'fast' twice"):
        bind_params("S", declared, (5,), {"fast": 6})
    with pytest.raises(UnknownParamError, match=r"S takes 2 positional parameter\(s\) \(fast, slow\) but 3"):
        bind_params("S", declared, (1, 2, 3), {})


@pytest.mark.parametrize(
    ("name", "known", "message"),
    [
        ("fsat", ["fast", "slow"], "Strategy 'S' has no parameter 'fsat'. Did you mean: fast?"),
        ("fst", ["fast", "fist"], "Strategy 'S' has no parameter 'fst'. Did you mean: fast, fist?"),
        ("perod", ["upper", "period", "lower"],
         "Strategy 'S' has no parameter 'perod'. Did you mean: period?"),
        ("zzz", ["fast", "slow"], "Strategy 'S' has no parameter 'zzz'. Its parameters are: fast, slow."),
        ("zzz", [], "Strategy 'S' has no parameter 'zzz'. It declares no parameters."),
    ],
)
def test_unknown_parameter_message(name, known, message):
    assert unknown_param_message("S", name, known) == message
