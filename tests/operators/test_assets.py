from __future__ import annotations

import json
import warnings
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_sparktune.operators.assets import attach_extra, model_asset, tuning_asset
from airflow_provider_sparktune.operators.xcom import with_comparison
from airflow_provider_sparktune.redaction import redact_uri


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
        ("simplecache::ftp://user:pw@h/x", "simplecache::ftp://h/x"),
        (
            "https://acct.blob.core.windows.net/c/x?sv=1&sig=AbC%2F",
            "https://acct.blob.core.windows.net/c/x?sv=1&sig=***",
        ),
    ],
)
def test_redact_uri_drops_user_and_password(uri: str | None, expected: str | None) -> None:
    assert redact_uri(uri) == expected


CHAINED = "simplecache::ftp://user:pw-6e2f@h/x?sig=5ig-5ecret"


def night(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "best_params": {"source": "kept as it is"},
        "best_loss": 0.1,
        "mlflow": {"tracking_uri": "https://ann:tok-91ab@mlflow.example.com/?token=t0k3n", "run_id": "r"},
        "staging": {"uri": CHAINED, "mode": "reload", "reason": f"read {CHAINED} once per executor"},
    }
    return {**value, **overrides}


def assert_no_secret(value: Any) -> None:
    text = json.dumps(value)
    for secret in ("pw-6e2f", "5ig-5ecret", "tok-91ab", "t0k3n", "user:", "ann:"):
        assert secret not in text, text


@pytest.mark.unit
def test_the_xcom_value_and_asset_extra_carry_no_credentials() -> None:
    value = with_comparison(night(), tuning_key="k", improved=True, previous_best_loss=None)
    assert value["staging"]["uri"] == "simplecache::ftp://h/x?sig=***"
    assert value["mlflow"]["tracking_uri"] == "https://mlflow.example.com/?token=***"
    assert value["best_params"] == {"source": "kept as it is"} and value["tuning_key"] == "k"
    assert_no_secret(value)


@pytest.mark.unit
def test_attach_extra_redacts_whatever_it_is_given() -> None:
    """The extra of an asset event passes the redactor itself, whatever the caller built (a registry gate)."""
    asset = tuning_asset("k")
    events: dict[Any, Any] = defaultdict(SimpleNamespace)
    attach_extra({"outlet_events": events}, [asset], night(model_uri=f"models:/m/1 from {CHAINED}"))
    extra = events[asset].extra
    assert extra["staging"]["uri"] == "simplecache::ftp://h/x?sig=***"
    assert extra["model_uri"] == "models:/m/1 from simplecache::ftp://h/x?sig=***"
    assert extra["best_params"] == {"source": "kept as it is"}
    assert_no_secret(extra)
