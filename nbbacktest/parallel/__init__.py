"""The parallel layer: cluster lifecycle, data shared once, sweep planning and execution.

Knows the engine and ipyparallel; draws nothing. Progress and results are reported
through events (:mod:`nbbacktest.parallel.events`) that the display layer observes;
``progress=True`` shows a text line on stderr unless a display was named (see
:mod:`nbbacktest.parallel.progress`).
"""

from nbbacktest.parallel.cluster import Cluster
from nbbacktest.parallel.events import EventBus, SweepEvent
from nbbacktest.parallel.grid import Plan, plan_instances, plan_sweep
from nbbacktest.parallel.launch import load_sweep, resume, run_many, sweep
from nbbacktest.parallel.spec import SweepSpec
from nbbacktest.parallel.sweep import SweepResult
from nbbacktest.parallel.walk_forward import WalkForwardResult, walk_forward

__all__ = [
    "Cluster", "EventBus", "Plan", "SweepEvent", "SweepResult", "SweepSpec", "load_sweep",
    "WalkForwardResult", "plan_instances", "plan_sweep", "resume", "run_many", "sweep", "walk_forward",
]
