"""Named views: lower layers name the tables and charts they offer, the display layer draws them.

``Result.plot()`` and ``SweepResult.table()`` live next to the data they show, yet
the engine and parallel layers must not import plotly or ipywidgets. So they ask
for a view by name; the display layer registers the functions when it is imported,
and the package loads it on the first request (:func:`set_loader`).

Examples
--------
>>> from nbbacktest.engine import views
>>> views.provide("example_view", lambda obj: f"<{obj}>")
>>> views.view("example_view")(3)
'<3>'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_VIEWS: dict[str, Callable[..., Any]] = {}
_loader: Callable[[], Any] | None = None


def provide(name: str, function: Callable[..., Any]) -> None:
    """Register ``function`` as the view called ``name`` (the display layer does this)."""
    _VIEWS[name] = function


def set_loader(loader: Callable[[], Any] | None) -> None:
    """Set what loads the module that provides the views (the package does this)."""
    global _loader
    _loader = loader


def view(name: str) -> Callable[..., Any]:
    """The view called ``name``, loading the display layer on first use.

    Raises ImportError naming what is missing when the display layer cannot load
    (plotly or ipywidgets not installed).
    """
    if name not in _VIEWS and _loader is not None:
        _loader()
    try:
        return _VIEWS[name]
    except KeyError:
        raise ImportError(
            f"the view {name!r} needs nbbacktest's display layer (plotly and ipywidgets); "
            "install them with `pip install nbbacktest[lab]`"
        ) from None


def available(name: str) -> bool:
    """True if the view can be had (loading the display layer if needed)."""
    try:
        view(name)
    except ImportError:
        return False
    return True
