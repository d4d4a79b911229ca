"""SparkSessionHook: the SparkSession behind an Airflow connection, classic or Spark Connect.

A ``spark`` connection with a master (``local[N]``, ``spark://``, ``yarn``, ``k8s://``) gives a classic
SparkContext built in-process on the driver (the Airflow worker), instead of a submitted job. A
``spark_connect`` connection (the Spark provider's type, with its token / ``use_ssl`` / ``user_id``)
or a ``spark`` connection whose host is ``sc://...`` gives a Spark Connect session, which runs the
resident dispatcher.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_provider_sparktune.exceptions import SparkConnectionError
from airflow_provider_sparktune.hooks.connections import no_such_connection, warn_fallback
from airflow_provider_sparktune.hooks.spark_gateway import launch_logged_gateway
from airflow_provider_sparktune.redaction import redact_uri
from airflow_provider_sparktune.tuning.dispatch.daemon import DAEMON_MODULE, DAEMON_MODULE_CONF
from airflow_provider_sparktune.tuning.dispatch.launch import CALLBACK_HOST_CONF, CALLBACK_TIMEOUT_CONF
from airflow_provider_sparktune.values import DEFAULT_SPARK_WAIT_S, positive_seconds

DEFAULT_MASTER = "local[*]"
_MASTER_SCHEMES = ("local", "spark://", "yarn", "k8s://", "mesos://", "sc://")
CONNECTION_TYPES = ("spark", "spark_connect")


def resolve_master(host: str | None, port: int | None) -> str:
    """Master URL from a spark connection's host and port (``spark://h`` + 7077 -> ``spark://h:7077``).

    An ``sc://`` host is a Spark Connect URL (``sc://h`` + 15002 -> ``sc://h:15002``).
    """
    host = (host or "").strip()
    if not host:
        return DEFAULT_MASTER
    if not host.startswith(_MASTER_SCHEMES):
        host = f"spark://{host}"
    if port and host.startswith(("spark://", "sc://")) and host.split("/")[2].count(":") == 0:
        scheme, _, rest = host.partition("://")
        name, slash, tail = rest.partition("/")
        host = f"{scheme}://{name}:{port}{slash}{tail}"
    return host


def is_connect_url(master: str) -> bool:
    return master.startswith("sc://")


def conf_from_extra(extra: Mapping[str, Any]) -> dict[str, str]:
    """Spark conf from a connection's extra: a ``spark_conf`` dict and any ``spark.*`` keys."""
    conf = {str(k): str(v) for k, v in dict(extra.get("spark_conf") or {}).items()}
    conf.update({k: str(v) for k, v in extra.items() if k.startswith("spark.")})
    return conf


def discard_connect_session(session: Any) -> None:
    """Close a Spark Connect session its server refused or that outlived its server, without a request.

    pyspark's ``stop()`` first asks the server to release the session. Against a server that
    refused the session or is gone, that request is retried for minutes, and a client left open
    sends it again from its exit handler: the task process would not end.
    """
    if session is None:
        return
    try:
        session.client.close()
    finally:
        session.stop()  # the client is closed: nothing is sent, the session is only forgotten


def connect_server_listening(url: str, timeout: float) -> bool:
    """Whether something accepts connections at a Spark Connect URL's host and port."""
    parsed = urlparse(url)
    try:
        socket.create_connection(
            (parsed.hostname or "localhost", parsed.port or 15002), timeout=timeout
        ).close()
    except OSError:
        return False
    return True


class SparkSessionHook(BaseHook):
    """Builds, and later stops, the SparkSession behind ``spark_conn_id``.

    Without the connection it runs Spark ``local[*]`` and warns, when ``spark_conn_id`` is the default
    id; any other id that Airflow cannot find is an error naming it. A session that already existed in
    the process (a notebook, a test session) is reused and left running.
    """

    conn_name_attr = "spark_conn_id"
    default_conn_name = "spark_default"
    conn_type = "spark"
    hook_name = "Spark (SparkTrials session)"

    def __init__(
        self,
        spark_conn_id: str = default_conn_name,
        *,
        spark_conf: Mapping[str, Any] | None = None,
        app_name: str = "sparktune",
        connect_timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.spark_conn_id = spark_conn_id
        self.spark_conf = spark_conf
        self.app_name = app_name
        self.connect_timeout = connect_timeout
        self._session: Any = None
        self._created = False
        self._resolved: tuple[str, dict[str, str], float] | None = None

    def resolve(self) -> tuple[str, dict[str, str], float]:
        """(master, conf, connect timeout) from the connection, the operator's conf and the defaults.

        The connection is read once per hook: the operator checks it before MLflow is touched, and
        the session is made from the same reading.
        """
        if self._resolved is None:
            self._resolved = self._read_connection()
        master, conf, timeout = self._resolved
        return master, dict(conf), timeout

    def _read_connection(self) -> tuple[str, dict[str, str], float]:
        try:
            conn = self.get_connection(self.spark_conn_id)
        except AirflowNotFoundException:
            if self.spark_conn_id != self.default_conn_name:  # a typo must not run Spark on this worker
                raise SparkConnectionError(
                    no_such_connection(
                        "spark_conn_id",
                        self.spark_conn_id,
                        self.default_conn_name,
                        f"run on Spark {DEFAULT_MASTER} on this worker",
                    )
                ) from None
            warn_fallback(
                self.log,
                "Spark",
                self.spark_conn_id,
                f"running Spark {DEFAULT_MASTER} on this Airflow worker",
                "To run on a cluster (host spark://host:7077, yarn, k8s://... or sc://host:15002)",
            )
            master, extra = DEFAULT_MASTER, {}
        else:
            if conn.conn_type not in (*CONNECTION_TYPES, None, ""):
                raise SparkConnectionError(
                    f"spark_conn_id: connection {self.spark_conn_id!r} has type {conn.conn_type!r}; "
                    "use a connection of type 'spark' (host: local[N], spark://host:port, yarn, k8s://... "
                    "or sc://host:port) or 'spark_connect'"
                )
            extra = conn.extra_dejson if conn.extra else {}
            master = (
                self._connect_url(conn.host)
                if conn.conn_type == "spark_connect"
                else resolve_master(conn.host, conn.port)
            )
            if not isinstance(extra.get("spark_conf") or {}, Mapping):
                raise SparkConnectionError(
                    f"spark_conn_id: the extra of connection {self.spark_conn_id!r} has a spark_conf that is "
                    'not a JSON object; use {"spark_conf": {"spark.executor.memory": "4g"}}'
                )
        if self.spark_conf is not None and not isinstance(self.spark_conf, Mapping):
            raise SparkConnectionError(
                f"spark_conf: {type(self.spark_conf).__name__} given; use a dict of Spark conf keys and values"
            )
        from airflow_provider_sparktune.operators.spark_conf import check_conf_syntax

        # spark-submit gets each entry as '--conf key=value': a key with '=' would set another key.
        extra_conf = conf_from_extra(extra)
        check_conf_syntax(extra_conf, f"spark_conn_id {self.spark_conn_id!r}: extra", SparkConnectionError)
        check_conf_syntax(self.spark_conf or {}, "spark_conf", SparkConnectionError)
        conf = {"spark.ui.showConsoleProgress": "false", **extra_conf}
        conf.update({str(k): str(v) for k, v in (self.spark_conf or {}).items()})
        timeout = self._timeout(extra)
        if is_connect_url(master):
            conf.pop("spark.ui.showConsoleProgress")  # a static conf: the server refuses it, with a warning
            if extra.get("callback_host"):
                conf.setdefault(CALLBACK_HOST_CONF, str(extra["callback_host"]))
            conf.setdefault(CALLBACK_TIMEOUT_CONF, f"{timeout:g}")
        else:  # new Python workers start without compiling PySpark again (tuning/dispatch/daemon.py)
            conf.setdefault(DAEMON_MODULE_CONF, DAEMON_MODULE)
        return master, conf, timeout

    def _connect_url(self, host: str | None) -> str:
        """The ``sc://`` URL of a ``spark_connect`` connection, built by the Spark provider's own hook."""
        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook

        if not (host or "").strip():
            raise SparkConnectionError(
                f"spark_conn_id: connection {self.spark_conn_id!r} of type 'spark_connect' has no host; "
                "set it to the Spark Connect server (host, port 15002 by default)"
            )
        try:
            return SparkConnectHook(self.spark_conn_id).get_connection_url()
        except ValueError as err:
            raise SparkConnectionError(f"spark_conn_id {self.spark_conn_id!r}: {err}") from None

    @property
    def is_connect(self) -> bool:
        """The connection points at a Spark Connect server."""
        return is_connect_url(self.resolve()[0])

    def _timeout(self, extra: Mapping[str, Any]) -> float:
        """``connect_timeout`` of the operator, else of the connection's extra, else the default."""
        value: Any = self.connect_timeout
        where = "spark_connect_timeout"
        if value is None:
            where, value = "spark_conn_id: extra connect_timeout", extra.get("connect_timeout")
            if value is None:
                return DEFAULT_SPARK_WAIT_S
        return positive_seconds(where, value, SparkConnectionError, text=True)

    def get_session(self) -> Any:
        """The SparkSession to run trials on; created once per hook."""
        if self._session is not None:
            return self._session
        from pyspark import SparkContext
        from pyspark.sql import SparkSession

        master, conf, timeout = self.resolve()
        if is_connect_url(master):
            return self._connect_session(master, conf, timeout)
        if getattr(SparkContext, "_active_spark_context", None) is not None:
            self._session = SparkSession.builder.getOrCreate()
            self.log.info("Reusing the running SparkSession (master %s)", self._session.sparkContext.master)
            return self._session
        if master.startswith("local"):
            # Executors run PYSPARK_PYTHON; unset, local mode starts the system python3, which lacks hyperopt.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # no "hostname resolves to loopback" warning
            conf.setdefault("spark.driver.host", "127.0.0.1")
            conf.setdefault("spark.driver.bindAddress", "127.0.0.1")
        elif "spark.pyspark.python" in conf:
            os.environ.setdefault("PYSPARK_PYTHON", conf["spark.pyspark.python"])
        self.log.info("Starting SparkSession on %s (%s)", redact_uri(master), json.dumps(sorted(conf)))
        launch_logged_gateway({"spark.master": master, "spark.app.name": self.app_name, **conf})
        builder = SparkSession.builder.master(master).appName(self.app_name)
        for key, value in conf.items():
            builder = builder.config(key, value)
        deadline = time.monotonic() + timeout
        if master.startswith("local"):
            session = self._build(builder.getOrCreate, master)
        else:
            # A standalone master that is down blocks SparkContext creation for a minute or more.
            session = self._build_within(builder.getOrCreate, master, deadline, timeout)
        self._session, self._created = session, True
        if not master.startswith("local"):
            self._wait_for_executors(session, master, deadline, timeout)
        return session

    def _connect_session(self, url: str, conf: Mapping[str, str], timeout: float) -> Any:
        """A new Spark Connect session of this hook's own (stopped by ``stop``), checked with one request.

        Made with the Connect module's own builder: ``pyspark.sql.SparkSession.builder.remote`` would
        mark the whole process as Spark Connect, and no classic session could start in it afterwards.
        """
        from pyspark.sql.connect.session import SparkSession as ConnectSession

        self.log.info("Connecting to Spark Connect at %s (%s)", redact_uri(url), json.dumps(sorted(conf)))
        builder = ConnectSession.builder.remote(url)
        for key, value in conf.items():
            builder = builder.config(key, value)

        def create() -> Any:  # runs in a thread of its own (_build_within)
            try:
                session: Any = builder.create()
            except BaseException:
                # The builder makes the session, as this thread's active one, before its first
                # request (the conf) fails: a server that refuses the token fails here.
                discard_connect_session(ConnectSession.getActiveSession())
                raise
            try:
                self.log.info("Spark Connect session %s, Spark %s", session.session_id, session.version)
            except BaseException:
                discard_connect_session(session)
                raise
            return session

        deadline = time.monotonic() + timeout
        self._wait_for_port(url, deadline, timeout)
        self._session = self._build_within(create, url, deadline, timeout)
        self._created = True
        return self._session

    def _wait_for_port(self, url: str, deadline: float, timeout: float) -> None:
        """Fail at the deadline while nothing listens at the server's address.

        Checked before a client exists: a Spark Connect client to a dead server retries for minutes,
        also in its exit handler, so a task that gave up on it would not end.
        """
        while not connect_server_listening(url, max(0.1, min(5.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise self._no_executor_error(url, timeout)
            time.sleep(0.5)

    def _build(self, make: Any, master: str) -> Any:
        try:
            return make()
        except Exception as err:
            raise SparkConnectionError(
                f"spark_conn_id {self.spark_conn_id!r}: cannot start Spark on {redact_uri(master)}: {err}"
            ) from err

    def _build_within(self, make: Any, master: str, deadline: float, timeout: float) -> Any:
        """``make()`` in a helper thread; give up at the deadline and stop the session if it comes late."""
        outcome: dict[str, Any] = {}
        lock = threading.Lock()

        def build() -> None:
            try:
                session = self._build(make, master)
            except SparkConnectionError as err:
                outcome["error"] = err
                return
            with lock:
                if outcome.get("abandoned"):
                    session.stop()
                else:
                    outcome["session"] = session

        thread = threading.Thread(target=build, name="sparktune-spark-start", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        with lock:
            if "session" in outcome:
                return outcome["session"]
            if "error" in outcome:
                raise outcome["error"]
            outcome["abandoned"] = True
        raise self._no_executor_error(master, timeout)

    def _wait_for_executors(self, session: Any, master: str, deadline: float, timeout: float) -> None:
        """Fail at the deadline when no executor registers (master down, no free workers).

        The count comes from the JVM SparkContext (no public Python API has it); a pyspark without
        that route starts the run at once, and its tasks wait for executors as Spark's own jobs do.
        """
        try:
            jsc = session.sparkContext._jsc.sc()
        except AttributeError:
            self.log.warning("This pyspark does not count executors: not waiting for one to register")
            return
        while time.monotonic() < deadline:
            if jsc.isStopped():
                break
            if jsc.getExecutorMemoryStatus().size() > 1:  # the driver counts as one
                return
            time.sleep(0.5)
        self.stop()
        raise self._no_executor_error(master, timeout)

    def _no_executor_error(self, master: str, timeout: float) -> SparkConnectionError:
        if is_connect_url(master):
            return SparkConnectionError(
                f"spark_conn_id {self.spark_conn_id!r}: the Spark Connect server at {redact_uri(master)} did not "
                f"answer within {timeout:g} s; check that it is running and reachable from this worker "
                "(host, port, use_ssl, token), or raise spark_connect_timeout"
            )
        return SparkConnectionError(
            f"spark_conn_id {self.spark_conn_id!r}: no Spark executor registered with {master} within "
            f"{timeout:g} s; check that the master is up and has free workers, or raise connect_timeout"
        )

    def stop(self) -> None:
        """Stop the session if this hook created it; leave a pre-existing one alone.

        A Spark Connect session whose server is gone (it died during the run) is closed without the
        release request, which pyspark would retry for minutes before the task could end.
        """
        if self._session is not None and self._created:
            master = self.resolve()[0]
            if is_connect_url(master) and not connect_server_listening(master, 5.0):
                self.log.warning(
                    "The Spark Connect server at %s is gone; its session is closed here only",
                    redact_uri(master),
                )
                discard_connect_session(self._session)
            else:
                self._session.stop()
        self._session, self._created = None, False
