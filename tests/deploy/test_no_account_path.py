"""README's paths without Docker or an AWS account, run as a user runs them.

``make airflow`` until Ctrl-C; ``make aws-bootstrap`` against a moto *server* started with
the compose file's moto environment (moto stands in for AWS: the only thing mocked).
"""

from __future__ import annotations

import contextlib
import os
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

from scripts.airflow_stack import free_port
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


def test_make_airflow_serves_the_ui_and_ctrl_c_stops_everything(tmp_path):
    home = Path(tempfile.mkdtemp(prefix="fruits-make-airflow-"))
    home.chmod(0o755)  # PostgreSQL runs as postgres: it must reach its data folder
    port = free_port()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "OUT": str(tmp_path / "out")}
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
            started = [
                p
                for p in psutil.process_iter(["cmdline"])
                if str(home) in " ".join(p.info["cmdline"] or [])
            ]
            assert len(started) >= 5  # postgres + api-server, scheduler, dag-processor, triggerer
            os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
            rest = make.communicate(timeout=120)[0]
        finally:
            if make.poll() is None:
                os.killpg(make.pid, signal.SIGKILL)
    assert "stopped: no process left running" in rest, rest[-2000:]
    time.sleep(1)
    left = [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if str(home) in " ".join(p.info["cmdline"] or [])
    ]
    assert left == []
    assert not list(home.rglob("*.pid")), list(home.rglob("*.pid"))
    subprocess.run(["rm", "-rf", str(home)], check=False)


@pytest.fixture
def moto_server_as_composed():
    """moto's server on a free loopback port, with the compose file's moto environment."""
    spec = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    moto_env = {k: str(v) for k, v in spec["services"]["moto"]["environment"].items()}
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
