"""The demo notebooks: all there, committed clean, collected by pytest, sanitized sensibly.

The notebooks themselves run cell by cell in a real kernel through nbval (see
``[tool.pytest.ini_options]`` in pyproject.toml): each cell is a test item, and the
outputs of cells marked ``# NBVAL_CHECK_OUTPUT`` are compared with the outputs
committed in the notebook. These tests check what must hold before a kernel starts.

To refresh the committed outputs after changing a notebook, run
``python tests/test_notebooks.py refresh [NAME ...]``: it executes the notebooks and
keeps only the outputs of the checked cells (``--allow-errors`` goes on past a failing
cell).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
EXPECTED = [
    "01-quickstart",
    "02-parameter-sweeps",
    "03-magics",
    "04-sweep-widget",
    "05-universe",
    "06-survival",
    "07-scale-out",
    "08-portfolio",
    "09-is-it-real",
]
# A checked output is a few lines of text; anything bigger is a chart or a table
# that belongs to the reader's run, not to the repository.
MAX_CHECKED_OUTPUT = 2_000
STARTS_A_CLUSTER = re.compile(r"nbb\.Cluster\(|%cluster start|ipcluster start|engines=\d")
STOPS_A_CLUSTER = re.compile(r"\.stop\(\)|%cluster stop|ipcluster stop")


def present() -> list[str]:
    return sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))


def load(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def source(cell: dict) -> str:
    text = cell["source"]
    return text if isinstance(text, str) else "".join(text)


def test_every_demo_notebook_is_there():
    assert present() == EXPECTED


@pytest.mark.parametrize("name", present())
def test_committed_outputs_are_only_the_checked_ones(name):
    notebook = load(name)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    assert "widgets" not in notebook["metadata"], "widget state is saved: clear it"
    checked = 0
    for cell in code_cells(notebook):
        text = source(cell)
        if CHECK_MARK in text:
            checked += 1
            assert cell["outputs"], f"{name}: a checked cell has no reference output:\n{text}"
            assert cell["execution_count"], f"{name}: nbval skips a checked cell never run"
            size = len(json.dumps(cell["outputs"]))
            assert size <= MAX_CHECKED_OUTPUT, f"{name}: a checked output is {size} characters"
            for output in cell["outputs"]:
                assert output["output_type"] != "error", f"{name}: the reference is an error"
        else:
            assert cell["outputs"] == [], f"{name}: an unchecked cell keeps its output:\n{text}"
            assert cell["execution_count"] is None
    assert checked >= 1, f"{name} checks no output at all"


@pytest.mark.parametrize("name", present())
def test_notebooks_explain_in_prose_and_stop_their_clusters(name):
    notebook = load(name)
    first = notebook["cells"][0]
    assert first["cell_type"] == "markdown" and source(first).startswith("# ")
    prose = [c for c in notebook["cells"] if c["cell_type"] == "markdown"]
    assert len(prose) * 2 >= len(code_cells(notebook)), f"{name}: too little prose"
    cells = [source(c) for c in code_cells(notebook)]
    starts = [i for i, text in enumerate(cells) if STARTS_A_CLUSTER.search(text)]
    if starts:
        assert STOPS_A_CLUSTER.search(cells[-1]), f"{name}: the last cell must stop the cluster"


def test_pytest_collects_every_cell_of_a_notebook():
    notebook = NOTEBOOKS / "01-quickstart.ipynb"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         str(notebook.relative_to(ROOT))],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    collected = [line for line in out.stdout.splitlines() if "01-quickstart.ipynb::" in line]
    assert len(collected) == len(code_cells(load("01-quickstart")))


def test_notebook_kernels_run_this_environments_python(tmp_path):
    """nbval's kernel must import the package from this virtualenv, not another Python."""
    import nbformat

    probe = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(
        f"{CHECK_MARK}\nimport sys, nbbacktest\nprint(sys.prefix == {sys.prefix!r},"
        f" nbbacktest.__file__.startswith({str(ROOT)!r}))"
    )
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="True True\n")]
    probe.cells = [cell]
    path = tmp_path / "probe.ipynb"
    nbformat.write(probe, path)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout[-3000:] + out.stderr


def test_sanitizer_hides_timings_addresses_and_paths():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())
    assert len(patterns) >= 5

    def sanitize(text: str) -> str:
        for regex, replacement in patterns:
            text = re.sub(regex, replacement, text)
        return text

    first = "179/179 runs in 3.2 s, 55.6 runs/s, elapsed 0:03, <Cluster at 0x7f3a9c> /tmp/tmpab12/x"
    second = "179/179 runs in 12.75 s, 14 runs/s, elapsed 0:13, <Cluster at 0x55d0e1> /tmp/tmpzz9/x"
    assert sanitize(first) == sanitize(second)
    # Results are not timings: they must still differ.
    assert sanitize("sharpe 0.54, trades 43") != sanitize("sharpe 0.61, trades 43")


# ---------------------------------------------------------------------- the README
def test_readme_shows_screenshots_that_exist():
    images = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert len(images) >= 2
    for image in images:
        path = ROOT / image
        assert path.suffix == ".png" and path.is_file(), image
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{image} is not a PNG"


def test_readme_links_every_notebook():
    readme = (ROOT / "README.md").read_text()
    for name in present():
        assert f"(notebooks/{name}.ipynb)" in readme, name


def test_readme_example_runs(cluster):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Ten lines", 1)[1]
    example = re.search(r"```python\n(.+?)\n```", section, re.S).group(1)
    # A module of its own, as a notebook's __main__ is: its classes travel by value.
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(example, "README.md", "exec"), namespace)  # the session's cluster is reused
    assert namespace["result"].stats["trades"] == 43
    sweep = namespace["sweep"]
    assert len(sweep) == 179 and sweep.status == "complete" and sweep.failed == 0
    assert repr(sweep.best) == "SmaCross(fast=5, slow=20)"
    assert set(sweep.results["engine"].dropna()) == set(cluster.ids)


# ---------------------------------------------------------------------- refresh tool
def refresh(names: list[str], allow_errors: bool = False) -> None:
    """Execute notebooks and keep only the outputs of the checked cells."""
    import nbformat
    from nbclient import NotebookClient

    for name in names or present():
        path = NOTEBOOKS / f"{name}.ipynb"
        notebook = nbformat.read(path, as_version=4)
        NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=allow_errors,
                       resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
        for cell in notebook.cells:
            if cell.cell_type != "code":
                continue
            # nbval compares only cells that were run (an execution count is kept).
            if CHECK_MARK not in cell.source:
                cell.outputs = []
                cell.execution_count = None
            cell.metadata.pop("execution", None)
        notebook.metadata.pop("widgets", None)
        nbformat.write(notebook, path)
        print(f"refreshed {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:2] != ["refresh"]:
        sys.exit("usage: python tests/test_notebooks.py refresh [--allow-errors] [NAME ...]")
    arguments = sys.argv[2:]
    refresh([a for a in arguments if a != "--allow-errors"], "--allow-errors" in arguments)
