"""The package's foundation: layering, the README's commands, the demo."""

from __future__ import annotations

import ast
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


def module_imports(root: Path) -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports, at the top or in a
    function (what ``if TYPE_CHECKING:`` imports is for the type checker only)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(node) for block in ast.walk(tree)
                       if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                       for statement in block.body for node in ast.walk(statement)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # ``from package import module`` imports the module, not all of the package
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in names else base for a in node.names)
        edges = set()
        for imported in found:
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                edges.add(imported)
        graph[name] = edges
    return graph


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for other in graph[module]:
            if other not in order:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], order[other])
        if low[module] == order[module]:
            group = []
            while True:
                other = stack.pop()
                group.append(other)
                if other == module:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for module in graph:
        if module not in order:
            visit(module)
    return circles


def test_no_module_of_the_package_imports_itself_in_a_circle():
    graph = module_imports(ROOT / "nbbacktest")
    assert "nbbacktest.parallel.sweep" in graph["nbbacktest.parallel.launch"]  # the walk sees imports
    assert import_circles(graph) == []


def test_the_circle_check_finds_a_circle(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from pkg import b\n")
    (package / "b.py").write_text("from pkg.a import f\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    assert import_circles(module_imports(package)) == [["pkg.a", "pkg.b"]]


def test_no_module_is_over_600_lines():
    long = {str(path.relative_to(ROOT)): n for path in (ROOT / "nbbacktest").rglob("*.py")
            if (n := len(path.read_text().splitlines())) > 600}
    assert long == {}


WRONG_TYPES = """
import nbbacktest as nbb
from nbbacktest.engine.examples import SmaCross
from nbbacktest.parallel import sweep

data = nbb.load_sample("daily")
nbb.backtest(SmaCross(), data, cash="10000")
sweep(SmaCross, data, {"fast": [5, 10]}, metric=3)
"""


def test_mypy_catches_a_wrong_argument_type_on_the_public_api(tmp_path):
    script = tmp_path / "user_code.py"
    script.write_text(WRONG_TYPES)
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(ROOT / ".mypy_cache"), str(script)],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 1, out.stdout + out.stderr
    # backtest() is overloaded on the strategy's kind (Result or PortfolioResult): mypy
    # names the call and the argument types that match no variant
    assert 'No overload variant of "backtest" matches argument types' in out.stdout
    assert '"str"' in out.stdout.split("No overload variant", 1)[1].splitlines()[0]
    assert 'Argument "metric" to "sweep" has incompatible type "int"; expected "str"' in out.stdout


def test_each_module_of_the_engine_and_parallel_layers_has_a_test_file():
    modules = [path.stem for layer in ("engine", "parallel") for path in (ROOT / "nbbacktest" / layer).glob("*.py")
               if path.stem != "__init__"]
    assert "sweep" in modules and "metrics" in modules
    untested = sorted(m for m in modules if not (ROOT / "tests" / f"test_{m}.py").exists())
    assert untested == []
