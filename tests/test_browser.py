"""The notebooks as a person sees them: JupyterLab and Notebook 7, driven by Debian's Chromium through Playwright.

A JupyterLab server starts on 127.0.0.1 (a free port, a token, a copy of the
notebooks as its root, its own settings); it serves Notebook 7 too (``/notebooks/``),
whose server extension the ``notebook`` package installs. Chromium opens a notebook
in each front end, runs every cell from the Run menu, and the test reads the page:
the progress widget reached 100 %, Plotly drew a table and a chart, and no cell
shows a traceback. Screenshots go to ``build/screenshots/`` (the README's come from
there; Notebook 7's are named ``notebook7-*``).

Needs /usr/bin/chromium (``apt-get install chromium``; never ``playwright install``).
Without it the tests skip, except under CI (``CI=true``) where they fail.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nbbacktest.parallel.cluster import reap

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
# Headless, and nothing that phones home: this machine has no network but its registries.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_SECONDS = 90
#: The front ends a notebook is checked in, and the address that opens it there. Both
#: share one server and one settings directory (Notebook 7 reads JupyterLab's).
FRONT_ENDS = {
    # a workspace of its own: no tab or layout left over from another notebook's test
    "jupyterlab": "{url}/lab/workspaces/{name}/tree/{name}.ipynb?token={token}",
    "notebook7": "{url}/notebooks/{name}.ipynb?token={token}",
}
RUN_ALL_SECONDS = 150
# JupyterLab settings for a quiet, deterministic page: no news toast, every cell
# attached to the DOM (so that off-screen outputs can be read too).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if in_ci():
        pytest.fail(f"{CHROMIUM} is missing under CI: .ci/run installs it (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is absent: `apt-get install chromium` to run the browser tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server in the background, on its own copy of the notebooks."""

    def __init__(self, base: Path) -> None:
        import psutil

        self.root = base / "root"
        shutil.copytree(NOTEBOOKS, self.root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        settings = base / "settings"
        for name, values in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.port = free_port()
        self.token = secrets.token_hex(16)
        env = dict(
            os.environ,
            JUPYTERLAB_SETTINGS_DIR=str(settings),
            JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
            JUPYTER_RUNTIME_DIR=str(base / "runtime"),
            # a user's own Jupyter config must not change what the test sees
            JUPYTER_CONFIG_DIR=str(base / "config"),
            JUPYTER_PREFER_ENV_PATH="1",
        )
        self.log_path = base / "lab.log"
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--allow-root",
                "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
                f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
        )
        self.server = psutil.Process(self.process.pid)
        self._wait_until_up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited early:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"JupyterLab not up in {SERVER_START_SECONDS} s:\n{self.log_text()}")

    def wait_for_idle_kernel(self, path: str, timeout: float = 60) -> None:
        """Until the notebook at ``path`` has a kernel that is started and idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{self.url}/api/sessions?token={self.token}", timeout=5) as r:
                sessions = json.load(r)
            states = [s["kernel"]["execution_state"] for s in sessions if s["path"] == path]
            if states == ["idle"]:
                return
            time.sleep(0.5)
        raise RuntimeError(f"no idle kernel for {path} in {timeout} s:\n{self.log_text()}")

    def shut_down_kernels(self) -> None:
        """End every notebook's kernel (what closing it with "Shut Down Kernel" does)."""
        with urllib.request.urlopen(f"{self.url}/api/sessions?token={self.token}", timeout=5) as r:
            sessions = json.load(r)
        for session in sessions:
            request = urllib.request.Request(
                f"{self.url}/api/sessions/{session['id']}?token={self.token}", method="DELETE"
            )
            urllib.request.urlopen(request, timeout=30).close()

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        import psutil

        # Kernels and the engines their notebooks started are the server's descendants
        # until it exits: note them first, so that none outlives the test.
        try:
            descendants = self.server.children(recursive=True)
        except psutil.Error:
            descendants = []
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        reap(descendants, timeout=15)
        self.log.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_chromium()
    server = Lab(tmp_path_factory.mktemp("lab"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for the module: Playwright's sync API runs once per thread."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def browser(lab, chromium):
    """Chromium, with the JupyterLab server up."""
    return chromium


# What the page shows, read in one pass over the DOM.
READ_PAGE = """() => {
  const texts = (selector) => Array.from(document.querySelectorAll(selector), e => e.textContent);
  const notebook = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)');
  const inside = (selector) => Array.from(notebook.querySelectorAll(selector));
  return {
    prompts: inside('.jp-CodeCell .jp-InputArea-prompt').map(e => e.textContent.trim()),
    kernel: (notebook.querySelector('.jp-Notebook-ExecutionIndicator') || {}).dataset?.status,
    stderr: inside('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
      .map(e => e.textContent),
    // a traceback printed to stdout (by a library's logging, say) is one all the same
    tracebacks: inside('.jp-OutputArea-output').map(e => e.textContent)
      .filter(t => t.includes('Traceback (most recent call last)')),
    plots: inside('.js-plotly-plot').length,
    tables: inside('.js-plotly-plot .table').length,
    chartTraces: inside('.js-plotly-plot .scatterlayer .trace, .js-plotly-plot .heatmaplayer .hm')
      .length,
    progressBars: inside('.widget-hprogress .progress-bar, .widget-vprogress .progress-bar')
      .map(fill => fill.style.width),
    widgetTexts: inside('.jupyter-widgets').map(e => e.textContent.trim()).filter(t => t),
  };
}"""


def require_front_end(front_end: str) -> None:
    """Notebook 7 needs the ``notebook`` package (the ``lab`` and ``test`` extras install it);
    under CI=true its absence is a failure, as Chromium's is."""
    if front_end == "notebook7" and importlib.util.find_spec("notebook") is None:
        message = "Notebook 7 is not installed: `pip install -e \".[test]\"` to test it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def run_notebook(browser, lab: Lab, name: str, front_end: str = "jupyterlab") -> tuple[dict, object]:
    """Open a notebook, run all cells from the Run menu, wait for the end; the page's state."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(FRONT_ENDS[front_end].format(url=lab.url, name=name, token=lab.token))
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']")
    lab.wait_for_idle_kernel(f"{name}.ipynb")
    if page.locator("#jp-left-stack").is_visible():
        page.keyboard.press("Control+b")  # hide the file browser: more room for the outputs
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    # Should the kernel have gone (it did once, at start), Lab asks for one: the default.
    dialog = page.locator(".jp-Dialog .jp-mod-accept")
    with contextlib.suppress(PlaywrightTimeout):
        dialog.wait_for(timeout=2_000)
        dialog.click()
    deadline = time.monotonic() + RUN_ALL_SECONDS
    state = page.evaluate(READ_PAGE)
    while time.monotonic() < deadline:
        state = page.evaluate(READ_PAGE)
        finished = state["prompts"] and all(
            p.startswith("[") and p[1:-2].strip().isdigit() for p in state["prompts"]
        )
        if finished and state["kernel"] == "idle":
            break
        time.sleep(0.5)
    else:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{front_end}-{name}-timeout.png"))
        pytest.fail(f"{name} in {front_end}: not finished in {RUN_ALL_SECONDS} s; prompts {state['prompts']}")
    time.sleep(1.0)  # the last Plotly figures draw after the kernel goes idle
    return page.evaluate(READ_PAGE), page


def assert_sweep_progress_complete(state: dict, runs: int) -> None:
    """Every progress bar is full, and the sweep's widget says all runs finished."""
    assert state["progressBars"], "no progress widget was drawn"
    assert set(state["progressBars"]) == {"100%"}, state["progressBars"]
    assert any(f"{runs}/{runs}" in text for text in state["widgetTexts"]), state["widgetTexts"]


def assert_ran_a_179_run_sweep_and_drew_it(state: dict) -> None:
    """No error, a finished 179-run sweep, and Plotly tables and charts on the page."""
    assert not tracebacks(state), tracebacks(state)[0][-2000:]
    assert_sweep_progress_complete(state, runs=179)
    assert state["tables"] >= 1, "no Plotly table was drawn"
    assert state["chartTraces"] >= 1 and state["plots"] >= 2, "no Plotly chart was drawn"


def tracebacks(state: dict) -> list[str]:
    """Outputs showing an error: stderr with a traceback or an exception, any traceback."""
    errors = [text for text in state["stderr"] if "Traceback" in text or "Error" in text]
    return errors + [text for text in state["tracebacks"] if text not in errors]


def screenshot(page, name: str, cell_text: str) -> None:
    """The window with the code cell containing ``cell_text`` at its top."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    cell = page.locator(".jp-CodeCell", has=page.locator(".jp-InputArea", has_text=cell_text))
    cell.first.evaluate("e => e.scrollIntoView({block: 'start'})")
    time.sleep(0.5)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def screenshot_whole_notebook(page, name: str) -> None:
    """The whole notebook, however long: the window grows to its height for the shot."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The notebook scrolls inside its panel, not the page.
    height = page.evaluate(
        """() => {
          const scroller = document.querySelector(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
          scroller.scrollTop = 0;
          return scroller.scrollHeight;
        }"""
    )
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 200, 16_000)})
    time.sleep(1.0)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-full.png"))
    page.set_viewport_size(size)


@contextlib.contextmanager
def ran(browser, lab: Lab, name: str, front_end: str = "jupyterlab"):
    """The page of notebook ``name`` after Run All; then the page closes and kernels stop."""
    page = None
    try:
        state, page = run_notebook(browser, lab, name, front_end)
        yield state, page
    finally:
        if page is not None:
            page.close()
        lab.shut_down_kernels()


@pytest.mark.parametrize("name, shots", [
    ("01-quickstart", [("01-quickstart-result", "result = nbb.backtest("),
                       ("01-quickstart-sweep", "sweep = nbb.sweep(")]),
    ("04-sweep-widget", [("04-sweep-widget", "widget = nbb.SweepWidget("),
                         ("04-sweep-widget-explore", "explorer = nbb.explore(")]),
], ids=["quickstart", "sweep-widget"])
@pytest.mark.parametrize("front_end", list(FRONT_ENDS))
def test_notebook_runs_in_each_front_end(browser, lab, front_end, name, shots):
    require_front_end(front_end)
    # JupyterLab's shots keep their plain names (the README shows them).
    prefix = "" if front_end == "jupyterlab" else f"{front_end}-"
    with ran(browser, lab, name, front_end) as (state, page):
        for shot, cell_text in shots:
            screenshot(page, prefix + shot, cell_text)
        screenshot_whole_notebook(page, prefix + name)
    assert_ran_a_179_run_sweep_and_drew_it(state)


# ---------------------------------------------------------------------- the offline report
# No JupyterLab server here: the report is a file, opened as one.
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def file_browser(chromium):
    """Chromium for pages opened from disk (no server, no ``lab`` fixture)."""
    return chromium


@contextlib.contextmanager
def opened_offline(file_browser, path: Path):
    """The page of the file at ``path``, and every request, websocket and error it made."""
    page = file_browser.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(30_000)
    seen: dict[str, list[str]] = {"requests": [], "websockets": [], "errors": []}
    page.on("request", lambda request: seen["requests"].append(request.url))
    page.on("websocket", lambda socket: seen["websockets"].append(socket.url))
    page.on("pageerror", lambda error: seen["errors"].append(str(error)))
    page.on("console", lambda message: seen["errors"].append(message.text) if message.type == "error"
            else None)
    try:
        page.goto(path.as_uri())
        yield page, seen
    finally:
        page.close()


def assert_nothing_left_the_page(seen: dict[str, list[str]], path: Path) -> None:
    """The file itself is the only request (data: and blob: stay in the page); no error."""
    outside = [url for url in seen["requests"]
               if url != path.as_uri() and not url.startswith(("data:", "blob:"))]
    assert not outside, outside
    assert seen["requests"][:1] == [path.as_uri()]
    assert not seen["websockets"], seen["websockets"]
    assert not seen["errors"], seen["errors"]


READ_COLUMN = """([name]) => {
  const table = document.getElementById('results-table');
  const k = Array.from(table.tHead.rows[0].cells, th => th.textContent).indexOf(name);
  return Array.from(table.tBodies[0].rows, row => row.cells[k].textContent);
}"""


def read_column(page, name: str) -> list[str]:
    return page.evaluate(READ_COLUMN, [name])


def numbers(texts: list[str]) -> list[float]:
    """Cell texts as numbers (``1,234.5%`` reads 1234.5); ``n/a`` is NaN."""
    out = []
    for text in texts:
        cleaned = text.replace("★", "").replace(",", "").replace("%", "").strip()
        out.append(float("nan") if cleaned in ("", "n/a") else float(cleaned))
    return out


def assert_sorted(values: list[float], descending: bool) -> None:
    """In order, missing values (NaN) after every number."""
    present = [v for v in values if v == v]
    assert values[: len(present)] == present, "a missing value sorts before a number"
    assert present == sorted(present, reverse=descending)


def click_header(page, name: str) -> None:
    page.locator("#results-table thead th", has_text=name).first.click()


def test_the_sweep_report_opens_offline_draws_and_sorts(file_browser, tmp_path):
    import nbbacktest as nbb
    from nbbacktest.engine.examples import SmaCross

    sweep = nbb.sweep(SmaCross, nbb.load_sample("daily"),
                      grid={"fast": range(5, 60, 5), "slow": range(10, 200, 10)},
                      where=lambda p: p.fast < p.slow, progress=False)
    path = sweep.report(tmp_path / "sweep report.html")
    with opened_offline(file_browser, path) as (page, seen):
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2")
        assert page.locator("#figure-sweep .heatmaplayer").count() == 1
        assert page.locator("#figure-best .scatterlayer .trace").count() >= 2
        assert page.locator("#results-table tbody tr").count() == len(sweep) == 179
        assert page.locator("#results-table tbody tr.best").count() == 1
        first_rows = read_column(page, "row")
        assert first_rows[0] == f"★ {sweep.best_index}"
        assert_sorted(numbers(read_column(page, "sharpe")), descending=True)
        time.sleep(0.5)  # Plotly's resize settles
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=True)
        DOCS.mkdir(exist_ok=True)
        shutil.copyfile(SCREENSHOTS / "report.png", DOCS / "report.png")

        click_header(page, "fast")
        fast = numbers(read_column(page, "fast"))
        assert_sorted(fast, descending=False)
        assert read_column(page, "row") != first_rows
        assert page.locator("#results-table thead th[aria-sort]").all_inner_texts() == ["fast"]
        click_header(page, "fast")
        assert_sorted(numbers(read_column(page, "fast")), descending=True)
        click_header(page, "return_pct")  # a stat: highest first, then lowest first
        assert_sorted(numbers(read_column(page, "return_pct")), descending=True)
        click_header(page, "sharpe")
        sharpe = numbers(read_column(page, "sharpe"))
        assert_sorted(sharpe, descending=True)
        click_header(page, "sharpe")
        assert_sorted(numbers(read_column(page, "sharpe")), descending=False)
        assert sorted(map(int, numbers(read_column(page, "row")))) == list(range(179))
    assert_nothing_left_the_page(seen, path)


def test_a_report_of_three_params_draws_parallel_coordinates_offline(file_browser, tmp_path):
    import nbbacktest as nbb
    from nbbacktest.engine.examples import SmaCross

    class Banded(SmaCross):
        band = nbb.Param(0.0, low=0.0, high=0.1)

    sweep = nbb.sweep(Banded, nbb.load_sample("daily"),
                      grid={"fast": [5, 10], "slow": [20, 40], "band": [0.0, 0.01]}, progress=False)
    path = sweep.report(tmp_path / "three.html")
    with opened_offline(file_browser, path) as (page, seen):
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2")
        page.wait_for_selector("#figure-sweep .parcoords-line-layers canvas, #figure-sweep canvas",
                               state="attached")
        time.sleep(0.5)
        # Plotly says this where WebGL fails: also when the page's policy forbids
        # the code regl compiles at run time ('unsafe-eval').
        assert "WebGL is not supported" not in page.locator("#figure-sweep").inner_text()
        assert page.locator("#figure-sweep .y-axis").count() == 4  # fast, slow, band, sharpe
    assert_nothing_left_the_page(seen, path)
