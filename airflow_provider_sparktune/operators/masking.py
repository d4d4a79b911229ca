"""Airflow's secrets masker, fed by this provider: what it hides in task logs and rendered fields.

The provider's own redactor (``redaction.py``) hides credentials in what it writes. A library's
message (a filesystem's, a server's) may quote a URI's login in its own words, and the UI shows the
rendered template fields as they are: registering the URI's secrets with Airflow's masker covers
both, for this task's log and its rendered fields.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_sparktune.redaction import SafeUri


def mask_secrets(text: str) -> str:
    """Airflow's secrets masker over a text bound for MLflow: connection passwords, masked variables."""
    from airflow.sdk._shared.secrets_masker import redact

    return str(redact(text))


def mask_uri_secrets(uri: Any) -> None:
    """Register a URI's own secrets (userinfo, credential query values, in each encoding) with the
    masker; anything that is not a URI string (a staging plan, an XComArg) registers nothing."""
    if not isinstance(uri, (str, SafeUri)):
        return
    from airflow.sdk.log import mask_secret

    for secret in SafeUri(uri).secrets:
        mask_secret(secret)
