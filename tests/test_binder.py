"""Binder: the files in binder/ alone make an environment where every notebook runs, within Binder's limits.

A fresh virtualenv gets ``binder/requirements.txt``, then ``binder/postBuild`` runs
from a copy of the repository's root, as repo2docker runs it. Every notebook then
executes in that environment (``jupyter nbconvert --execute``), each in under a
minute and under 2 GB of memory for the kernel and the cluster it starts (Binder's
size), measured as the proportional set size of the whole process tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BINDER = ROOT / "binder"
NOTEBOOKS = sorted(path.stem for path in (ROOT / "notebooks").glob("*.ipynb"))
NOTEBOOK_SECONDS = 60
BINDER_MEMORY = 2 * 10**9
# Building the environment (the first test's setup) installs from the package index.
pytestmark = pytest.mark.timeout(900)
# Not part of what repo2docker copies in a fresh clone.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".pytest_cache",
    ".ipynb_checkpoints", "out",
)


def test_post_build_is_executable_and_stops_at_the_first_error():
    script = BINDER / "postBuild"
    assert os.access(script, os.X_OK), "repo2docker runs postBuild as ./binder/postBuild"
    lines = [line.strip() for line in script.read_text().splitlines()]
    assert lines[0].startswith("#!/bin/bash")
    commands = [line for line in lines[1:] if line and not line.startswith("#")]
    assert commands[0].startswith("set -e"), "without set -e a failing install goes unnoticed"
    assert any("pip install" in line and "." in line.split("pip install", 1)[1] for line in commands)


def test_requirements_bring_jupyterlab_and_the_renderers():
    names = {
        line.split("#")[0].strip().split(">")[0].split("=")[0].split("[")[0].strip().lower()
        for line in (BINDER / "requirements.txt").read_text().splitlines()
    } - {""}
    # jupyterlab opens the notebooks; ipywidgets brings the widget renderer, plotly its own
    assert {"jupyterlab", "ipykernel", "ipywidgets", "plotly", "ipyparallel"} <= names


@pytest.fixture(scope="module")
def binder_env(tmp_path_factory):
    """A virtualenv built from binder/ only, and a copy of the repository it was built from."""
    base = tmp_path_factory.mktemp("binder")
    repo = base / "repo"
    shutil.copytree(ROOT, repo, ignore=NOT_IN_A_CLONE)
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        JUPYTER_PREFER_ENV_PATH="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    for command in (
        ["python", "-m", "pip", "install", "-q", "-r", "binder/requirements.txt"],
        ["./binder/postBuild"],
    ):
        out = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{' '.join(command)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return venv, repo, env


def test_binder_env_has_the_package_the_kernel_and_the_lab_extensions(binder_env):
    venv, repo, env = binder_env
    where = subprocess.run(
        ["python", "-c", "import nbbacktest; print(nbbacktest.__file__)"],
        cwd=repo.parent, env=env, capture_output=True, text=True, timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    specs = subprocess.run(["jupyter", "kernelspec", "list", "--json"], env=env,
                           capture_output=True, text=True, timeout=60)
    python3 = json.loads(specs.stdout)["kernelspecs"]["python3"]
    assert Path(python3["resource_dir"]).is_relative_to(venv), python3
    extensions = subprocess.run(["jupyter", "labextension", "list"], env=env,
                                capture_output=True, text=True, timeout=120)
    listed = extensions.stdout + extensions.stderr
    assert "@jupyter-widgets/jupyterlab-manager" in listed and "jupyterlab-plotly" in listed, listed


class PeakMemory:
    """Samples the proportional set size of a process and its descendants in a thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for process in processes:
                try:
                    total += process.memory_full_info().pss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.peak


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_the_binder_env_within_binder_limits(binder_env, name, tmp_path):
    venv, repo, env = binder_env
    started = time.monotonic()
    process = subprocess.Popen(
        ["jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--ExecutePreprocessor.timeout=120", "--ExecutePreprocessor.kernel_name=python3",
         "--output-dir", str(tmp_path), f"{name}.ipynb"],
        cwd=repo / "notebooks", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    memory = PeakMemory(process.pid)
    try:
        output, _ = process.communicate(timeout=180)
    finally:
        process.kill()
        peak = memory.stop()
    seconds = time.monotonic() - started
    assert process.returncode == 0, output[-5000:]
    print(f"{name}: {seconds:.1f} s, peak {peak / 1e6:.0f} MB")
    assert seconds < NOTEBOOK_SECONDS, f"{name} took {seconds:.1f} s"
    assert 0 < peak < BINDER_MEMORY, f"{name} peaked at {peak / 1e6:.0f} MB"
    executed = json.loads((tmp_path / f"{name}.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
