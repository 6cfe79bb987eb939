"""Tests of nbbacktest.engine.views: named views the display layer provides on request."""

from __future__ import annotations

import pytest

from nbbacktest.engine import views


@pytest.fixture
def empty(monkeypatch):
    monkeypatch.setattr(views, "_VIEWS", {})
    monkeypatch.setattr(views, "_loader", None)


def test_a_provided_view_is_returned_by_name(empty):
    views.provide("double", lambda x: 2 * x)
    assert views.view("double")(4) == 8 and views.available("double")


def test_a_missing_view_loads_the_display_layer_once_asked(empty):
    loads = []
    views.set_loader(lambda: loads.append(1) or views.provide("late", str))
    assert loads == []  # nothing is loaded on import or on set_loader
    assert views.view("late") is str and loads == [1]
    assert views.view("late") is str and loads == [1]  # provided now: no second load


def test_a_view_nobody_provides_says_what_to_install(empty):
    views.set_loader(lambda: None)
    with pytest.raises(ImportError, match=r"the view 'nope' needs nbbacktest's display layer.*\[lab\]"):
        views.view("nope")
    assert not views.available("nope")
