"""Real servers for integration tests: a Spark standalone cluster and an MLflow tracking server.

Both bind to 127.0.0.1 on free ports, write into temporary directories, and are stopped by process
id by the fixture that started them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_sparktune.tuning.dispatch.daemon import DAEMON_MODULE, DAEMON_MODULE_CONF

VENV_BIN = Path(sys.executable).parent
# How long a server may take to answer once started. Generous: on a 2-core machine under heavy load a
# JVM or `mlflow server` has been seen to need over two minutes; a server that never answers still fails.
SERVER_START_S = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout_s:g} s\n{tail}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def stop(process: subprocess.Popen[bytes], timeout_s: float = 20) -> None:
    """Stop a server we started, by its process id: TERM, then KILL if it lingers."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def spark_env(work: Path) -> dict[str, str]:
    """Daemons and their web UIs on loopback only, logs and scratch space in the test's directory."""
    return {
        **os.environ,
        "SPARK_HOME": str(spark_home()),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(work / "logs"),
        "SPARK_LOCAL_DIRS": str(work / "scratch"),
        "PYSPARK_PYTHON": sys.executable,
    }


@dataclass(frozen=True)
class SparkCluster:
    master_url: str
    master_ui: str
    work_dir: Path

    def apps(self) -> dict[str, Any]:
        return get_json(f"{self.master_ui}/json/")

    def connection(self, **extra: Any) -> str:
        """The AIRFLOW_CONN_* JSON for this master."""
        host, port = self.master_url.rsplit(":", 1)
        return json.dumps({"conn_type": "spark", "host": host, "port": int(port), "extra": extra})


MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def master_args(host: str, port: int, ui_port: int) -> list[str]:
    """What follows ``spark-class`` to start a master; docker-compose.yaml runs the same."""
    return [MASTER_CLASS, "--host", host, "--port", str(port), "--webui-port", str(ui_port)]


def worker_args(master_url: str, host: str, ui_port: int, work_dir: str, cores: int) -> list[str]:
    """What follows ``spark-class`` to start a worker; docker-compose.yaml runs the same."""
    return [
        WORKER_CLASS,
        master_url,
        "--host",
        host,
        "--webui-port",
        str(ui_port),
        "--work-dir",
        work_dir,
    ] + ["--cores", str(cores), "--memory", "2g"]


# MLflow 3's server also starts a job runner with seven huey consumer processes, each importing MLflow
# (about 40 s of CPU at every start, none of it used by tracking); tests, compose and `make airflow` turn it off.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_args(host: str, port: int, backend_store_uri: str, artifacts: str) -> list[str]:
    """What follows ``mlflow`` to start the tracking server; docker-compose.yaml runs the same."""
    return [
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri,
    ] + ["--artifacts-destination", artifacts]


@contextmanager
def spark_standalone_cluster(work: Path, cores: int = 2, workers: int = 1) -> Iterator[SparkCluster]:
    """A master and ``workers`` workers (each a host of its own to Spark) from pyspark's ``bin/spark-class``."""
    for sub in ("logs", "scratch", "worker"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    env = spark_env(work)
    spark_class = str(spark_home() / "bin" / "spark-class")
    port, ui_port = free_port(), free_port()
    master_url, master_ui = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    master = _start([spark_class, *master_args("127.0.0.1", port, ui_port)], work / "master.log", env)
    started: list[subprocess.Popen[bytes]] = []
    try:
        wait_until(
            lambda: get_json(f"{master_ui}/json/")["status"] == "ALIVE",
            SERVER_START_S,
            "Spark master",
            work / "master.log",
        )
        for index in range(workers):
            args = worker_args(master_url, "127.0.0.1", free_port(), str(work / "worker"), cores)
            started.append(_start([spark_class, *args], work / f"worker-{index}.log", env))
        wait_until(
            lambda: get_json(f"{master_ui}/json/")["aliveworkers"] >= workers,
            SERVER_START_S,
            "Spark worker",
            work / "worker-0.log",
        )
        yield SparkCluster(master_url, master_ui, work / "worker")
    finally:
        for worker in started:
            stop(worker)
        stop(master)


CONNECT_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def connect_server_args(
    bind: str,
    port: int,
    master: str = "local[2]",
    *,
    driver_host: str | None = None,
    token: str | None = None,
    daemon_module: str = DAEMON_MODULE,
) -> list[str]:
    """What follows ``spark-submit`` to start a Spark Connect server; docker-compose.yaml runs the same.

    ``daemon_module``: where the server's Python workers fork from; this provider's daemon, as in the
    hook's sessions, unless the executors' Python lacks this provider.
    """
    args = ["--class", CONNECT_SERVER_CLASS, "--master", master]
    confs = {
        "spark.connect.grpc.binding.address": bind,
        "spark.connect.grpc.binding.port": str(port),
        "spark.driver.host": driver_host or bind,
        "spark.driver.bindAddress": bind,
        "spark.ui.enabled": "false",
        DAEMON_MODULE_CONF: daemon_module,
    }
    if token is not None:
        confs["spark.connect.authenticate.token"] = token
    for key, value in confs.items():
        args += ["--conf", f"{key}={value}"]
    return [*args, "spark-internal"]


@dataclass(frozen=True)
class ConnectServer:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    token: str | None = None

    @property
    def url(self) -> str:
        return f"sc://{self.host}:{self.port}"

    def connection(self, **extra: Any) -> str:
        """The AIRFLOW_CONN_* JSON of a ``spark_connect`` connection to this server."""
        conn: dict[str, Any] = {"conn_type": "spark_connect", "host": self.host, "port": self.port}
        if self.token is not None:
            conn["password"] = self.token
        return json.dumps({**conn, "extra": extra})


@contextmanager
def spark_connect_server(
    work: Path, *, python: str = sys.executable, token: str | None = None
) -> Iterator[ConnectServer]:
    """A real Spark Connect server from pyspark's own jars, ``local[2]``, on a free loopback port.

    ``token``: clients must send it (then connect to ``localhost``: pyspark sends a token over a
    plain channel only there). ``python``: the executors' Python.
    """
    for sub in ("logs", "scratch"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {**spark_env(work), "PYSPARK_PYTHON": python}
    env.pop("SPARK_CONNECT_AUTHENTICATE_TOKEN", None)
    log = work / f"connect-{port}.log"
    submit = str(spark_home() / "bin" / "spark-submit")
    daemon = DAEMON_MODULE if python == sys.executable else "pyspark.daemon"  # another Python: no provider
    process = _start(
        [submit, *connect_server_args("127.0.0.1", port, token=token, daemon_module=daemon)], log, env
    )
    try:
        wait_until(
            lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close() is None,
            SERVER_START_S,
            "Spark Connect server",
            log,
        )
        yield ConnectServer("localhost" if token else "127.0.0.1", port, process, log, token)
    finally:
        stop(process)


@dataclass(frozen=True)
class MlflowServer:
    uri: str
    process: subprocess.Popen[bytes]

    def connection(self) -> str:
        return json.dumps({"conn_type": "mlflow", "host": self.uri})


def start_mlflow_server(work: Path, port: int) -> MlflowServer:
    """``mlflow server`` with a SQLite backend and a local artifact root in ``work``, once it answers."""
    work.mkdir(parents=True, exist_ok=True)
    store = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [str(VENV_BIN / "mlflow"), *mlflow_server_args("127.0.0.1", port, store, str(work / "artifacts"))]
    log = work / f"mlflow-{port}-{time.monotonic_ns()}.log"
    process = _start(cmd, log, {**os.environ, **MLFLOW_SERVER_ENV})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200,
            SERVER_START_S,
            "MLflow server",
            log,
        )
    except BaseException:
        stop(process)
        raise
    return MlflowServer(uri, process)


@contextmanager
def mlflow_server(work: Path, port: int | None = None) -> Iterator[MlflowServer]:
    """``mlflow server`` for the length of a block."""
    server = start_mlflow_server(work, port or free_port())
    try:
        yield server
    finally:
        stop(server.process)


class RestartableMlflowServer:
    """An ``mlflow server`` on a fixed port and store that tests stop and start again (an outage)."""

    def __init__(self, work: Path) -> None:
        self.work, self.port = work, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server: MlflowServer | None = None

    def start(self) -> None:
        if self.server is None:
            self.server = start_mlflow_server(self.work, self.port)

    def stop(self) -> None:
        if self.server is not None:
            stop(self.server.process)
            self.server = None

    def connection(self) -> str:
        return json.dumps({"conn_type": "mlflow", "host": self.uri})


def airflow_dags_test(
    dag_id: str, env: dict[str, str], conf: dict[str, Any] | None = None, timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """``airflow dags test`` in its own process: it needs its own SparkContext (one per process)."""
    cmd = [str(VENV_BIN / "airflow"), "dags", "test", dag_id]
    if conf is not None:
        cmd += ["--conf", json.dumps(conf)]
    return subprocess.run(
        cmd,
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def airflow_cli(
    args: list[str], env: dict[str, str], timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Any ``airflow`` command in its own process, with the same environment as ``airflow_dags_test``."""
    return subprocess.run(
        [str(VENV_BIN / "airflow"), *args],
        env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@contextmanager
def process_group(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A command in a new session (its own process group), so that it and its JVM can be killed together."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", **env},
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            kill_group(process)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group we created for ``process`` (no cleanup runs), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


@dataclass
class TokenProxy:
    """Counts of what a loopback proxy (``token_checking_proxy``, ``registry_refusing_proxy``) let
    through and refused."""

    uri: str
    authorized: int = 0
    refused: int = 0


Refusal = tuple[int, bytes, str]


@contextmanager
def _filtering_proxy(
    upstream: str, refuse: Callable[[str, str, Any], Refusal | None], name: str
) -> Iterator[TokenProxy]:
    """A loopback HTTP proxy in front of ``upstream``: ``refuse(method, path, headers)`` answers a
    request itself (status, body, content type) or lets it through (None). Runs in a thread of the
    test process and is shut down when the block ends."""
    import http.server
    import threading
    import urllib.error

    port = free_port()
    proxy = TokenProxy(f"http://127.0.0.1:{port}")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            refusal = refuse(self.command, self.path, self.headers)
            with lock:
                if refusal is None:
                    proxy.authorized += 1
                else:
                    proxy.refused += 1
            if refusal is None:
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")
                }
                request = urllib.request.Request(
                    upstream + self.path, data=body, headers=headers, method=self.command
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, payload, kind = (
                            response.status,
                            response.read(),
                            response.headers.get("Content-Type"),
                        )
                except urllib.error.HTTPError as err:
                    status, payload, kind = err.code, err.read(), err.headers.get("Content-Type")
            else:
                status, payload, kind = refusal
            self.send_response(status)
            self.send_header("Content-Type", kind or "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextmanager
def token_checking_proxy(upstream: str, token: str) -> Iterator[TokenProxy]:
    """A loopback HTTP proxy in front of ``upstream`` that refuses (401) requests without the bearer token.

    It stands where a tracking server behind authentication would: a request reaches MLflow only if
    it carries ``Authorization: Bearer <token>``.
    """

    def refuse(method: str, path: str, headers: Any) -> Refusal | None:
        return None if headers.get("Authorization") == f"Bearer {token}" else (401, b"", "application/json")

    with _filtering_proxy(upstream, refuse, "token-proxy") as proxy:
        yield proxy


@dataclass
class FtpServer:
    """What an ``ftp_server`` saw: logins it accepted and refused."""

    port: int
    logins: int = 0
    refused: int = 0

    def uri(self, path: str) -> str:
        return f"ftp://127.0.0.1:{self.port}/{path.lstrip('/')}"


@contextmanager
def ftp_server(root: Path, user: str, password: str) -> Iterator[FtpServer]:
    """A loopback FTP server (pyftpdlib) serving ``root`` read-only to one user with a password.

    A real remote filesystem that needs credentials: fsspec reaches it with the storage options
    ``username``/``password``, so a read without them is refused. Runs in a thread of the test
    process and is closed when the block ends.
    """
    import threading

    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    seen = FtpServer(free_port())
    lock = threading.Lock()
    authorizer = DummyAuthorizer()
    authorizer.add_user(user, password, str(root), perm="elr")

    class Handler(FTPHandler):
        def on_login(self, username: str) -> None:
            with lock:
                seen.logins += 1

        def on_login_failed(self, username: str, password: str) -> None:
            with lock:
                seen.refused += 1

    Handler.authorizer = authorizer
    Handler.banner = "sparktune test FTP"
    server = ThreadedFTPServer(("127.0.0.1", seen.port), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"timeout": 0.5}, name="ftp-server", daemon=True
    )
    thread.start()
    try:
        yield seen
    finally:
        server.close_all()
        thread.join(10)


@contextmanager
def registry_refusing_proxy(upstream: str) -> Iterator[TokenProxy]:
    """A loopback HTTP proxy in front of ``upstream`` whose model registry refuses every write (403).

    It stands where a tracking server with access control would, for a user who may log runs but not
    register models: MLflow's own PERMISSION_DENIED answer for registered-model and model-version
    writes, everything else passed through.
    """
    denied = json.dumps(
        {
            "error_code": "PERMISSION_DENIED",
            "message": "Permission denied: user may not write registered models",
        }
    ).encode()

    def refuse(method: str, path: str, headers: Any) -> Refusal | None:
        registry = "/registered-models/" in path or "/model-versions/" in path
        return (403, denied, "application/json") if registry and method != "GET" else None

    with _filtering_proxy(upstream, refuse, "registry-proxy") as proxy:
        yield proxy
