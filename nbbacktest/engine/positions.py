"""Exits of a position or of one trade, and the open trades of ``separate_trades`` strategies.

An :class:`Exits` holds a stop-loss, a take-profit and a trailing stop; the
event loop (:mod:`nbbacktest.engine.event_driven`) keeps one for the position,
or one per open :class:`Trade` when the strategy sets ``separate_trades = True``.

Trailing stops: ``trail`` (a price distance) or ``trail_pct`` (a fraction). At the
fill the stop starts at the fill price (after slippage) minus the distance (a
long; a short mirrors it), ``fill * (1 - trail_pct)`` for a fraction. After each
bar closes, a long's stop rises to ``high - trail`` (``high * (1 - trail_pct)``)
when that is higher, a short's falls to ``low + trail`` (``low * (1 + trail_pct)``)
when lower; the new level is checked from the next bar on, like a stop order (a gap
through it exits at the open). The bar of an entry at its open counts; the bar of an
entry inside it or at its close does not (its extreme may have come before the fill).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbbacktest.engine.broker import Broker
    from nbbacktest.engine.orders import Order

__all__ = ["Exits", "Trade", "exit_price"]


class Exits:
    """Stop-loss, take-profit and trailing stop of a position or of one trade.

    ``sl``/``tp`` are prices (None: none). ``trail`` (price distance) or
    ``trail_pct`` (fraction) make a trailing stop whose current level is ``stop``.
    ``exits_from`` is the first bar they may trigger on, ``trail_from`` the first
    bar whose extreme moves the trailing stop.

    Examples
    --------
    >>> exits = Exits()
    >>> exits.arm_trail(1, 100.0, trail=None, trail_pct=0.05, bar=3, counts=True)
    >>> exits.stop
    95.0
    >>> exits.ratchet(1.0, 4, high=110.0, low=101.0); exits.stop
    104.5
    >>> exits.hit(1.0, o=105.0, h=106.0, lo=104.0)
    (104.5, 'trailing-stop')
    """

    __slots__ = ("sl", "tp", "trail", "trail_pct", "stop", "exits_from", "trail_from")

    def __init__(self) -> None:
        self.sl: float | None = None
        self.tp: float | None = None
        self.trail: float | None = None
        self.trail_pct: float | None = None
        self.stop: float | None = None
        self.exits_from = 0
        self.trail_from = 0

    @property
    def armed(self) -> bool:
        """True when any exit is set."""
        return self.sl is not None or self.tp is not None or self.stop is not None

    def clear(self) -> None:
        """Drop every exit (the position closed, or reversed without exits of its own)."""
        self.sl = self.tp = self.trail = self.trail_pct = self.stop = None

    def take(self, order: Order, fill_price: float, bar: int, counts: bool) -> None:
        """Set the exits of ``order`` filled at ``fill_price`` (after slippage) on ``bar``.

        ``counts``: the fill was at the bar's open, so the bar's extreme is after it.
        """
        self.sl, self.tp = order.exit_levels(fill_price)
        self.trail = self.trail_pct = self.stop = None
        if order.trail is not None or order.trail_pct is not None:
            self.arm_trail(order.side, fill_price, order.trail, order.trail_pct, bar, counts)

    def arm_trail(
        self, side: float, price: float, trail: float | None, trail_pct: float | None,
        bar: int, counts: bool,
    ) -> None:
        """Start a trailing stop at ``price`` minus the distance (a long), moving from ``bar``."""
        self.trail, self.trail_pct = trail, trail_pct
        distance = trail if trail is not None else price * (trail_pct or 0.0)
        self.stop = price - distance if side > 0 else price + distance
        self.trail_from = bar if counts else bar + 1

    def ratchet(self, units: float, bar: int, high: float, low: float) -> None:
        """Move the trailing stop after ``bar`` closed, from its high (long) or low (short)."""
        stop = self.stop
        if stop is None or bar < self.trail_from:
            return
        trail = self.trail
        if units > 0:
            level = high - trail if trail is not None else high * (1.0 - (self.trail_pct or 0.0))
            if level > stop:
                self.stop = level
        else:
            level = low + trail if trail is not None else low * (1.0 + (self.trail_pct or 0.0))
            if level < stop:
                self.stop = level

    def hit(self, units: float, o: float, h: float, lo: float) -> tuple[float, str] | None:
        """The price and reason of an exit in a bar (open ``o``, high ``h``, low ``lo``), if any.

        The stop is the tighter of the stop-loss and the trailing stop; the trailing
        stop is named only when strictly tighter.
        """
        stop, trailing = self.sl, False
        level = self.stop
        if level is not None and (stop is None or (level > stop if units > 0 else level < stop)):
            stop, trailing = level, True
        found = exit_price(units, stop, self.tp, o, h, lo)
        if trailing and found is not None and found[1] == "stop-loss":
            return found[0], "trailing-stop"
        return found


class Trade(Exits):
    """One open trade of a ``separate_trades`` strategy (``self.trades`` in ``next``).

    ``size`` units (negative short) entered at ``entry_price`` (after slippage) on bar
    ``entry_bar``; ``sl``, ``tp``, ``trail``, ``trail_pct`` may be set while it is
    open (see :meth:`Position.set_exits <nbbacktest.engine.orders.Position.set_exits>`),
    ``stop`` is the trailing stop's level. ``close(fraction)`` closes it, or part of it,
    at the next fill.

    Examples
    --------
    >>> t = Trade(10.0, 100.0, 2, 1.0, "dip")
    >>> t
    <Trade size=10.0 entry_price=100.0 entry_bar=2 tag='dip' sl=None tp=None stop=None>
    """

    __slots__ = ("size", "entry_price", "entry_bar", "entry_cost", "tag", "closer")

    def __init__(
        self, size: float, entry_price: float, entry_bar: int, entry_cost: float, tag: str | None
    ) -> None:
        super().__init__()
        self.size, self.entry_price, self.entry_bar = size, entry_price, entry_bar
        self.entry_cost, self.tag = entry_cost, tag
        # Set by the event loop: submits an order that closes a fraction of this trade.
        self.closer: Callable[[Trade, float], Order] | None = None

    @property
    def is_long(self) -> bool:
        """True for a long trade."""
        return self.size > 0

    def close(self, fraction: float = 1.0) -> Order:
        """Close ``fraction`` of this trade at the next fill (see ``Strategy.close``)."""
        if self.closer is None:
            raise RuntimeError("this trade is closed")
        return self.closer(self, fraction)

    def __repr__(self) -> str:
        return (
            f"<Trade size={self.size!r} entry_price={self.entry_price!r} entry_bar={self.entry_bar}"
            f" tag={self.tag!r} sl={self.sl!r} tp={self.tp!r} stop={self.stop!r}>"
        )


def close_trade(broker: Broker, trades: list[Trade], trade: Trade, units: float, bar: int,
                raw_price: float, reason: str) -> None:
    """Close ``units`` (> 0, at most the trade's) of ``trade`` at ``raw_price``: one trade row.

    The broker books a reduction against its one average entry; for this fill its
    entry fields describe ``trade`` alone, scaled to the whole position so that its
    share arithmetic gives the trade's own entry commission. They are set back to
    the average of the trades left afterwards.
    """
    held = broker.units
    share = abs(held) / abs(trade.size)
    broker.entry_price, broker.entry_bar, broker.entry_tag = trade.entry_price, trade.entry_bar, trade.tag
    broker.entry_cost = trade.entry_cost * share
    part = trade.entry_cost * units / abs(trade.size)
    broker.trade_units(-math.copysign(units, trade.size), bar, raw_price, None, reason)
    remaining = abs(trade.size) - units
    if remaining <= 1e-12 * units:
        trades.remove(trade)
        trade.closer = None
    else:
        trade.size = math.copysign(remaining, trade.size)
        trade.entry_cost -= part
    restore_average(broker, trades)


def restore_average(broker: Broker, trades: list[Trade]) -> None:
    """Set the broker's entry fields to the open trades' average (size-weighted) entry."""
    if not trades or not broker.units:
        broker.entry_price, broker.entry_cost = math.nan, 0.0
        return
    size = sum(abs(t.size) for t in trades)
    broker.entry_price = sum(abs(t.size) * t.entry_price for t in trades) / size
    broker.entry_cost = sum(t.entry_cost for t in trades)
    broker.entry_bar, broker.entry_tag = trades[0].entry_bar, trades[0].tag


def exit_price(
    units: float, sl: float | None, tp: float | None, o: float, h: float, lo: float
) -> tuple[float, str] | None:
    """Where a stop-loss/take-profit closes the position in this bar, and which, if at all.

    Examples
    --------
    >>> exit_price(10.0, sl=95.0, tp=110.0, o=100.0, h=104.0, lo=94.0)
    (95.0, 'stop-loss')
    >>> exit_price(10.0, sl=95.0, tp=110.0, o=112.0, h=113.0, lo=111.0)
    (112.0, 'take-profit')
    """
    if units > 0:
        if sl is not None and o <= sl:
            return o, "stop-loss"
        if tp is not None and o >= tp:
            return o, "take-profit"
        if sl is not None and lo <= sl:
            return sl, "stop-loss"
        if tp is not None and h >= tp:
            return tp, "take-profit"
    else:
        if sl is not None and o >= sl:
            return o, "stop-loss"
        if tp is not None and o <= tp:
            return o, "take-profit"
        if sl is not None and h >= sl:
            return sl, "stop-loss"
        if tp is not None and lo <= tp:
            return tp, "take-profit"
    return None
