"""docker-compose.yaml and the Dockerfile, checked statically (no Docker engine runs here).

The compose file is interpolated the way Compose does (``${VAR:-default}``, nested, ``$$``)
with an empty host environment, then parsed by ``compose-spec`` (a spec-compliant Compose
parser from PyPI); the rest checks what a parser cannot: healthchecks, dependencies, mounts
that exist in this checkout, the EU region, and pins equal to requirements.lock.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from fruits_pipeline.config import LOCK_FILE, PROJECT_ROOT, Settings
from scripts.airflow_stack import StackError, interpolate

COMPOSE = PROJECT_ROOT / "docker-compose.yaml"
DOCKERFILE = PROJECT_ROOT / "Dockerfile"
CONTAINER_ROOT = "/opt/airflow"
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
}
SECRETS = {"AIRFLOW_FERNET_KEY": "k" * 44, "AIRFLOW_JWT_SECRET": "s" * 32}
"""What ``make compose-env`` writes to ``.env``; the compose file refuses to start without."""


def load(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    return yaml.safe_load(interpolate(COMPOSE.read_text(), {**SECRETS, **(environ or {})}))


def lock_pins() -> dict[str, str]:
    lines = (PROJECT_ROOT / LOCK_FILE).read_text().splitlines()
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, _, version in (line.partition("==") for line in lines if "==" in line)
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load({"HOME": "/home/someone"})  # a host with nothing else set


def test_interpolation_follows_compose_rules():
    text = "${A:-x} ${B-y} ${C:-s3://${D:-b}/l/} $${E} ${F}"
    assert interpolate(text, {"B": ""}) == "x  s3://b/l/ ${E} "
    assert interpolate(text, {"A": "1", "D": "lake", "F": "f"}) == "1 y s3://lake/l/ ${E} f"
    assert interpolate("${G:?say so}", {"G": "g"}) == "g"
    with pytest.raises(StackError, match="G must be set: say so"):
        interpolate("${G:?say so}", {"G": ""})


def test_no_secret_has_a_default_and_compose_refuses_to_start_without_them():
    # A default secret in this file is public: anyone could forge API tokens with it.
    raw = yaml.safe_load(COMPOSE.read_text())["x-airflow-common"]["environment"]
    secret = re.compile(r"SECRET|FERNET|PASSWORD|TOKEN", re.IGNORECASE)
    for key, value in raw.items():
        if secret.search(key) and value is not None:
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), (key, value)
    for name in SECRETS:
        with pytest.raises(StackError, match=name):
            interpolate(COMPOSE.read_text(), {k: v for k, v in SECRETS.items() if k != name})
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert all(name in makefile for name in SECRETS)  # make compose-env generates both


def test_published_ports_listen_on_loopback_unless_told(compose):
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)
    told = load({"AIRFLOW_BIND": "0.0.0.0"})["services"]["airflow-apiserver"]["ports"]
    assert told == ["0.0.0.0:8080:8080"]


def test_local_emr_profile_runs_the_stand_in_from_this_checkout(compose):
    service = compose["services"]["local-emr"]
    assert service["profiles"] == ["local-emr"]
    assert service["build"] == {"context": ".", "target": "local-emr"}
    assert re.search(r"^FROM \S+ AS local-emr$", DOCKERFILE.read_text(), re.MULTILINE)
    last_stage = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), re.MULTILINE)[-1]
    assert last_stage.startswith("apache/airflow:")  # the Airflow services' default target
    command = service["command"]
    assert command[:3] == ["python", "-m", "local_emr"] and "--container" in command
    port = command[command.index("--port") + 1]
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert port in " ".join(service["healthcheck"]["test"])
    env = service["environment"]
    assert env["MOTO_IAM_LOAD_MANAGED_POLICIES"] == "true"
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == "testing"
    mounts = dict(reversed(volume.split(":")[:2]) for volume in service["volumes"])
    stage = DOCKERFILE.read_text().split("AS local-emr")[1].split("FROM ")[0]
    python_path = re.search(r"PYTHONPATH=(\S+)", stage).group(1).split(":")

    def on_host(container_path: str) -> Path | None:
        for target, source in mounts.items():
            if container_path.startswith(f"{target}/"):
                return PROJECT_ROOT / source / container_path.removeprefix(f"{target}/")
        return None

    # The stand-in, its rules (fruits_pipeline) and the jobs' contract are importable.
    for module in ("local_emr/__main__.py", "fruits_pipeline/config.py", "fruits_jobs/contract.py"):
        found = [on_host(f"{entry}/{module}") for entry in python_path]
        assert any(path and path.is_file() for path in found), module
    assert "local-emr%3A" + port in COMPOSE.read_text()  # the connection the header gives


def test_file_is_a_valid_compose_specification(compose):
    spec = PyCompose.from_json(json.dumps(compose)).to_spec()
    assert set(spec.services) == {*AIRFLOW_SERVICES, "postgres", "airflow-init", "local-emr"}


def test_broken_files_are_refused_by_the_same_check(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["postgres"]["healthcheck"]["interval"] = "10 parsecs"
    with pytest.raises(ValueError, match="duration"):
        PyCompose.from_json(json.dumps(broken))


def test_every_service_has_an_image_and_a_healthcheck_or_runs_once(compose):
    services = compose["services"]
    run_once = {
        name
        for service in services.values()
        for name, dependency in service.get("depends_on", {}).items()
        if dependency["condition"] == "service_completed_successfully"
    }
    assert run_once == {"airflow-init"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        assert name in run_once or service["healthcheck"]["test"], name


def test_airflow_waits_for_a_healthy_database_and_a_finished_init(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    for name in AIRFLOW_SERVICES:
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "airflow-init": {"condition": "service_completed_successfully"},
        }, name
        assert services[name]["build"] == "."  # our Dockerfile, with the pinned provider


def test_bind_mounts_exist_and_put_the_code_where_the_plugins_look(compose):
    mounts = {}
    for volume in compose["services"]["airflow-scheduler"]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            assert (PROJECT_ROOT / source).exists(), f"mount source {source} missing"
            mounts[target] = PROJECT_ROOT / source
    env = compose["services"]["airflow-scheduler"]["environment"]
    python_path = env["PYTHONPATH"].split(":")

    def host(container_path: str) -> Path:
        for target, source in mounts.items():
            if container_path.startswith(target):
                return source / container_path.removeprefix(target).lstrip("/")
        raise AssertionError(f"{container_path} is not mounted")

    # The plugins find the jobs, the lock and the contract relative to their own folder.
    assert host(f"{CONTAINER_ROOT}/plugins/fruits_pipeline/config.py").is_file()
    assert Path(f"{CONTAINER_ROOT}/plugins/fruits_pipeline/config.py").parents[2] == Path(
        CONTAINER_ROOT
    )
    assert host(f"{CONTAINER_ROOT}/{LOCK_FILE}").is_file()
    assert any(host(f"{p}/fruits_jobs/contract.py").is_file() for p in python_path)
    assert host(f"{CONTAINER_ROOT}/dags/fruits_emr.py").is_file()


def test_the_stack_stays_in_the_eu_and_defers_its_sensors(compose):
    env = compose["x-airflow-common"]["environment"]
    assert env["AWS_DEFAULT_REGION"] == env["AIRFLOW_VAR_FRUITS_REGION"] == "eu-west-1"
    assert "region_name=eu-west-1" in env["AIRFLOW_CONN_AWS_DEFAULT"]
    assert env["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] == "true"
    assert compose["services"]["airflow-triggerer"]["command"] == "triggerer"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] is None  # passed on from the host, never written here


def test_pipeline_settings_are_real_settings_and_accepted():
    names = {field.name.upper() for field in dataclasses.fields(Settings)}
    for environ in ({}, {"FRUITS_BUCKET": "lake-x"}):
        env = load(environ)["x-airflow-common"]["environment"]
        given = {k: str(v) for k, v in env.items() if k.startswith("AIRFLOW_VAR_FRUITS_")}
        assert {k.removeprefix("AIRFLOW_VAR_FRUITS_") for k in given} <= names
        settings = Settings.from_env(given)
        assert settings.region == "eu-west-1"
        assert settings.image_source.startswith(f"s3://{settings.bucket}/")
    assert settings.bucket == "lake-x"


def test_dockerfile_pins_equal_the_lock():
    text = DOCKERFILE.read_text()
    pins = lock_pins()
    (version,) = re.findall(r"^ARG AIRFLOW_VERSION=(\S+)$", text, re.MULTILINE)
    assert version == pins["apache-airflow"]
    assert re.search(r"^FROM apache/airflow:\$\{AIRFLOW_VERSION\}-python3\.11$", text, re.M)
    required = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"$]+)"', text))
    assert required, "no pinned requirement in the Dockerfile"
    for name, pinned in required.items():
        assert pinned == pins[name.lower()], name
    assert "--constraint /tmp/requirements.lock" in text
    assert (PROJECT_ROOT / ".dockerignore").read_text().splitlines()[-1] == "!requirements.lock"
