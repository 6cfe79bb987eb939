"""User code travels with its file name and source: engine tracebacks read like local ones."""

from __future__ import annotations

import importlib.util
import linecache
import pickle
import sys
import textwrap

import pytest
from IPython.testing import globalipapp

import nbbacktest as nbb
from nbbacktest.parallel import pickling

pytestmark = pytest.mark.timeout(120)

FAILING = textwrap.dedent("""
    import nbbacktest as nbb

    class Failing(nbb.Strategy):
        fast = nbb.Param(10, low=2, high=100)

        def signals(self, data):
            close = data["Close"]
            if self.fast == 15:
                raise ValueError(f"unlucky fast={self.fast}")  # the line to see
            return (close > close.rolling(self.fast).mean()).astype(float)
""")


def user_frames(traceback: str, filename: str) -> list[str]:
    """The traceback's lines for ``filename``'s frames, each with the source line after it."""
    lines = traceback.splitlines()
    return [f"{line}\n{lines[i + 1]}" for i, line in enumerate(lines)
            if line.strip().startswith(f'File "{filename}"')]


def tracebacks(strategy: type, data, **options) -> list[str]:
    sweep = nbb.sweep(strategy, data, {"fast": [10, 15]}, progress=False, **options)
    table = sweep.results
    assert table["status"].tolist() == ["done", "failed"]
    return table["traceback"].dropna().tolist()


def test_code_keeps_its_file_name_and_ships_its_lines():
    name = "<nbbacktest-test-cell-1>"
    source = "def shout(x):\n    return x.upper() + '!'\n"
    namespace: dict = {}
    exec(compile(source, name, "exec"), namespace)
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    payload = pickling.dumps(namespace["shout"])
    del linecache.cache[name]

    shout = pickle.loads(payload)
    assert shout("a") == "A!"
    assert shout.__code__.co_filename == name
    assert linecache.getline(name, 2) == "    return x.upper() + '!'\n"


def test_lines_of_one_file_travel_once():
    name = "<nbbacktest-test-cell-2>"
    source = "def a():\n    return 1\n\ndef b():\n    return 2\n" + "# padding\n" * 200
    namespace: dict = {}
    exec(compile(source, name, "exec"), namespace)
    linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    one = len(pickling.dumps(namespace["a"]))
    both = len(pickling.dumps((namespace["a"], namespace["b"])))
    assert both - one < len(source) / 2


@pytest.mark.cluster
def test_engine_traceback_of_a_strategy_from_a_file_shows_its_source(cluster, daily, tmp_path):
    path = tmp_path / "user_strategies.py"
    path.write_text(FAILING)
    spec = importlib.util.spec_from_file_location("user_strategies", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["user_strategies"] = module
    try:
        spec.loader.exec_module(module)
        local = tracebacks(module.Failing, daily)
        remote = tracebacks(module.Failing, daily, cluster=cluster)
    finally:
        del sys.modules["user_strategies"]
    frames = user_frames(remote[0], str(path))
    assert frames and "# the line to see" in frames[-1]
    assert frames == user_frames(local[0], str(path))


@pytest.mark.cluster
def test_engine_traceback_of_a_strategy_from_a_notebook_cell_shows_the_cell(cluster, daily):
    globalipapp.start_ipython()  # once per process; then get_ipython is the shell's own
    shell = globalipapp.get_ipython()
    shell.run_cell(FAILING, store_history=True)
    strategy = shell.user_ns.pop("Failing")
    filename = strategy.signals.__code__.co_filename
    assert filename != "<dynamic-code>"
    local = tracebacks(strategy, daily)
    remote = tracebacks(strategy, daily, cluster=cluster)
    frames = user_frames(remote[0], filename)
    assert frames and "# the line to see" in frames[-1]
    assert frames == user_frames(local[0], filename)
