"""The ``where`` compiler: what an expression may use, and how its mistakes read."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from nbbacktest.errors import SweepError, UnknownParamError
from nbbacktest.parallel import grid
from nbbacktest.parallel.where import WHERE_BUILTINS, CompiledWhere, compile_where, unknown_where_name


# ------------------------------------------------------------------- compile_where
def test_compile_where_evaluates_on_a_namespace():
    keep = compile_where("fast < slow and kind != 'ema'", ["fast", "slow", "kind"])
    assert keep(SimpleNamespace(fast=5, slow=10, kind="sma")) is True
    assert keep(SimpleNamespace(fast=5, slow=10, kind="ema")) is False
    assert compile_where("round(stop, 1) == 0.1", ["stop"])(SimpleNamespace(stop=0.12))


@pytest.mark.parametrize(
    "expression, message",
    [
        ("__import__('os')", "may not use '__import__'"),
        ("().__class__", "may not use the attribute '__class__'"),
        ("fast.__class__.__bases__", "may not use the attribute '__bases__'"),
        ("open('x')", "may not use 'open'"),
        ("eval('1')", "may not use 'eval'"),
        ("__builtins__", "may not use '__builtins__'"),
        ("'{0.__class__}'.format(fast)", "may not use the attribute 'format'"),
        ("max((g := (g.gi_frame for _ in [0])))", "may not use the attribute 'gi_frame'"),
        ("fast <", "is not a valid expression"),
        ("fast = 3", "is not a valid expression"),
        ("  ", "where is an empty expression"),
    ],
)
def test_compile_where_rejects(expression, message):
    with pytest.raises(SweepError, match=message):
        compile_where(expression, ["fast", "slow"])


def test_compile_where_syntax_error_shows_where():
    with pytest.raises(SweepError) as caught:
        compile_where("fast < < slow", ["fast", "slow"])
    assert "fast < < slow\n" in str(caught.value) and "^" in str(caught.value)


def test_compile_where_unknown_name():
    with pytest.raises(UnknownParamError, match=re.escape("'slwo'. Did you mean: slow?")):
        compile_where("fast < slwo", ["fast", "slow"])
    with pytest.raises(UnknownParamError, match="The parameters are: fast, slow"):
        compile_where("zzz", ["fast", "slow"])
    with pytest.raises(TypeError, match="where must be a str expression"):
        compile_where(42, ["fast"])


def test_compiled_where_takes_the_params_positionally_too():
    keep = compile_where("fast < slow", ["fast", "slow"])
    assert isinstance(keep, CompiledWhere) and keep.names == ("fast", "slow")
    assert keep.positional(5, 10) is True and repr(keep) == "<where 'fast < slow'>"


def test_unknown_where_name_hints():
    assert unknown_where_name("fsat", ["fast", "slow"]) == \
        "where refers to unknown parameter 'fsat'. Did you mean: fast?"
    assert unknown_where_name("zzz", []) == \
        "where refers to unknown parameter 'zzz'. The strategy declares no parameters."


def test_grid_still_exports_the_compiler():
    assert grid.compile_where is compile_where and grid.WHERE_BUILTINS is WHERE_BUILTINS
    assert set(WHERE_BUILTINS) == {"abs", "min", "max", "round", "len", "int", "float", "bool", "str"}
