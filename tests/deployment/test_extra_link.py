"""The "MLflow run" extra link, as the REST API (and so the UI) returns it for a finished tuning task."""

from __future__ import annotations

import pytest
import requests

from tests.deployment.harness import AirflowApi, Deployment
from tests.servers import MlflowServer


@pytest.mark.deployment
def test_extra_link_opens_the_parent_run_on_the_tracking_server(
    deployment: Deployment, api: AirflowApi, mlflow_tracking_server: MlflowServer
) -> None:
    server = mlflow_tracking_server.uri
    api.set_connection("deploy_mlflow_server", "mlflow", server)
    api.set_paused("deploy_extra_link", False)
    run_id = api.trigger("deploy_extra_link")
    run = api.wait_for_run("deploy_extra_link", run_id, timeout_s=300)
    assert run["state"] == "success", deployment.task_log("deploy_extra_link", run_id, "tune")

    value = api.xcom("deploy_extra_link", run_id, "tune")
    mlflow = value["mlflow"]
    assert mlflow["tracking_uri"].rstrip("/") == server
    links = api.extra_links("deploy_extra_link", run_id, "tune")
    assert links == {
        "MLflow run": f"{server}/#/experiments/{mlflow['experiment_id']}/runs/{mlflow['run_id']}"
    }

    # The run the link names is on the server: the parent of this task try, with its trials.
    got = requests.get(f"{server}/api/2.0/mlflow/runs/get", params={"run_id": mlflow["run_id"]}, timeout=30)
    parent = got.json()["run"]
    assert parent["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
    assert (tags["airflow.dag_id"], tags["airflow.run_id"]) == ("deploy_extra_link", run_id)
    found = requests.post(
        f"{server}/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [mlflow["experiment_id"]],
            "filter": f"tags.`mlflow.parentRunId` = '{mlflow['run_id']}'",
        },
        timeout=30,
    ).json()
    assert len(found.get("runs", [])) == value["trials"]["total"] == 2
