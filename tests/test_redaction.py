from __future__ import annotations

import pytest

from airflow_provider_sparktune.redaction import redact_uri, redact_values

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("ftp://ann:pw-7f3a@127.0.0.1:21/x.parquet", "ftp://127.0.0.1:21/x.parquet"),
        ("http://user:token@mlflow:5000", "http://mlflow:5000"),
        ("https://TOKEN@git.example.com/repo", "https://git.example.com/repo"),
        ("simplecache::sftp://ann:pw@host/x", "simplecache::sftp://host/x"),
        ("https://acct.blob/x?sv=1&sig=AbC%2F&se=2", "https://acct.blob/x?sv=1&sig=***&se=2"),
        ("s3://bucket/x?X-Amz-Signature=abc", "s3://bucket/x?X-Amz-Signature=***"),
        ("OSError: cannot open ftp://ann:pw@h/x: refused", "OSError: cannot open ftp://h/x: refused"),
        (
            "abfs://container@account.dfs.core.windows.net/x",
            "abfs://container@account.dfs.core.windows.net/x",
        ),
        ("abfs://name:key@account/x", "abfs://account/x"),
        ("s3://bucket/features/", "s3://bucket/features/"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("local[*]", "local[*]"),
    ],
)
def test_credentials_leave_every_uri(text: str, redacted: str) -> None:
    assert redact_uri(text) == redacted


def test_every_string_of_a_plan_is_redacted() -> None:
    plan = {"uri": "ftp://a:b@h/x", "size_bytes": 1, "files": ["ftp://a:b@h/x/1"], "reason": None}
    assert redact_values(plan) == {
        "uri": "ftp://h/x",
        "size_bytes": 1,
        "files": ["ftp://h/x/1"],
        "reason": None,
    }
