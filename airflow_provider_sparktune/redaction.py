"""Credentials out of what a run writes: ``user:password@`` in URIs, signed query strings.

A URI from run conf or a connection may carry credentials (``ftp://user:pw@host/x``,
``http://user:token@mlflow:5000``, an Azure SAS ``?sig=``). XCom, MLflow params and tags, log lines
and the extra link are read by people who may not hold them, so every URI is written without them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Redact = Callable[[str], str]

# scheme://user:password@  ->  scheme://   (also inside longer text such as a traceback)
_USERINFO = re.compile(r"(?P<scheme>\b(?P<protocol>[A-Za-z][\w+.-]*)://)(?P<userinfo>[^\s/@?#'\"]*)@")
# Azure URIs name their container before the @ (abfs://container@account.dfs.core.windows.net/)
_CONTAINER_SCHEMES = ("abfs", "abfss", "az", "adl", "wasb", "wasbs")
# ?sig=...&token=...  ->  ?sig=***&token=***
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:sig|signature|token|access_token|password|passwd|secret|key|api_key|apikey|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token|x-goog-signature|x-goog-credential)=)[^&;#\s'\"]*",
    re.IGNORECASE,
)


def redact_uri(text: str) -> str:
    """``text`` with every URI's ``user:password@`` removed and signed query values hidden."""
    if "://" not in text and "=" not in text:
        return text
    return _SECRET_QUERY.sub(r"\g<key>***", _USERINFO.sub(_without_userinfo, text))


def _without_userinfo(match: re.Match[str]) -> str:
    if match["protocol"].lower() in _CONTAINER_SCHEMES and ":" not in match["userinfo"]:
        return match[0]
    return match["scheme"]


def redact_values(value: Any, redact: Redact = redact_uri) -> Any:
    """Every string in a JSON-like value (a staging plan, a trial record) through ``redact``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_values(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_values(v, redact) for v in value)
    return value
