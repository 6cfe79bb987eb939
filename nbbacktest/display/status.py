"""The ``%cluster`` status table, and the counts the magics print (``2 engines``, ``1 host``).

Pure text from a cluster's :meth:`~nbbacktest.Cluster.status` dict: nothing here
talks to a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["engines_phrase", "format_status", "plural"]


def format_status(status: Mapping[str, Any]) -> str:
    """A cluster's :meth:`~nbbacktest.Cluster.status` as the text table ``%cluster`` prints.

    Examples
    --------
    >>> print(format_status({"running": True, "kind": "local", "engines": 2,
    ...                      "hosts": {"node1": 2}, "busy": 1, "idle": 1,
    ...                      "data": {"3f9a": {"bytes": 1_500_000, "engines": 2}}}))
    Cluster (local): 2 engines on 1 host, 1 busy, 1 idle
      host   engines
      node1        2
      data        size  engines
      3f9a     1.4 MiB        2
    """
    if not status.get("running"):
        return "Cluster: stopped"
    hosts = status["hosts"]
    lines = [
        f"Cluster ({status['kind']}): {plural(status['engines'], 'engine')} on"
        f" {plural(len(hosts), 'host')}, {status['busy']:,} busy, {status['idle']:,} idle"
    ]
    width = max([len("host"), *map(len, hosts)])
    lines.append(f"  {'host':<{width}}  engines")
    lines += [f"  {host:<{width}}  {count:>7,}" for host, count in hosts.items()]
    data = status["data"]
    if not data:
        lines.append("  data held: none")
        return "\n".join(lines)
    width = max([len("data"), *map(len, data)])
    lines.append(f"  {'data':<{width}}  {'size':>10}  engines")
    lines += [
        f"  {key:<{width}}  {_size(held['bytes']):>10}  {held['engines']:>7,}"
        for key, held in data.items()
    ]
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def plural(number: int, noun: str) -> str:
    """``number`` and ``noun``, plural unless it is one, with thousands separators.

    Examples
    --------
    >>> plural(1, "engine"), plural(1500, "point")
    ('1 engine', '1,500 points')
    """
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def engines_phrase(engines: int) -> str:
    """Where a sweep runs: ``'on 2 engines'``, or ``'in this process'`` for 0 engines.

    Examples
    --------
    >>> engines_phrase(0), engines_phrase(2)
    ('in this process', 'on 2 engines')
    """
    return "in this process" if engines == 0 else f"on {plural(engines, 'engine')}"
