"""The driver JVM's environment: no MLflow credentials, no login in a tracking URI (a real Spark session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_sparktune.hooks.spark_gateway import worker_env

REPO = Path(__file__).resolve().parents[2]
TRACKING = "http://ann:p@ss'w0rd-5e1a@127.0.0.1:5000/?token=t0k3n-9f"


@pytest.mark.unit
def test_the_worker_environment_drops_credentials_and_keeps_the_address() -> None:
    env = worker_env(
        {
            "MLFLOW_TRACKING_URI": TRACKING,
            "MLFLOW_REGISTRY_URI": "https://u:pw-77@registry/",
            "MLFLOW_TRACKING_TOKEN": "sparktune-token",
            "MLFLOW_TRACKING_PASSWORD": "pw",
            "PATH": "/usr/bin:/bin",
        }
    )
    assert env == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000/?token=***",
        "MLFLOW_REGISTRY_URI": "https://registry/",
        "PATH": "/usr/bin:/bin",
    }


# A task process: the Spark hook starts the driver JVM (local[1]); it reports what the JVM and an
# executor's Python worker (where objectives run) see in their environment.
PROBE = textwrap.dedent(
    """
    import json, os
    from airflow_provider_sparktune.hooks.spark_session import SparkSessionHook
    hook = SparkSessionHook("spark_probe", spark_conf={"spark.ui.enabled": "false"})
    session = hook.get_session()
    jvm = session.sparkContext._jvm.java.lang.System.getenv("MLFLOW_TRACKING_URI")
    worker = session.sparkContext.parallelize([0], 1).map(
        lambda _: dict(__import__("os").environ).get("MLFLOW_TRACKING_URI")).collect()[0]
    print("RESULT " + json.dumps({"jvm": jvm, "worker": worker, "driver": os.environ["MLFLOW_TRACKING_URI"]}))
    hook.stop()
    """
)


@pytest.mark.integration
def test_a_tracking_uri_with_a_login_reaches_neither_the_jvm_nor_the_objectives() -> None:
    """``MLFLOW_TRACKING_URI`` with ``user:pass@`` (the documented fallback) in the task's environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_LOCAL_IP",)}
    env.update(
        MLFLOW_TRACKING_URI=TRACKING,
        SPARK_LOCAL_IP="127.0.0.1",
        AIRFLOW_CONN_SPARK_PROBE=json.dumps({"conn_type": "spark", "host": "local[1]"}),
    )
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["driver"] == TRACKING  # the task itself still reaches MLflow with it
    assert result["jvm"] == result["worker"] == "http://127.0.0.1:5000/?token=***"
    for secret in ("p@ss'w0rd-5e1a", "ann:", "t0k3n-9f"):
        assert secret not in done.stdout.replace(TRACKING, "") + done.stderr
