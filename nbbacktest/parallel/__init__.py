"""The parallel layer: cluster lifecycle, data shared once, sweep planning and execution.

Knows the engine and ipyparallel; draws nothing. Progress and results are reported
through events (:mod:`nbbacktest.parallel.events`) that the display layer observes.
"""

from nbbacktest.parallel.cluster import Cluster
from nbbacktest.parallel.events import EventBus, SweepEvent
from nbbacktest.parallel.grid import Plan, plan_instances, plan_sweep
from nbbacktest.parallel.sweep import SweepResult, resume, run_many, set_progress_factory, sweep

__all__ = [
    "Cluster", "EventBus", "Plan", "SweepEvent", "SweepResult", "plan_instances", "plan_sweep",
    "resume", "run_many", "set_progress_factory", "sweep",
]
