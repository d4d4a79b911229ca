from __future__ import annotations

import pytest

from airflow_provider_sparktune.get_provider_info import get_provider_info


@pytest.mark.unit
def test_every_declared_module_and_class_imports() -> None:
    import importlib

    info = get_provider_info()
    sections = ("operators", "hooks", "sensors", "triggers")
    modules = [m for section in sections for item in info[section] for m in item["python-modules"]]
    assert "airflow_provider_sparktune.sensors.staged_data" in modules
    assert "airflow_provider_sparktune.triggers.staged_data" in modules
    assert "airflow_provider_sparktune.hooks.staging" in modules
    for module in modules:
        importlib.import_module(module)
    hook_classes = [c["hook-class-name"] for c in info["connection-types"]]
    for dotted in [info["extra-links"][0], *hook_classes]:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted


@pytest.mark.integration
def test_providers_manager_finds_the_provider() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()  # the UI side: extra links and connection forms
    runtime = ProvidersManagerTaskRuntime()  # the task side: hooks by connection type
    assert "airflow-provider-sparktune" in manager.providers
    assert "airflow-provider-sparktune" in runtime.providers
    assert "airflow_provider_sparktune.links.MlflowRunLink" in manager.extra_links_class_names
    hook = runtime.hooks["mlflow"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_sparktune.hooks.mlflow.MlflowHook"
    assert hook.connection_id_attribute_name == "mlflow_conn_id"
    form = manager.field_behaviours["mlflow"]
    assert set(form["hidden_fields"]) == {"schema", "login", "port", "extra"}
    assert form["relabeling"] == {"host": "Tracking URI", "password": "Token"}
    staging = runtime.hooks["fsspec"]
    assert staging is not None
    assert staging.hook_class_name == "airflow_provider_sparktune.hooks.staging.DataStagingHook"
    assert staging.connection_id_attribute_name == "data_conn_id"
    assert manager.field_behaviours["fsspec"]["relabeling"]["password"] == "Secret"
    # (s)ftp, smb, hdfs and http credentials go only to the host the connection names
    assert {"host", "port"}.isdisjoint(manager.field_behaviours["fsspec"]["hidden_fields"])


@pytest.mark.unit
def test_description_and_docs_url_match_the_package_metadata() -> None:
    tomllib = pytest.importorskip("tomllib")
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    info = get_provider_info()
    assert info["description"] == project["description"]
    assert info["integrations"][0]["external-doc-url"] == project["urls"]["Documentation"]
    # what it does today: the resident dispatcher by default, SparkTrials only as the option
    assert "resident dispatcher (or hyperopt's SparkTrials)" in info["description"]
