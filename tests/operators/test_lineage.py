from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_sparktune.operators.lineage import data_uri_of, dataset_name, tuning_lineage
from tests.servers import airflow_dags_test


@pytest.mark.unit
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/data/features/ds=1/", ("file", "/data/features/ds=1")),
        ("file:///data/features.parquet", ("file", "/data/features.parquet")),
        ("s3://bucket/features/ds=1/", ("s3://bucket", "features/ds=1")),
        ("s3://key:secret@bucket/features", ("s3://bucket", "features")),
        ("gs://bucket/a/b.parquet", ("gs://bucket", "a/b.parquet")),
        ("abfss://box@acct.dfs.core.windows.net/f", ("abfss://box@acct.dfs.core.windows.net", "f")),
        ("hdfs://namenode:8020/warehouse/t", ("hdfs://namenode:8020", "/warehouse/t")),
        ("sftp://user:pw@host:22/srv/data.csv", ("sftp://host:22", "srv/data.csv")),
    ],
)
def test_dataset_names_follow_the_openlineage_naming_spec(uri: str, expected: tuple[str, str]) -> None:
    assert dataset_name(uri) == expected


@pytest.mark.unit
def test_data_uri_of_a_uri_or_a_sensor_plan() -> None:
    assert data_uri_of(" /data/x ") == "/data/x"
    assert data_uri_of({"uri": "s3://b/k", "mode": "broadcast"}) == "s3://b/k"
    assert data_uri_of('{"uri": "/data/y"}') == "/data/y"
    assert data_uri_of(None) is None and data_uri_of("") is None


@pytest.mark.unit
def test_a_failed_night_has_only_its_input() -> None:
    lineage = tuning_lineage(None, "/data/x")
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", "/data/x")]
    assert lineage.outputs == [] and lineage.run_facets == {}


def lineage_events(path: Path) -> list[dict[str, Any]]:
    """What the OpenLineage file transport wrote: one JSON event per line (or per file, by version)."""
    files = [path] if path.is_file() else sorted(path.parent.glob(path.name + "*"))
    events = []
    for found in files:
        for line in found.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return events


@pytest.mark.integration
def test_a_real_task_run_emits_the_dataset_and_the_tuning_summary(
    airflow_db: Any, mlflow_uri: str, tmp_path: Path
) -> None:
    import pandas as pd

    data = tmp_path / "features"
    data.mkdir()
    pd.DataFrame({"y": [0.2, 0.4, 0.6]}).to_parquet(data / "part-0.parquet")
    out = tmp_path / "lineage.jsonl"
    env = {
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(out), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "sparktune-tests",
    }
    done = airflow_dags_test("lineage_tuning", env, conf={"uri": str(data)})
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]

    events = lineage_events(out)
    complete = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
    said = [line for line in (done.stdout + done.stderr).splitlines() if "lineage" in line.lower()]
    assert {"lineage_tuning.wait_for_data", "lineage_tuning.tune"} <= set(complete), "\n".join(said)[-6000:]

    tune = complete["lineage_tuning.tune"]
    assert [(d["namespace"], d["name"]) for d in tune["inputs"]] == [("file", str(data))]
    summary = tune["run"]["facets"]["sparktune_tuning"]
    assert summary["tuning_key"] == "lineage_tuning.tune"
    assert set(summary["best_params"]) == {"x"} and summary["trials"]["total"] == 3
    assert summary["stopped_reason"] == "max_evals" and summary["improved"] in (True, False)
    [output] = tune["outputs"]
    assert output["namespace"] == mlflow_uri
    assert output["name"].endswith(f"/runs/{summary['mlflow_run_id']}")

    sensor = complete["lineage_tuning.wait_for_data"]
    assert [(d["namespace"], d["name"]) for d in sensor["inputs"]] == [("file", str(data))]
    staging = sensor["run"]["facets"]["sparktune_staging"]
    assert staging["mode"] == "broadcast" and staging["format"] == "parquet"


# -- no credentials in lineage ---------------------------------------------------------------------

CHAINED = "simplecache::ftp://ann:p@ss'w0rd@files.example.com/features/x.parquet?sig=5ig-5ecret&v=2"


def assert_no_secret(text: str) -> None:
    for secret in ("p@ss'w0rd", "w0rd", "p%40ss", "ann:", "5ig-5ecret"):
        assert secret not in text, text


@pytest.mark.unit
def test_a_failed_night_names_its_input_without_credentials() -> None:
    """The input of a failed task is its rendered ``data``: a chained URI with a login and a signature."""
    for data in (CHAINED, {"uri": CHAINED, "mode": "reload"}, json.dumps({"uri": CHAINED})):
        lineage = tuning_lineage(None, data_uri_of(data))
        assert [(d.namespace, d.name) for d in lineage.inputs] == [
            ("ftp://files.example.com", "features/x.parquet")
        ]
        assert_no_secret(repr(lineage))
    value = {
        "staging": {"uri": CHAINED, "mode": "broadcast"},
        "mlflow": {"tracking_uri": "http://u:tok-1@m:5000", "run_id": "r", "experiment_id": "1"},
    }
    lineage = tuning_lineage(value, None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("http://m:5000", "experiments/1/runs/r")]
    assert_no_secret(repr(lineage))
    assert "tok-1" not in repr(lineage)


@pytest.mark.unit
def test_hook_lineage_records_the_input_without_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import lineage, plugins_manager

    from airflow_provider_sparktune.hooks.staging import DataStagingHook

    monkeypatch.setattr(
        plugins_manager, "get_hook_lineage_readers_plugins", lambda: [lineage.HookLineageReader]
    )
    lineage.get_hook_lineage_collector.cache_clear()
    try:
        DataStagingHook(None)._report_input(CHAINED)
        collected = lineage.get_hook_lineage_collector().collected_assets
    finally:
        lineage.get_hook_lineage_collector.cache_clear()
    uris = [info.asset.uri for info in collected.inputs]
    assert uris and "files.example.com/features/x.parquet" in uris[0], uris
    assert_no_secret(repr(collected))


@pytest.mark.integration
def test_a_failed_task_s_lineage_and_log_carry_no_credentials_of_its_uri(
    airflow_db: Any, mlflow_uri: str, tmp_path: Path
) -> None:
    """A real run whose data URI (run conf) holds a login the FTP server refuses: the task fails, and
    neither its OpenLineage events nor its output hold the login."""
    from tests.servers import ftp_server

    password = "p@ss'w0rd"
    (tmp_path / "ftp").mkdir()
    out = tmp_path / "lineage.jsonl"
    env = {
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "mlflow", "host": mlflow_uri}),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(out), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "sparktune-tests",
    }
    with ftp_server(tmp_path / "ftp", "ann", "the-right-one") as server:
        public = server.uri("features/x.parquet")
        uri = "simplecache::" + public.replace("ftp://", f"ftp://ann:{password}@", 1)
        done = airflow_dags_test("lineage_tuning", env, conf={"uri": uri})
    output = done.stdout + done.stderr
    assert done.returncode != 0 and server.refused >= 1, output[-3000:]
    events = lineage_events(out)
    failed = [e for e in events if e["eventType"] == "FAIL"]
    assert failed, [e["eventType"] for e in events]
    host = public.split("/")[2]
    inputs = [(d["namespace"], d["name"]) for e in failed for d in e.get("inputs", [])]
    assert (f"ftp://{host}", "features/x.parquet") in inputs, inputs
    assert f"data '{'simplecache::' + public}'" in output, output[-3000:]
    for event in events:  # the run conf as the user typed it: Airflow's own facet, not this provider's
        event["run"]["facets"].get("airflow", {}).get("dagRun", {}).pop("conf", None)
    published = json.dumps(events)
    for secret in (password, "p%40ss", "ann:"):
        assert secret not in output, [line for line in output.splitlines() if secret in line]
        assert secret not in published, secret
