"""The names MLflow accepts for params and metrics, checked before a run writes any.

MLflow refuses a whole request when one name breaks its rules, and refuses it again on every retry:
a space key or an objective metric named ``precision@10`` would otherwise hold up every write of
the run queued behind it. The rules are MLflow's (``mlflow.utils.validation``), without importing it.
"""

from __future__ import annotations

import posixpath
import re

MAX_NAME_LENGTH = 250
_ALLOWED = re.compile(r"[/\w.\- :]+")
ALLOWED_TEXT = "letters, digits, _ - . / : and spaces"


def name_problem(name: str) -> str | None:
    """Why MLflow would refuse ``name`` as a param or metric name; None when it accepts it."""
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"is {len(name)} characters long, over MLflow's {MAX_NAME_LENGTH}"
    if not _ALLOWED.fullmatch(name):
        return f"holds characters MLflow refuses in a name (it allows {ALLOWED_TEXT})"
    normal = posixpath.normpath(name)
    if normal != name or normal == "." or normal.startswith(("..", "/")):
        return "is a path MLflow refuses (a leading /, // or a . or .. part)"
    return None


def suggested_name(name: str) -> str:
    """``name`` with every character MLflow refuses replaced by ``_``."""
    return re.sub(r"[^/\w.\- :]", "_", name).strip("/") or "_"
