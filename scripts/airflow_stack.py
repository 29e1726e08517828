"""The Airflow of ``docker-compose.yaml`` without Docker: the same processes, on this machine.

PostgreSQL (Debian's ``postgresql``; run as the ``postgres`` user when we are root, since it
refuses root) holds the metadata; ``airflow db migrate`` once, then ``api-server``,
``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer`` as separate processes, each
with the compose file's common environment (``x-airflow-common.environment``) and only what
names a container path replaced by this machine's: the database URL, the execution API URL,
``PYTHONPATH``, and ``AIRFLOW_VAR_FRUITS_*`` settings the host did not set (their compose
defaults name the container's lake, so :class:`fruits_pipeline.config.Settings` picks its own).

``make airflow`` runs it in the foreground (UI on http://localhost:8080, login printed; Ctrl-C
stops every process it started). In Python, :class:`AirflowStack` is a context manager: it
starts everything, waits until every part is healthy, and on exit stops every process it
started, PostgreSQL included::

    with AirflowStack(home, port=free_port()) as stack:
        stack.api("POST", "/api/v2/dags/fruits_local/dagRuns", json={"logical_date": None})
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
"""The long-running services of the compose file, started in this order."""
HEALTHY = {"metadatabase", "scheduler", "triggerer", "dag_processor"}
"""The parts ``/api/v2/monitor/health`` must report healthy before the stack is ready."""
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^${}]*))?\}")


class StackError(RuntimeError):
    """A component did not start; the message names it and ends with its log's tail."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Compose's interpolation of ``text`` against the host's ``environ``.

    ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``, nesting, and
    ``${VAR:?message}``/``${VAR?message}``, which refuse an unset variable.
    """

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        unset = (not environ.get(name)) if operator and operator[0] == ":" else name not in environ
        if operator in (":-", "-") and unset:
            return argument
        if operator in (":?", "?") and unset:
            raise StackError(f"{name} must be set: {argument}")
        return environ.get(name, "")

    text = text.replace("$$", "\0")
    while (replaced := VARIABLE.sub(value, text)) != text:  # innermost first: nesting works
        text = replaced
    return text.replace("\0", "$")


def compose_environment(
    host: Mapping[str, str], *, database: str, api_url: str, compose_file: Path = COMPOSE_FILE
) -> dict[str, str]:
    """The compose file's common Airflow environment, resolved for a process on this host.

    Keys with no value in the compose file pass the host's value on (as Compose does) and are
    left out when the host has none.
    """
    spec = yaml.safe_load(compose_file.read_text())
    common: dict[str, Any] = spec["x-airflow-common"]["environment"]
    env: dict[str, str] = {}
    for key, raw in common.items():
        if raw is None:
            if host.get(key):
                env[key] = host[key]
            continue
        setting = re.fullmatch(r"\$\{(FRUITS_\w+):-.*\}", str(raw))
        if key.startswith("AIRFLOW_VAR_FRUITS_") and setting and not host.get(setting.group(1)):
            continue
        env[key] = interpolate(str(raw), host)
    env.update(
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=database,
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{api_url}/execution/",
        PYTHONPATH=os.pathsep.join(
            filter(None, [str(ROOT / "spark_jobs"), host.get("PYTHONPATH")])
        ),
    )
    return env


def postgres_bin(name: str) -> str:
    """Path of a PostgreSQL server program (Debian keeps them out of ``PATH``)."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    if shutil.which(name):
        return str(shutil.which(name))
    raise StackError(f"PostgreSQL's {name} not found: apt-get install postgresql (make setup)")


class Postgres:
    """A private PostgreSQL cluster in ``data`` on 127.0.0.1:``port``, database ``airflow``."""

    def __init__(self, data: Path, port: int) -> None:
        self.data = data
        self.port = port
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Airflow uses."""
        return f"postgresql+psycopg2://airflow:airflow@127.0.0.1:{self.port}/airflow"

    def _run(self, *command: str) -> None:
        subprocess.run([*self.as_user, *command], check=True, capture_output=True, cwd="/")

    def start(self) -> None:
        """``initdb`` on first use, then ``pg_ctl start``, then the ``airflow`` role and db."""
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self.data.mkdir(parents=True, exist_ok=True)
            if self.as_user:
                shutil.chown(self.data, "postgres", "postgres")
        reach = subprocess.run([*self.as_user, "test", "-w", str(self.data)], check=False, cwd="/")
        if reach.returncode != 0:
            raise StackError(
                f"PostgreSQL runs as user postgres, which cannot write {self.data}: "
                "let it through the folders above (chmod o+x) or use another AIRFLOW_HOME"
            )
        if fresh:
            self._run(postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust")
        self._run(
            postgres_bin("pg_ctl"),
            "start",
            "-w",
            "-D",
            str(self.data),
            "-l",
            str(self.data / "server.log"),
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}",
        )
        if fresh:
            psql = [postgres_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
            self._run(*psql, "-c", "CREATE ROLE airflow LOGIN PASSWORD 'airflow'")
            self._run(*psql, "-c", "CREATE DATABASE airflow OWNER airflow")

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (removes ``postmaster.pid``)."""
        if (self.data / "postmaster.pid").exists():
            self._run(postgres_bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data))


class AirflowStack:
    """PostgreSQL plus the four Airflow services, configured as ``docker-compose.yaml`` says.

    :param home: ``AIRFLOW_HOME``: config, logs, the PostgreSQL data and the login file.
    :param port: the api-server's port on 127.0.0.1 (UI and REST API).
    :param extra_env: more environment for every component (``FRUITS_*`` settings, ...).
    """

    def __init__(self, home: Path, *, port: int = 8080, extra_env: Mapping[str, str] = ()) -> None:
        self.home = home
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.postgres = Postgres(home / "postgres", free_port())
        host = {**os.environ, **dict(extra_env)}
        host.setdefault("AIRFLOW_JWT_SECRET", secrets.token_urlsafe(32))
        host.setdefault("AIRFLOW_FERNET_KEY", _fernet_key())
        self.env = {
            **host,
            **compose_environment(host, database=self.postgres.url, api_url=self.url),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None

    # --- life cycle ----------------------------------------------------------------------------
    def __enter__(self) -> AirflowStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def airflow(self, *args: str) -> list[str]:
        """An ``airflow`` command line of this interpreter's installation."""
        return [sys.executable, "-m", "airflow", *args]

    def start(self, timeout: float = 240) -> None:
        """Start everything and wait until the health endpoint reports every part healthy."""
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.postgres.start()
        subprocess.run(
            self.airflow("db", "migrate"), env=self.env, check=True, capture_output=True, cwd=ROOT
        )
        for component in COMPONENTS:
            self.start_component(component)
        self.wait_healthy(timeout)

    def start_component(self, component: str) -> None:
        """Start one service in its own process group, its output in ``logs/<component>.log``."""
        extra = (
            ["--port", str(self.port), "--host", "127.0.0.1"] if component == "api-server" else []
        )
        with open(self.home / "logs" / f"{component}.log", "ab") as out:
            self.processes[component] = subprocess.Popen(
                self.airflow(component, *extra),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - one libc call, resolved before fork
            )

    def kill_component(self, component: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send ``sig`` to a service's whole process group and reap it."""
        process = self.processes.pop(component)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def stop(self) -> None:
        """SIGTERM each service's process group (SIGKILL after 30 s), then stop PostgreSQL.

        Whatever the services had started and left behind (a task's spark-submit, its JVM and
        Python workers, in process groups of their own) is killed too.
        """
        spawned = [child for p in self.processes.values() for child in descendants(p.pid)]
        for component in reversed(list(self.processes)):
            self.kill_component(component, signal.SIGTERM)
        for child in spawned:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(spawned, timeout=10)
        self.postgres.stop()

    def wait_healthy(self, timeout: float) -> None:
        """Poll ``/api/v2/monitor/health`` until every part is healthy; a dead service fails."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            for component, process in self.processes.items():
                if process.poll() is not None:
                    raise StackError(
                        f"{component} exited {process.returncode}:\n{self.tail(component)}"
                    )
            try:
                status = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                status = {}
            if status and all(status.get(p, {}).get("status") == "healthy" for p in HEALTHY):
                return
            time.sleep(1)
        raise StackError(f"not healthy after {timeout:.0f} s: {status}\n{self.tail('scheduler')}")

    def tail(self, component: str, lines: int = 30) -> str:
        """The last lines of a service's log."""
        path = self.home / "logs" / f"{component}.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    # --- the REST API, as the UI calls it -------------------------------------------------------
    @property
    def login(self) -> tuple[str, str]:
        """The admin user and the password the api-server generated on first start."""
        passwords = json.loads((self.home / "passwords.json").read_text())
        return "admin", passwords["admin"]

    def token(self) -> str:
        """A JWT from ``POST /auth/token`` with the generated login (cached)."""
        if self._token is None:
            user, password = self.login
            response = httpx.post(
                f"{self.url}/auth/token", json={"username": user, "password": password}, timeout=30
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One authenticated REST call, e.g. ``api("GET", "/api/v2/dags")``."""
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def wait_for_dags(self, dag_ids: set[str], timeout: float = 180) -> dict[str, Any]:
        """Wait until the dag-processor has serialised ``dag_ids``; return ``GET /dags``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listing = self.api("GET", "/api/v2/dags").json()
            if dag_ids <= {dag["dag_id"] for dag in listing.get("dags", [])}:
                return listing
            time.sleep(2)
        raise StackError(
            f"DAGs {sorted(dag_ids)} not parsed in {timeout:.0f} s:\n{self.tail('dag-processor')}"
        )


_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM this service if the stack's process dies (Linux).

    Ctrl-C and SIGTERM go through :meth:`AirflowStack.stop`; this covers a SIGKILL of the
    stack itself, which would otherwise leave the services running on their own.
    """
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def descendants(pid: int) -> list[psutil.Process]:
    """Every process ``pid`` started, recursively (none when it is gone)."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def main(argv: list[str] | None = None) -> int:
    """``make airflow``: run the stack until Ctrl-C, then stop everything it started."""
    parser = argparse.ArgumentParser(prog="make airflow", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--home", type=Path, default=Path(os.environ.get("AIRFLOW_HOME", ROOT / "airflow_home"))
    )
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    started = time.monotonic()
    with AirflowStack(args.home.resolve(), port=args.port) as stack:
        user, password = stack.login
        log.info(
            "Airflow is up in %.0f s: %s  (login %s / %s)\nlogs: %s/logs/<component>.log; "
            "Ctrl-C stops everything",
            time.monotonic() - started,
            stack.url.replace("127.0.0.1", "localhost"),
            user,
            password,
            args.home,
        )
        try:
            while not stop["now"]:
                for component, process in stack.processes.items():
                    if process.poll() is not None:
                        raise StackError(f"{component} exited:\n{stack.tail(component)}")
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        log.info("stopping ...")
    log.info("stopped: no process left running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
