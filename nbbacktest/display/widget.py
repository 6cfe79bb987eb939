"""The progress widget: bar, counts, best run, engines, Cancel, and a live table of the best rows.

Built from stock ipywidgets once (like tqdm's notebook bar) and updated by setting
traits only: the sweep's events arrive on its runner thread, and a background
thread may set traits but must not use ``with output:``. Updates are throttled
(``interval``, 0.25 s by default); the final state is always drawn.

A blocking sweep keeps the kernel's main shell busy, so a Cancel click would wait
in its queue until the cell ends (ipywidgets #3468). Two ways around that:

- ipykernel 7 runs widget messages on a subshell thread when the front end sends
  them there (JupyterLab 4.4+ and Notebook 7.4+ do by default), but routes every
  message of a comm that last spoke from the main shell back to the main shell.
  The Cancel button forgets that route, so a click reaches the sweep at once.
- ipykernel 6 has no subshells: :meth:`ProgressWidget.poll`, which the sweep calls
  while it waits, lets jupyter-ui-poll handle the waiting messages.

Elsewhere (an older front end on ipykernel 7, or no jupyter-ui-poll), the click acts
when the cell ends; interrupting the kernel cancels at once and keeps finished rows.
"""

from __future__ import annotations

import heapq
import html
import importlib.util
import math
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from nbbacktest.display.charts import figure_bundle
from nbbacktest.display.kernel import in_kernel
from nbbacktest.display.tables import MetricRange, rank_rows, results_html
from nbbacktest.errors import NbbacktestWarning
from nbbacktest.parallel.events import PointDone, SweepEvent
from nbbacktest.parallel.progress import ProgressState
from nbbacktest.parallel.sweep import SweepResult

__all__ = ["ProgressWidget", "figure_widget"]

#: The bar's colour once the sweep ended, by status.
BAR_STYLES = {"complete": "success", "cancelled": "warning", "stopped": "danger", "failed": "danger"}
#: The Cancel button's label once the sweep ended, by status (disabled: nothing to cancel).
FINAL_LABELS = {"complete": "Done", "cancelled": "Cancelled", "stopped": "Stopped", "failed": "Failed"}

_CANCEL_TIP = "Stop the sweep; finished rows are kept (interrupting the kernel does the same)"
_NO_UI_POLL = (
    "Cancel acts when the cell finishes: install jupyter-ui-poll to cancel a blocking "
    "sweep while it runs, or interrupt the kernel (finished rows are kept)"
)


class ProgressWidget(widgets.VBox):
    """A sweep's live progress, with a Cancel button and the best rows so far.

    Build it for a running or finished sweep (it starts from the sweep's current
    state and follows its events); in a notebook, :func:`show_progress` does this
    for every sweep.

    Parameters
    ----------
    sweep : SweepResult
        The sweep to follow.
    top : int
        Rows in the live table (0 hides it).
    interval : float
        Least seconds between two redraws.

    Attributes
    ----------
    bar : ipywidgets.IntProgress
        ``value`` runs finished of ``max``; ``bar_style`` "success" once complete,
        "warning" if cancelled, "danger" if stopped at an error or failed.
    counts : ipywidgets.HTML
        done/total, errors, rate, elapsed and ETA (or the final status).
    best_label : ipywidgets.HTML
        The best metric so far with its params, and engines busy/total.
    cancel_button : ipywidgets.Button
        Calls ``sweep.cancel()``.
    table : ipywidgets.HTML
        The ``top`` best rows by the metric.

    Examples
    --------
    >>> import nbbacktest as nbb
    >>> from nbbacktest.engine.examples import SmaCross
    >>> sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"), {"fast": [5, 10]}, progress=False)
    >>> widget = ProgressWidget(sweep)
    >>> widget.bar.value, widget.bar.max, widget.bar.bar_style
    (2, 2, 'success')
    """

    def __init__(self, sweep: SweepResult, *, top: int = 10, interval: float = 0.25) -> None:
        bar = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="45%"))
        counts = widgets.HTML()
        cancel = widgets.Button(description="Cancel", icon="stop", button_style="warning",
                                tooltip=_CANCEL_TIP,
                                layout=widgets.Layout(width="auto"))
        best_label = widgets.HTML()
        note = widgets.HTML()
        table = widgets.HTML()
        super().__init__(children=[widgets.HBox([bar, counts, cancel]), best_label, note, table])
        self.sweep = sweep
        self.top = top
        self.interval = interval
        self.bar, self.counts, self.cancel_button = bar, counts, cancel
        self.best_label, self.note, self.table = best_label, note, table
        self.draws = 0
        self._lock = threading.RLock()
        self._last_draw = -math.inf
        self._timer: threading.Timer | None = None
        self._leaders: list[tuple[float, int]] = []  # min-heap of (goodness, row): the top rows
        self._leader_rows: set[int] = set()
        # The metric's range over every run so far: the live table's colours are
        # relative to the whole sweep, not to the few rows it shows.
        self._range = MetricRange.of([])
        self._table_stale = True
        kernel = _kernel()
        self._ui_events = _ui_events(kernel)
        if kernel is not None and self._ui_events is None and not _has_subshells(kernel):
            cancel.tooltip = _NO_UI_POLL
        cancel.on_click(self._cancel_clicked)
        with self._lock:
            self.tracker = ProgressState.of(sweep)
            self._seed_leaders()
            self.draw()
        # After the button's last message from this (main) shell: see the module docstring.
        _follow_front_end_subshell(cancel)
        self._unsubscribe: Callable[[], None] | None = sweep.events.subscribe(self._observe)
        if sweep.status != "running" and not self.tracker.finished:
            # It ended between the snapshot and the subscription: take its final state.
            with self._lock:
                self.tracker = ProgressState.of(sweep)
                self.draw()

    # ------------------------------------------------------------ events
    def _observe(self, event: SweepEvent) -> None:
        with self._lock:
            final = self.tracker.update(event)
            if isinstance(event, PointDone):
                self._consider(event.index, event.value)
            if final:
                self._cancel_timer()
                self.draw()
                return
            due = self._last_draw + self.interval
            now = time.monotonic()
            if now >= due:
                self.draw()
            elif self._timer is None:
                # Points stopped arriving for a while: still show the latest state.
                self._timer = threading.Timer(due - now, self._draw_late)
                self._timer.daemon = True
                self._timer.start()

    def _draw_late(self) -> None:
        with self._lock:
            self._timer = None
            self.draw()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _consider(self, row: int, value: float) -> None:
        if math.isfinite(value):
            low, high, runs = self._range
            self._range = MetricRange(min(low, value) if runs else value,
                                      max(high, value) if runs else value, runs + 1)
        if not self.top or value != value or row in self._leader_rows:
            return
        goodness = value if self.tracker.maximize else -value
        if len(self._leaders) < self.top:
            heapq.heappush(self._leaders, (goodness, row))
        elif goodness > self._leaders[0][0]:
            _, dropped = heapq.heapreplace(self._leaders, (goodness, row))
            self._leader_rows.discard(dropped)
        else:
            return
        self._leader_rows.add(row)
        self._table_stale = True

    def _seed_leaders(self) -> None:
        sweep = self.sweep
        if not self.top or not sweep.progress:
            return
        frame = sweep.results
        ranked = rank_rows(frame, sweep.metric, descending=sweep.maximize, top=self.top)
        for row, value in zip(ranked.index.tolist(), ranked[sweep.metric]):
            self._consider(int(row), float(value))
        # Over every run so far, each once (_consider counted the leaders a second time).
        self._range = MetricRange.of(frame[sweep.metric])

    # ------------------------------------------------------------ drawing
    def draw(self) -> None:
        """Show the current state now (the observer calls this, throttled)."""
        with self._lock:
            self._last_draw = time.monotonic()
            self.draws += 1
            state = self.tracker
            fields = state.fields()
            self.bar.max = max(state.total, 1)
            self.bar.value = min(state.done, self.bar.max)
            errors = fields["errors"]
            if state.failed:
                errors = f"<span style='color:#c0392b'>{errors}</span>"
            self.counts.value = " · ".join(
                [f"<b>{fields['counts']}</b>", errors, fields["rate"], fields["elapsed"], fields["eta"]]
            )
            self.best_label.value = " · ".join(p for p in (fields["best"], fields["engines"]) if p)
            note = state.reason if state.finished and state.reason else state.note
            self.note.value = f"<i>{html.escape(note)}</i>" if note else ""
            if state.finished:
                every_run_failed = bool(state.failed) and state.failed == state.done
                self.bar.bar_style = "danger" if every_run_failed else BAR_STYLES.get(state.status, "danger")
                self.cancel_button.disabled = True
                self.cancel_button.button_style = ""  # plainly inactive once over
                # Not "Cancelling…" once it stopped: the button says how it ended.
                self.cancel_button.description = FINAL_LABELS.get(state.status, state.status)
                clean = state.status == "complete" and not every_run_failed
                self.cancel_button.icon = "check" if clean else ""
            # The caption counts every run so far: redrawn at the end even when no leader changed.
            if (self._table_stale or state.finished) and self._leaders:
                self.table.value = self._table_html()
                self._table_stale = False

    def _table_html(self) -> str:
        rows = [row for _, row in self._leaders]
        frame = pd.DataFrame.from_records([self.sweep.row(i) for i in rows], index=rows)
        return results_html(frame, metric=self.sweep.metric, maximize=self.sweep.maximize, top=self.top,
                            within=self._range, total=self.tracker.done)

    # ------------------------------------------------------------ cancel
    def _cancel_clicked(self, _button: Any = None) -> None:
        with self._lock:
            self.cancel_button.disabled = True
            if not self.tracker.finished:
                self.cancel_button.description = "Cancelling…"
        self.sweep.cancel()
        with self._lock:
            if self.sweep.status != "running" and not self.tracker.finished:
                # Over already, its Finished event still on its way: show the end now.
                self.tracker = ProgressState.of(self.sweep)
            self.draw()

    def poll(self) -> None:
        """Handle waiting widget messages (a Cancel click) while a blocking sweep waits.

        The sweep calls this about 20 times a second from the waiting cell. A
        no-op outside a kernel, off the main thread, or without jupyter-ui-poll.
        """
        ui_events = self._ui_events
        if ui_events is None or threading.current_thread() is not threading.main_thread():
            return
        try:
            with ui_events() as process:
                process(10)
        except Exception as error:  # a kernel this jupyter-ui-poll does not know
            self._ui_events = None
            self.cancel_button.tooltip = _NO_UI_POLL
            warnings.warn(f"the Cancel button cannot be polled while the sweep runs ({error}); "
                          "it acts when the cell finishes", NbbacktestWarning, stacklevel=2)

    def close(self) -> None:
        """Stop following the sweep and close the widgets."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._lock:
            self._cancel_timer()
        for child in (self.bar, self.counts, self.cancel_button, self.best_label, self.note, self.table):
            child.close()
        super().close()

    def __repr__(self) -> str:
        return self.tracker.line()


def _kernel() -> Any:
    """The running Jupyter kernel, or None outside one."""
    if not in_kernel():
        return None
    from IPython import get_ipython

    return get_ipython().kernel


def _has_subshells(kernel: Any) -> bool:
    return getattr(kernel, "shell_channel_thread", None) is not None


def _ui_events(kernel: Any) -> Callable[[], Any] | None:
    """jupyter-ui-poll's ``ui_events`` where it can work, else None.

    It drives ``kernel.do_one_iteration``, which ipykernel 7 no longer has (there a
    subshell handles the click instead); without the package there is no polling.
    """
    if kernel is None or not hasattr(kernel, "do_one_iteration"):
        return None
    try:
        from jupyter_ui_poll import ui_events
    except ImportError:
        return None
    return ui_events


def _follow_front_end_subshell(button: widgets.Button) -> None:
    """Let the front end's choice of subshell stand for this button's messages.

    ipykernel 7 routes a comm's incoming messages to the shell its last outgoing
    message came from (so that replies reach an awaiting subshell); for a widget
    built in a cell that is the main shell, busy until the cell ends. Forgetting
    that route lets the front end's subshell take the click. A no-op elsewhere.
    """
    comm = getattr(button, "comm", None)
    if comm is not None and hasattr(comm, "_reply_subshell_for"):
        try:
            del comm._reply_subshell_id
        except AttributeError:
            pass


def figure_widget(fig: go.Figure) -> widgets.DOMWidget:
    """A widget that shows ``fig``, to place inside other widgets.

    An interactive ``go.FigureWidget`` where anywidget is installed (plotly's
    widget needs it); otherwise an ``Output`` holding the figure's display data,
    which JupyterLab, Notebook 7 and VS Code render. Safe from any thread (it
    sets traits only).

    Examples
    --------
    >>> out = figure_widget(go.Figure(go.Scatter(y=[1, 3, 2])))
    >>> type(out).__name__ in {"FigureWidget", "Output"}
    True
    """
    if importlib.util.find_spec("anywidget") is not None:
        return go.FigureWidget(fig)
    output = widgets.Output()
    bundle = figure_bundle(fig) or {"text/plain": repr(fig)}
    output.outputs = ({"output_type": "display_data", "data": bundle, "metadata": {}},)
    return output
