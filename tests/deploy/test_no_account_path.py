"""README's paths without Docker or an AWS account, run as a user runs them.

``make airflow`` until Ctrl-C; ``make aws-bootstrap`` against a moto *server* started with
the compose file's moto environment (moto stands in for AWS: the only thing mocked).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from scripts.airflow_stack import Postgres, descendants, free_port
from tests.conftest import ROOT


def wait_for_line(process: subprocess.Popen, text: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        seen.append(line.rstrip())
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not printed in {timeout:.0f} s:\n" + "\n".join(seen[-30:]))


def stack_processes(make: subprocess.Popen, home: Path) -> dict[psutil.Process, str]:
    """What ``make airflow`` started and is alive, with each command line: its process tree,
    and PostgreSQL (daemonised by pg_ctl, so found by its data folder)."""
    tree = {process.pid for process in descendants(make.pid)}
    return {
        process: " ".join(process.info["cmdline"])
        for process in psutil.process_iter(["cmdline"])
        if process.info["cmdline"]
        and (process.pid in tree or str(home) in " ".join(process.info["cmdline"]))
        and alive(process)
    }


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_make_airflow_serves_the_ui_and_ctrl_c_stops_everything(tmp_path):
    home = Path(tempfile.mkdtemp(prefix="fruits-make-airflow-"))
    home.chmod(0o755)  # PostgreSQL runs as postgres: it must reach its data folder
    port = free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "OUT": str(tmp_path / "out")}
    started: dict[psutil.Process, str] = {}
    with subprocess.Popen(
        ["make", "--no-print-directory", "airflow", f"PORT={port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as make:
        try:
            printed = wait_for_line(make, "Airflow is up", 300)
            assert f"http://localhost:{port}" in printed[-1] and "login admin / " in printed[-1]
            started = stack_processes(make, home)
            for service in ("api_server", "scheduler", "dag-processor", "triggerer", "postgres"):
                assert any(service in command for command in started.values()), started
            os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
            rest = make.communicate(timeout=120)[0]
        finally:
            started = started or stack_processes(make, home)
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGINT)
                try:
                    make.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(make.pid, signal.SIGKILL)
            time.sleep(1)
            left = [p for p in started if alive(p)]
            stale = [path.name for path in home.rglob("*.pid")]
            for process in left:
                process.kill()
            if (home / "postgres" / "postmaster.pid").exists():
                Postgres(home / "postgres", 0).stop()
            shutil.rmtree(home, ignore_errors=True)
    assert "stopped: no process left running" in rest, rest[-2000:]
    assert left == [] and stale == []


@pytest.fixture
def moto_server_as_composed():
    """moto's server on a free loopback port, with the environment compose gives it.

    (The ``local-emr`` profile's service is moto plus the step runner; its AWS side is this.)
    """
    spec = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    moto_env = {k: str(v) for k, v in spec["services"]["local-emr"]["environment"].items()}
    assert moto_env["MOTO_IAM_LOAD_MANAGED_POLICIES"] == "true"
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **moto_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_make_aws_bootstrap_works_against_the_composed_moto(moto_server_as_composed):
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": moto_server_as_composed,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    for attempt in ("first", "again"):
        done = subprocess.run(
            ["make", "--no-print-directory", "aws-bootstrap", "BUCKET=fruits-lake-eu"],
            check=False,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (attempt, done.stdout[-3000:], done.stderr[-3000:])
    assert "FRUITS_BUCKET=fruits-lake-eu" in done.stdout, done.stdout
