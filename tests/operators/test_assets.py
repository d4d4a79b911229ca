from __future__ import annotations

import warnings

import pytest

from airflow_provider_sparktune.operators.assets import model_asset, redact_uri, tuning_asset


@pytest.mark.unit
def test_asset_uris_use_the_provider_scheme_and_are_accepted_as_they_are() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Airflow warns about URIs it has to rewrite
        asset = tuning_asset("nightly.tune")
        model = model_asset("fraud model/v2")
    assert (asset.uri, asset.name) == ("sparktune://tuning/nightly.tune", "sparktune.tuning.nightly.tune")
    assert model.uri == "sparktune://model/fraud%20model%2Fv2/champion"
    assert model_asset("m", alias="challenger").uri == "sparktune://model/m/challenger"
    assert tuning_asset("a.b") == tuning_asset("a.b")  # DAGs declare it independently and still meet


@pytest.mark.unit
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://user:secret@mlflow:5000/", "http://mlflow:5000/"),
        ("https://token@mlflow.example.com/path?x=1", "https://mlflow.example.com/path?x=1"),
        ("s3://key:secret@bucket/features/", "s3://bucket/features/"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("abfss://box@acct.dfs.core.windows.net/f", "abfss://box@acct.dfs.core.windows.net/f"),
        ("abfs://box:key@acct.dfs.core.windows.net/f", "abfs://acct.dfs.core.windows.net/f"),
        ("/data/features", "/data/features"),
        ("http://mlflow:5000", "http://mlflow:5000"),
        (None, None),
    ],
)
def test_redact_uri_drops_user_and_password(uri: str | None, expected: str | None) -> None:
    assert redact_uri(uri) == expected
