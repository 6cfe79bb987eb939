"""The package's foundation: layering, the README's commands, the demo."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_imports_no_ui_or_cluster_library():
    code = (
        "import sys, nbbacktest, nbbacktest.engine\n"
        "heavy = {'IPython', 'ipyparallel', 'ipywidgets', 'plotly', 'zmq'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_lower_layers_never_import_higher_ones():
    layers = {"engine": 0, "parallel": 1, "display": 2, "magics": 3}
    pattern = re.compile(r"^\s*(?:from|import)\s+nbbacktest\.(\w+)", re.M)
    for path in (ROOT / "nbbacktest").rglob("*.py"):
        rel = path.relative_to(ROOT / "nbbacktest")
        own = rel.parts[0].removesuffix(".py")
        if own not in layers:
            continue
        for imported in pattern.findall(path.read_text()):
            if imported in layers:
                assert layers[imported] <= layers[own], f"{rel} imports the higher layer {imported}"


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in ci.splitlines()


def test_demo_prints_the_stats():
    out = subprocess.run(
        [sys.executable, "-m", "nbbacktest", "demo"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "sharpe" in out.stdout and "SmaCross(fast=10, slow=30)" in out.stdout


def test_py_typed_ships():
    assert (ROOT / "nbbacktest" / "py.typed").exists()


def test_the_namespace_offered_is_exactly_all():
    import nbbacktest as nbb

    assert dir(nbb) == sorted(nbb.__all__)
    assert not {"Any", "annotations", "importlib"} & set(dir(nbb))
    for name in nbb.__all__:  # every name offered can be had
        assert getattr(nbb, name) is not None
