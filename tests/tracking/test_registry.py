from __future__ import annotations

import uuid
from typing import Any

import pytest

from airflow_provider_sparktune.exceptions import RegistryError, TuningConfigError
from airflow_provider_sparktune.tracking.registry import Champion, GateRule, decide, gate_model
from tests.servers import MlflowServer, registry_refusing_proxy

# -- the decision ---------------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("rule", "value", "champion", "wins", "said"),
    [
        (GateRule("auc"), 0.9, None, True, "no champion yet"),
        (GateRule("auc", threshold=0.95), 0.9, None, False, "does not reach threshold 0.95"),
        (GateRule("auc"), 0.91, Champion("3", 0.9), True, "better by 0.01"),
        (GateRule("auc"), 0.9, Champion("3", 0.9), False, "not better"),
        (GateRule("auc"), 0.89, Champion("3", 0.9), False, "not better"),
        (
            GateRule("auc", min_absolute_change=0.02),
            0.91,
            Champion("3", 0.9),
            False,
            "less than the required 0.02",
        ),
        (GateRule("auc", min_absolute_change=0.02), 0.92, Champion("3", 0.9), True, "required 0.02"),
        (GateRule("auc", min_relative_change=0.1), 0.95, Champion("3", 0.9), False, "required 0.09"),
        (GateRule("auc", min_relative_change=0.1), 0.995, Champion("3", 0.9), True, "required 0.09"),
        (GateRule("rmse", greater_is_better=False), 1.0, Champion("3", 1.2), True, "lower is better"),
        (GateRule("rmse", greater_is_better=False), 1.3, Champion("3", 1.2), False, "not better"),
        (GateRule("rmse", greater_is_better=False, threshold=0.5), 0.6, None, False, "threshold 0.5"),
        (GateRule("auc"), 0.99, Champion("3", None), False, "has no metric 'auc'"),
    ],
)
def test_decide_follows_metric_threshold_semantics(
    rule: GateRule, value: float, champion: Champion | None, wins: bool, said: str
) -> None:
    decided, reason = decide(rule, value, champion)
    assert decided is wins
    assert said in reason


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"metric": ""}, "metric:"),
        ({"metric": "auc", "min_absolute_change": -0.1}, "min_absolute_change:"),
        ({"metric": "auc", "min_relative_change": float("nan")}, "min_relative_change:"),
        ({"metric": "auc", "threshold": float("inf")}, "threshold:"),
    ],
)
def test_a_bad_rule_names_its_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(TuningConfigError, match=f"^{named}"):
        GateRule(**fields)


# -- against a real tracking server and registry (SQL store) --------------------------------------


def model_run(client: Any, experiment_id: str, auc: float | None) -> str:
    """A run that logged a model (its MLmodel file) and the metric the gate compares."""
    run_id = str(client.create_run(experiment_id).info.run_id)
    client.log_text(run_id, "flavors: {}\n", "model/MLmodel")
    if auc is not None:
        client.log_metric(run_id, "cv_roc_auc", auc)
    client.set_terminated(run_id)
    return run_id


def gate(server_uri: str, run_id: str, name: str, rule: GateRule | None = None, **kwargs: Any) -> Any:
    from airflow_provider_sparktune.tracking.store import open_client

    return gate_model(
        open_client(server_uri),
        tracking_uri=server_uri,
        shown_uri=server_uri,
        model_uri=f"runs:/{run_id}/model",
        name=name,
        rule=rule or GateRule("cv_roc_auc", min_absolute_change=0.005),
        tags={"sparktune.tuning_run_id": "tuning-run", "sparktune.data_uri": "/data/ds=2026-01-01/"},
        **kwargs,
    )


@pytest.fixture
def registry(mlflow_tracking_server: MlflowServer) -> tuple[Any, str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_tracking_server.uri)
    experiment_id = client.create_experiment(f"gate-{uuid.uuid4().hex[:8]}")
    return client, experiment_id, f"model-{uuid.uuid4().hex[:8]}"


@pytest.mark.integration
def test_first_night_on_a_model_name_that_does_not_exist_yet_promotes(
    mlflow_tracking_server: MlflowServer, registry: tuple[Any, str, str]
) -> None:
    client, experiment_id, name = registry
    run_id = model_run(client, experiment_id, 0.9)
    result = gate(mlflow_tracking_server.uri, run_id, name)
    assert (result.decision, result.version, result.aliases) == ("promote", "1", ("champion",))
    assert result.previous_champion_version is None and "no champion yet" in result.reason
    assert client.get_registered_model(name).aliases == {"champion": "1"}
    version = client.get_model_version_by_alias(name, "champion")
    assert version.run_id == run_id
    assert version.tags["sparktune.gate.decision"] == "promote"
    assert version.tags["sparktune.gate.reason"] == result.reason
    assert version.tags["sparktune.gate.champion_version"] == ""
    assert version.tags["sparktune.tuning_run_id"] == "tuning-run"
    assert version.tags["sparktune.data_uri"] == "/data/ds=2026-01-01/"


@pytest.mark.integration
def test_a_model_without_a_champion_promotes_its_first_gated_version(
    mlflow_tracking_server: MlflowServer, registry: tuple[Any, str, str]
) -> None:
    client, experiment_id, name = registry
    client.create_registered_model(name)  # registered by hand, one version, no alias
    by_hand = model_run(client, experiment_id, 0.99)
    client.create_model_version(name, f"runs:/{by_hand}/model", run_id=by_hand)
    result = gate(mlflow_tracking_server.uri, model_run(client, experiment_id, 0.9), name)
    assert (result.decision, result.version) == ("promote", "2")
    assert client.get_registered_model(name).aliases == {"champion": "2"}


@pytest.mark.integration
def test_a_better_night_moves_the_champion_alias(
    mlflow_tracking_server: MlflowServer, registry: tuple[Any, str, str]
) -> None:
    client, experiment_id, name = registry
    gate(mlflow_tracking_server.uri, model_run(client, experiment_id, 0.9), name)
    result = gate(mlflow_tracking_server.uri, model_run(client, experiment_id, 0.93), name)
    assert (result.decision, result.version, result.champion_version) == ("promote", "2", "2")
    assert (result.previous_champion_version, result.previous_champion_value) == ("1", 0.9)
    assert client.get_registered_model(name).aliases == {"champion": "2"}
    tags = client.get_model_version(name, "2").tags
    assert tags["sparktune.gate.champion_version"] == "1"
    assert float(tags["sparktune.gate.champion_value"]) == 0.9
    assert float(tags["sparktune.gate.value"]) == 0.93


@pytest.mark.integration
@pytest.mark.parametrize(("auc", "why"), [(0.85, "not better"), (0.903, "less than the required 0.005")])
def test_a_worse_night_or_one_within_the_margin_keeps_the_champion(
    mlflow_tracking_server: MlflowServer, registry: tuple[Any, str, str], auc: float, why: str
) -> None:
    client, experiment_id, name = registry
    gate(mlflow_tracking_server.uri, model_run(client, experiment_id, 0.9), name)
    result = gate(mlflow_tracking_server.uri, model_run(client, experiment_id, auc), name)
    assert (result.decision, result.version, result.aliases, result.champion_version) == (
        "keep",
        "2",
        (),
        "1",
    )
    assert why in result.reason
    assert client.get_registered_model(name).aliases == {"champion": "1"}
    tags = client.get_model_version(name, "2").tags
    assert (tags["sparktune.gate.decision"], tags["sparktune.gate.reason"]) == ("keep", result.reason)


@pytest.mark.integration
def test_without_auto_promote_a_winner_becomes_the_challenger_only(
    mlflow_tracking_server: MlflowServer, registry: tuple[Any, str, str]
) -> None:
    client, experiment_id, name = registry
    gate(mlflow_tracking_server.uri, model_run(client, experiment_id, 0.9), name)
    result = gate(
        mlflow_tracking_server.uri, model_run(client, experiment_id, 0.95), name, auto_promote=False
    )
    assert (result.decision, result.aliases, result.champion_version) == ("challenger", ("challenger",), "1")
    assert "waits for approval" in result.reason
    assert client.get_registered_model(name).aliases == {"champion": "1", "challenger": "2"}


@pytest.mark.integration
def test_a_model_run_without_the_metric_is_refused_before_registering(
    mlflow_tracking_server: MlflowServer, registry: tuple[Any, str, str]
) -> None:
    from mlflow.exceptions import MlflowException

    client, experiment_id, name = registry
    with pytest.raises(TuningConfigError, match="^metric: the model run .* has no metric 'cv_roc_auc'"):
        gate(mlflow_tracking_server.uri, model_run(client, experiment_id, None), name)
    with pytest.raises(MlflowException):
        client.get_registered_model(name)  # nothing registered


@pytest.mark.integration
def test_a_registry_that_refuses_fails_clearly_and_keeps_the_model_run(
    mlflow_tracking_server: MlflowServer, registry: tuple[Any, str, str]
) -> None:
    client, experiment_id, name = registry
    run_id = model_run(client, experiment_id, 0.9)
    with registry_refusing_proxy(mlflow_tracking_server.uri) as proxy:
        with pytest.raises(RegistryError) as raised:
            gate(proxy.uri, run_id, name)
    message = str(raised.value)
    assert message.startswith(f"registered_model_name {name!r}: the model registry at {proxy.uri} refused")
    assert (
        "Permission denied" in message
        and f"the model run {run_id} and the tuning results are kept" in message
    )
    assert proxy.refused >= 1
    assert client.get_run(run_id).info.status == "FINISHED"
    assert client.search_model_versions(f"name = '{name}'") == []
