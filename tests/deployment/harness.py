"""A real Airflow 3 deployment for tests: api-server, scheduler, dag-processor and triggerer as separate
processes (LocalExecutor), a Postgres metadata database, and a REST client for the public API.

Laid out like docker-compose.yaml, without Docker: every server binds to 127.0.0.1 on a free port,
everything is written under temporary directories, and every process is stopped by the process id (and
process group) of what was started here.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

from tests.servers import VENV_BIN, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
TEST_DAGS = REPO / "tests" / "dags"
EXAMPLE_DAGS = REPO / "example_dags"
COMPONENTS = ("scheduler", "dag-processor", "triggerer")
BUNDLE = "sparktune_deployment"
TERMINAL = {"success", "failed", "skipped", "upstream_failed", "removed"}


# -- processes ------------------------------------------------------------------------------------


def start_group(
    cmd: list[str], env: dict[str, str], log: Path, user: str | None = None
) -> subprocess.Popen[bytes]:
    """A command in its own session (process group), so it and whatever it forks are stopped together."""
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            user=user,
        )


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 30, first: int = signal.SIGTERM) -> None:
    """``first`` (TERM) to the group we created, then KILL to whatever is left in it, by process group id."""
    pgid = process.pid  # start_new_session: the leader's pid is the group id
    try:
        os.killpg(pgid, first)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + timeout_s
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        os.killpg(pgid, signal.SIGKILL)  # members that outlived the grace period (tasks, JVMs)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout_s)


def group_members(pgid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def is_java(proc: psutil.Process) -> bool:
    try:
        return proc.name() == "java" or proc.exe().endswith("/java")
    except psutil.Error:
        return False


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- Postgres -------------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest Debian ``postgresql`` server binaries, if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def postgres_usable() -> bool:
    """Postgres runs here: its binaries are installed, and we are root (they run as the postgres user)."""
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return postgres_bin() is not None and os.geteuid() == 0


@dataclass
class Postgres:
    port: int
    work: Path
    process: subprocess.Popen[bytes]

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A throwaway Postgres cluster on 127.0.0.1: initdb as the postgres user, trust auth, no fsync."""
    import psycopg2

    bin_dir = postgres_bin()
    assert bin_dir is not None
    user = pwd.getpwnam("postgres")
    work = Path(tempfile.mkdtemp(prefix="sparktune-postgres-"))  # /tmp itself: postgres can reach it
    os.chown(work, user.pw_uid, user.pw_gid)
    data, log, port = work / "data", work / "postgres.log", free_port()
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            "airflow",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        user=user.pw_name,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=work,
    )
    if init.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    log.touch()
    os.chown(log, user.pw_uid, user.pw_gid)
    cmd = [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(work)]
    cmd += ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"]
    cmd += ["-c", "full_page_writes=off", "-c", "max_connections=200"]
    process = start_group(cmd, env, log, user=user.pw_name)
    server = Postgres(port, work, process)
    try:

        def ready() -> bool:
            try:
                psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname="postgres").close()
                return True
            except psycopg2.OperationalError:
                assert process.poll() is None, log.read_text()[-3000:]
                return False

        wait_until(ready, 60, "Postgres", log)
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="airflow", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE airflow")
        conn.close()
        yield server
    finally:
        stop_group(process, first=signal.SIGINT)  # SIGINT: Postgres' fast shutdown
        shutil.rmtree(work, ignore_errors=True)


# -- Airflow --------------------------------------------------------------------------------------


def dags_folder(target: Path, files: Iterable[Path]) -> Path:
    """A DAG folder of links to the deployment's DAG files only (parsing the whole suite's DAGs costs CPU)."""
    target.mkdir(parents=True, exist_ok=True)
    for path in files:
        (target / path.name).symlink_to(path)
    return target


def airflow_env(home: Path, db_url: str, api_port: int, dags: Path) -> dict[str, str]:
    """The environment of every component: docker-compose.yaml's settings, on loopback ports."""
    inherited = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "MLFLOW_", "SPARK_", "PYSPARK_", "PYTEST_"))
    }
    api = f"http://127.0.0.1:{api_port}"
    return {
        **inherited,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CORE__FERNET_KEY": "",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": BUNDLE,
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(dags), "refresh_interval": 0},
                }
            ]
        ),
        # Shared by every component: the api-server validates the tokens the scheduler signs for tasks.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        # The scheduler and triggerer are started with --skip-serve-logs; these keep any log server off
        # the default ports all the same.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # Scheduled runs from start_date on, for the nightly example's two scheduled runs.
        "AIRFLOW__SCHEDULER__CATCHUP_BY_DEFAULT": "True",
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
    }


@dataclass
class Deployment:
    home: Path
    api_url: str
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    groups: set[int] = field(default_factory=set)
    api: AirflowApi | None = None

    @property
    def rest(self) -> AirflowApi:
        assert self.api is not None
        return self.api

    def log(self, name: str) -> Path:
        return self.home / f"{name}.log"

    def tail(self, *names: str, chars: int = 3000) -> str:
        out = []
        for name in names or ("api-server", *COMPONENTS):
            path = self.log(name)
            if path.exists():
                out.append(f"--- {name} ---\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int = 1) -> str:
        """The task's own log file, as the UI shows it (read from disk: same machine)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        path = folder / f"attempt={attempt}.log"
        return path.read_text(errors="replace") if path.exists() else f"(no log at {path})"

    def members(self) -> list[psutil.Process]:
        """Every live process of the deployment: the members of its process groups.

        The components' own groups, plus every group a descendant of theirs ever had: the task SDK
        starts each task in a session of its own, and a process whose parent died (an orphaned Spark
        JVM) is reparented to init but stays in its group.
        """
        for process in self.processes.values():
            self.groups.add(process.pid)
            try:
                children = psutil.Process(process.pid).children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                try:
                    self.groups.add(os.getpgid(child.pid))
                except ProcessLookupError:
                    continue
        found = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) in self.groups and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return found

    def java_processes(self) -> list[psutil.Process]:
        return [p for p in self.members() if is_java(p)]

    def task_process(self, ti_id: str) -> psutil.Process | None:
        """The task's own process: the task SDK names it ``airflow worker -- <task instance id>``."""
        for proc in self.members():
            if f"airflow worker -- {ti_id}" in cmdline(proc):
                return proc
        return None


@contextmanager
def airflow_deployment(db_url: str | None, dag_files: Iterable[Path]) -> Iterator[Deployment]:
    """Migrate the metadata DB, start api-server, scheduler, dag-processor and triggerer, yield, stop them.

    ``db_url`` None: a SQLite metadata DB in the temporary AIRFLOW_HOME.
    """
    home = Path(tempfile.mkdtemp(prefix="sparktune-deployment-"))
    api_port = free_port()
    db_url = db_url or f"sqlite:///{home / 'airflow.db'}"
    env = airflow_env(home, db_url, api_port, dags_folder(home / "dags", dag_files))
    deployment = Deployment(home, f"http://127.0.0.1:{api_port}", env)
    airflow = str(VENV_BIN / "airflow")
    try:
        migrate = subprocess.run(
            [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        commands = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer", "--skip-serve-logs"],
        }
        for name, args in commands.items():
            deployment.processes[name] = start_group([airflow, *args], env, deployment.log(name))

        def api_up() -> bool:
            for name, process in deployment.processes.items():
                assert process.poll() is None, f"{name} exited\n{deployment.tail(name)}"
            return requests.get(f"{deployment.api_url}/api/v2/version", timeout=5).status_code == 200

        wait_until(api_up, 180, "Airflow api-server", deployment.log("api-server"))
        deployment.api = AirflowApi(deployment.api_url)
        yield deployment
    finally:
        leftovers = deployment.members()  # and so every task's group seen so far
        for name in ("scheduler", "triggerer", "dag-processor", "api-server"):
            if name in deployment.processes:
                stop_group(deployment.processes[name])
        for proc in leftovers + deployment.members():  # tasks (and their JVMs) in groups of their own
            try:
                proc.kill()
            except psutil.Error:
                pass
        if os.environ.get("SPARKTUNE_KEEP_DEPLOYMENT"):
            print(f"deployment kept at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


# -- the public REST API --------------------------------------------------------------------------


class ApiError(AssertionError):
    pass


class AirflowApi:
    """The public REST API (/api/v2) with a SimpleAuthManager token (all admins: GET /auth/token)."""

    def __init__(self, base: str) -> None:
        self.base = base
        response = requests.get(f"{base}/auth/token", timeout=30)
        assert response.status_code in (200, 201), response.text
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def call(self, method: str, path: str, ok: Iterable[int] = (200, 201, 204), **kwargs: Any) -> Any:
        response = self.session.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)
        if response.status_code not in set(ok):
            raise ApiError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    # DAGs and runs

    def wait_for_dags(self, dag_ids: Iterable[str], timeout_s: float = 240) -> None:
        """Until the dag-processor has parsed and serialized every one of them."""
        wanted = set(dag_ids)

        def parsed() -> bool:
            found = {d["dag_id"] for d in self.get("/dags", limit=1000)["dags"]}
            return wanted <= found

        try:
            wait_until(parsed, timeout_s, f"DAGs {sorted(wanted)}")
        except RuntimeError:
            errors = self.get("/importErrors")
            raise AssertionError(f"DAGs not parsed: {json.dumps(errors)[:3000]}") from None

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """A manual run (what the UI's trigger button does); returns its run id."""
        body = {"logical_date": None, "conf": conf or {}}
        return str(self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}")  # type: ignore[no-any-return]

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.get(f"/dags/{dag_id}/dagRuns", order_by="run_after", limit=100)["dag_runs"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")  # type: ignore[no-any-return]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        found = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti for ti in found}

    def mark(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        """What the UI's "Mark as failed/success" does."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return self.call("PATCH", path, json={"new_state": state})

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        value = self.get(path)["value"]
        return json.loads(value) if isinstance(value, str) else value

    def has_xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> bool:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.call("GET", path, ok=(200, 404)).get("key") == key

    def extra_links(self, dag_id: str, run_id: str, task_id: str) -> dict[str, str | None]:
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/links"
        return dict(self.get(path)["extra_links"])

    # connections (tasks read them through the execution API, so they take effect at once)

    def set_connection(self, conn_id: str, conn_type: str, host: str, **fields: Any) -> None:
        self.call("DELETE", f"/connections/{conn_id}", ok=(204, 404))
        body = {"connection_id": conn_id, "conn_type": conn_type, "host": host, **fields}
        self.call("POST", "/connections", json=body)

    def delete_connection(self, conn_id: str) -> None:
        self.call("DELETE", f"/connections/{conn_id}", ok=(204, 404))

    # waiting

    def wait_for(
        self, what: str, fetch: Callable[[], Any], done: Callable[[Any], bool], timeout_s: float
    ) -> Any:
        """Poll ``fetch`` until ``done`` holds for its value; the last value is in the error."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = fetch()
            if done(last):
                return last
            time.sleep(1)
        raise AssertionError(f"{what}: not within {timeout_s:g} s; last seen {json.dumps(last)[:2000]}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 300) -> dict[str, Any]:
        run = self.wait_for(
            f"{dag_id} {run_id} to finish",
            lambda: self.dag_run(dag_id, run_id),
            lambda r: r["state"] in ("success", "failed"),
            timeout_s,
        )
        return run  # type: ignore[no-any-return]

    def wait_for_state(
        self, dag_id: str, run_id: str, task_id: str, states: Iterable[str], timeout_s: float = 300
    ) -> dict[str, Any]:
        """Until the task instance is in one of ``states``; a terminal state it was not waited for fails."""
        wanted = set(states)

        def reached(ti: dict[str, Any]) -> bool:
            if ti["state"] in TERMINAL - wanted:
                raise AssertionError(f"{dag_id} {run_id} {task_id} ended {ti['state']}, not {sorted(wanted)}")
            return ti["state"] in wanted

        ti = self.wait_for(
            f"{dag_id} {run_id} {task_id} in {sorted(wanted)}",
            lambda: self.task_instance(dag_id, run_id, task_id),
            reached,
            timeout_s,
        )
        return ti  # type: ignore[no-any-return]


# -- MLflow and Spark, as the tests see them --------------------------------------------------------


def existing_store(folder: Path) -> str:
    """An SQLite MLflow store created here, before any task opens it, so that the test may poll it."""
    from mlflow import MlflowClient

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


def parent_runs(uri: str, experiment: str, airflow_run_id: str) -> list[Any]:
    """The parent (task try) runs of one DAG run, oldest try first."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`airflow.run_id` = '{airflow_run_id}'"
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return sorted(parents, key=lambda r: int(r.data.tags["airflow.try_number"]))


def trial_runs(uri: str, parent: Any) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    return sorted(runs, key=lambda r: int(r.data.tags["sparktune.tid"]))


def spark_ui_jobs(jvm: psutil.Process) -> list[dict[str, Any]] | None:
    """Running jobs of the Spark driver in ``jvm``, from its own web UI.

    The UI listens on the first free port from 4040 (spark.ui.port) on; the driver's other ports speak
    Spark's RPC protocol, which an HTTP request would only confuse.
    """
    try:
        listening = {c.laddr.port for c in jvm.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        ports = sorted(p for p in listening if 4040 <= p < 4140)
    except psutil.Error:
        return None
    for port in ports:
        base = f"http://127.0.0.1:{port}/api/v1/applications"
        try:
            apps = requests.get(base, timeout=10).json()
            return list(
                requests.get(f"{base}/{apps[0]['id']}/jobs", params={"status": "running"}, timeout=10).json()
            )
        except (requests.RequestException, ValueError, LookupError, TypeError):
            continue
    return None
