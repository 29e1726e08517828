"""Airflow fixtures: a migrated SQLite metadata DB, DAGs loaded under given settings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """``airflow db migrate`` once per test session, in the session's throwaway AIRFLOW_HOME."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )


@pytest.fixture
def load_dag(airflow_db: None, monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """Load ``dag_id`` from ``dags/`` with ``FRUITS_*`` settings from keyword arguments."""

    def load(dag_id: str, **settings: str):
        from airflow.dag_processing.dagbag import DagBag

        for name, value in settings.items():
            monkeypatch.setenv(f"FRUITS_{name.upper()}", str(value))
        bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
        assert not bag.import_errors, bag.import_errors
        return bag.get_dag(dag_id)

    return load


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake credentials so nothing can reach a real AWS account; moto answers instead."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", "aws://?region_name=eu-west-1")
    yield
