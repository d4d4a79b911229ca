"""A connection id the DAG names and Airflow cannot find: an error, unless it is the hook's default.

A typo in ``spark_conn_id`` must not quietly run Spark on the Airflow worker, nor one in
``mlflow_conn_id`` log to a local store. The embedded fallback is for the default ids only (the
examples and ``make demo`` run with no connection set), and it says so in the task log as a warning.
"""

from __future__ import annotations

from typing import Any


def env_var(conn_id: str) -> str:
    """The environment variable Airflow reads the connection from."""
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def no_such_connection(field: str, conn_id: str, default: str, fallback: str) -> str:
    """The error text for a missing, non-default connection: the field, why, and both fixes."""
    return (
        f"{field} {conn_id!r}: no such Airflow connection; create it (Admin > Connections, or "
        f"{env_var(conn_id)}) or leave {field} at its default {default!r} to {fallback}"
    )


def warn_fallback(log: Any, what: str, conn_id: str, using: str, how: str) -> None:
    """The task log's warning that the default connection is absent and what runs instead."""
    log.warning(
        "%s connection %r is not set: %s. %s: create it (Admin > Connections, or %s)",
        what,
        conn_id,
        using,
        how,
        env_var(conn_id),
    )
