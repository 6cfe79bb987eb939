"""One Plotly figure under another, as one figure: a notebook output shows one figure only.

A rich display (``_repr_mimebundle_``) carries one ``application/vnd.plotly.v1+json``
figure. To show a second figure under the first (the credibility panel under a
sweep's overview), :func:`stack_figures` moves the second one's subplots into the
first's figure: its axes are renumbered after the first's, and everything placed
in paper coordinates (axis domains, table domains, subplot titles, colour bars)
is squeezed into its share of the height, in pixels, so neither figure's plots
shrink.

Examples
--------
>>> import plotly.graph_objects as go
>>> top = go.Figure(go.Bar(y=[1, 2]), layout=dict(height=400, margin=dict(t=60, b=40)))
>>> bottom = go.Figure(go.Scatter(y=[3, 4]), layout=dict(height=300, title="below",
...                                                       margin=dict(t=60, b=40)))
>>> both = stack_figures(top, bottom)
>>> [trace.yaxis or "y" for trace in both.data], both.layout.height
(['y', 'y2'], 700)
>>> [round(y, 2) for y in both.layout.yaxis.domain + both.layout.yaxis2.domain]
[0.5, 1.0, 0.0, 0.33]
"""

from __future__ import annotations

import re
from typing import Any

import plotly.graph_objects as go

__all__ = ["stack_figures"]

# Plotly's defaults, used when a figure leaves them unset.
_HEIGHT = 450
_MARGIN = {"t": 100, "b": 80, "l": 80, "r": 80}
#: Trace types placed by ``domain`` rather than by a pair of axes.
_DOMAIN_TRACES = frozenset({"table", "pie", "indicator", "parcoords", "parcats", "sunburst",
                            "treemap", "icicle", "funnelarea", "sankey"})
#: Trace types that draw a colour bar unless told not to.
_COLORBAR_TRACES = frozenset({"heatmap", "contour", "histogram2d", "histogram2dcontour"})
_REF = re.compile(r"^([xy])(\d*)( domain)?$")
_AXIS_KEY = re.compile(r"^([xy])axis(\d*)$")
_AXIS_LINKS = ("anchor", "overlaying", "matches", "scaleanchor")


def stack_figures(top: go.Figure, bottom: go.Figure) -> go.Figure:
    """A new figure: ``top`` as it is, ``bottom`` under it; both keep their plots' pixel heights.

    The figure is as tall as both together; the space between them is ``top``'s
    bottom margin (its x axis's labels) plus ``bottom``'s top margin, where
    ``bottom``'s title goes. ``top``'s title, legend and template are kept.

    Parameters
    ----------
    top, bottom : plotly.graph_objects.Figure
        The figures, left unchanged.

    Returns
    -------
    plotly.graph_objects.Figure
    """
    top_height, top_margin = _height(top)
    bottom_height, bottom_margin = _height(bottom)
    above = top_height - top_margin["t"] - top_margin["b"]
    below = bottom_height - bottom_margin["t"] - bottom_margin["b"]
    gap = top_margin["b"] + bottom_margin["t"]
    total = above + gap + below

    def lift(y: float) -> float:  # top's paper y
        return (below + gap + y * above) / total

    def squeeze(y: float) -> float:  # bottom's paper y
        return y * below / total

    out = go.Figure(top)
    for trace in out.data:
        _place(trace, lift, above / total, {})
    for key, axis in _axes(out.layout).items():
        if key.startswith("y"):
            axis.domain = [lift(y) for y in (axis.domain or (0.0, 1.0))]
    for item in (*out.layout.annotations, *out.layout.shapes):
        _move(item, lift, {})

    renames = _renames(top, bottom)
    layout = bottom.layout
    new_axes: dict[str, Any] = {}
    for key, axis in _axes(layout).items():
        letter, number = _AXIS_KEY.match(key).groups()  # type: ignore[union-attr]
        name = renames[letter + number]
        settings = axis.to_plotly_json()
        for link in _AXIS_LINKS:
            if isinstance(settings.get(link), str):
                settings[link] = _rename(settings[link], renames)
        if letter == "y":
            settings["domain"] = [squeeze(y) for y in settings.get("domain", (0.0, 1.0))]
        new_axes[f"{letter}axis{name[1:]}"] = settings
    out.update_layout(new_axes)
    for trace in bottom.data:
        copy = go.Figure(trace).data[0]
        _place(copy, squeeze, below / total, renames)
        out.add_trace(copy)
    for item in layout.annotations:
        out.add_annotation(_move(go.layout.Annotation(item), squeeze, renames))
    for shape in layout.shapes:
        out.add_shape(_move(go.layout.Shape(shape), squeeze, renames))
    title = layout.title.text
    if title:
        font = layout.title.font.to_plotly_json() or {"size": 17}
        out.add_annotation(text=title, xref="paper", yref="paper", x=0.0, xanchor="left",
                           y=squeeze(1.0) + bottom_margin["t"] / 2 / total, yanchor="middle",
                           showarrow=False, font=font, align="left")
    margin = dict(top_margin, b=bottom_margin["b"], l=max(top_margin["l"], bottom_margin["l"]),
                  r=max(top_margin["r"], bottom_margin["r"]))
    out.update_layout(height=top_margin["t"] + total + bottom_margin["b"], margin=margin)
    return out


def _height(fig: go.Figure) -> tuple[int, dict[str, int]]:
    margin = fig.layout.margin
    sides = {side: int(getattr(margin, side) if getattr(margin, side) is not None else default)
             for side, default in _MARGIN.items()}
    return int(fig.layout.height or _HEIGHT), sides


def _axes(layout: go.Layout) -> dict[str, Any]:
    return {key: layout[key] for key in layout if _AXIS_KEY.match(key) and layout[key] is not None}


def _count(fig: go.Figure, letter: str) -> int:
    """The highest axis number of ``letter`` that ``fig`` uses (1 for plain "x")."""
    numbers = [int(n or 1) for key in fig.layout if (m := _AXIS_KEY.match(key)) and m.group(1) == letter
               for n in [m.group(2)]]
    for trace in fig.data:
        if trace.type not in _DOMAIN_TRACES:
            ref = getattr(trace, f"{letter}axis", None) or letter
            numbers.append(int(ref[1:] or 1))
    return max(numbers, default=0)


def _renames(top: go.Figure, bottom: go.Figure) -> dict[str, str]:
    """``bottom``'s axis names ("x", "x2", "y") to the names after ``top``'s."""
    out = {}
    for letter in "xy":
        shift = _count(top, letter)
        for number in range(1, _count(bottom, letter) + 1):
            out[letter + ("" if number == 1 else str(number))] = f"{letter}{number + shift}"
    return out


def _rename(ref: str, renames: dict[str, str]) -> str:
    match = _REF.match(ref)
    if not match or not renames:
        return ref
    letter, number, domain = match.groups()
    return renames.get(letter + number, letter + number) + (domain or "")


def _place(trace: Any, move: Any, scale: float, renames: dict[str, str]) -> None:
    """Move a trace into its share of the height: its domain, axes and colour bar."""
    if trace.type in _DOMAIN_TRACES:
        if hasattr(trace, "domain"):
            trace.domain.y = [move(y) for y in (trace.domain.y or (0.0, 1.0))]
        return
    if renames:
        trace.update(xaxis=_rename(trace.xaxis or "x", renames), yaxis=_rename(trace.yaxis or "y", renames))
    bars = []
    if trace.type in _COLORBAR_TRACES and trace.showscale is not False:
        bars.append(trace.colorbar)
    marker = getattr(trace, "marker", None)
    if marker is not None and getattr(marker, "showscale", None):
        bars.append(marker.colorbar)
    for bar in bars:
        anchor = bar.yanchor or "middle"
        bar.update(y=move(0.5 if bar.y is None else bar.y), yanchor=anchor,
                   len=(1.0 if bar.len is None else bar.len) * (scale if bar.lenmode != "pixels" else 1.0))


def _move(item: Any, move: Any, renames: dict[str, str]) -> Any:
    """Move an annotation or shape: paper y into its share, axis references renamed."""
    yref = item.yref or "paper"
    if isinstance(item, go.layout.Shape):
        if yref == "paper":
            item.update(y0=move(item.y0), y1=move(item.y1))
    elif yref == "paper" and item.y is not None:
        item.y = move(item.y)
    if renames:
        item.update(xref=_rename(item.xref or "paper", renames), yref=_rename(yref, renames))
    return item
