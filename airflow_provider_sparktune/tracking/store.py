"""The embedded MLflow SQLite store, safe when many tuning tasks start at the same moment.

MLflow creates a SQLite store's schema the first time a process opens it, with nothing to stop a
second process doing the same: two tasks that open a fresh store together both run the migrations
and one of them fails (``table _alembic_tmp_experiments already exists``). And SQLite has a single
writer: a write that loses the race for the lock fails with ``database is locked``.

So every process of this provider opens a SQLite store through :func:`open_client`: the first open
in a process happens under an exclusive file lock beside the database (``mlflow.db.lock``), which
creates the schema exactly once and switches the journal to WAL so that readers never wait for the
writer; and every call made through the returned client waits out a locked database instead of
failing. A tracking server (``http://``) needs none of this and gets a plain ``MlflowClient``.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCKED_MARKERS = ("database is locked", "database table is locked")
LOCK_WAIT_S = 300.0  # longest a call waits for other writers before its error is raised
_FIRST_DELAY_S, _MAX_DELAY_S = 0.1, 2.0

_prepared: set[Path] = set()
_prepared_lock = threading.Lock()


def telemetry_off_unless_asked() -> None:
    """Keep MLflow's usage telemetry off in this process unless ``MLFLOW_DISABLE_TELEMETRY`` says otherwise.

    Call it before MLflow is imported. On import MLflow fetches its telemetry settings in a thread
    that, when the fetch fails (a worker without internet access) or says no, removes an environment
    variable while the task's own MLflow requests read the environment: the request then fails with
    a bare ``KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'``, and the task with it.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def embedded_tracking_uri() -> str:
    """The SQLite store under ``AIRFLOW_HOME`` used when nothing else is configured."""
    import os

    home = Path(os.environ.get("AIRFLOW_HOME") or Path.home() / "airflow")
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


def is_server_uri(tracking_uri: str) -> bool:
    """A tracking server (``http(s)://``), as opposed to a store opened in this process."""
    return urlparse(tracking_uri).scheme in ("http", "https")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, or None for any other store."""
    if urlparse(tracking_uri).scheme != "sqlite" or not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :]).resolve()


def is_locked_error(err: BaseException) -> bool:
    """True for SQLite's ``database is locked``, however MLflow and SQLAlchemy wrapped it."""
    seen: BaseException | None = err
    while seen is not None:
        if any(marker in str(seen) for marker in LOCKED_MARKERS):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def wait_out_lock(call: Callable[[], T], what: str, timeout_s: float = LOCK_WAIT_S) -> T:
    """Run ``call``, retrying with backoff while the database is locked; other errors pass through.

    A locked write was rolled back as a whole, so running it again cannot apply it twice.
    """
    deadline = time.monotonic() + timeout_s
    delay, attempts = _FIRST_DELAY_S, 0
    while True:
        try:
            result = call()
        except Exception as err:
            if not is_locked_error(err) or time.monotonic() + delay > deadline:
                raise
            attempts += 1
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY_S)
            continue
        if attempts:
            log.info(
                "MLflow store was locked by another writer: %s went through after %d retries", what, attempts
            )
        return result


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``, held by this process for the block (released if it dies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_store(tracking_uri: str) -> None:
    """Create a SQLite store's schema once, under the lock beside it, and turn on WAL; no-op otherwise."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return
    with _prepared_lock:
        if db in _prepared:
            return
        from mlflow import MlflowClient

        with exclusive_lock(db.with_name(db.name + ".lock")):
            MlflowClient(tracking_uri)  # building the client opens the store: schema created or upgraded
            with sqlite3.connect(db, timeout=60) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
        _prepared.add(db)


class LockPatientClient:
    """An ``MlflowClient`` whose every call waits out a locked SQLite database instead of failing."""

    def __init__(self, client: Any, timeout_s: float = LOCK_WAIT_S) -> None:
        self._client = client
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def patient(*args: Any, **kwargs: Any) -> Any:
            return wait_out_lock(lambda: attribute(*args, **kwargs), name, self._timeout_s)

        return patient


def open_client(tracking_uri: str) -> Any:
    """The client every part of this provider uses: prepared and patient for SQLite, plain for servers."""
    from mlflow import MlflowClient

    if sqlite_path(tracking_uri) is None:
        return MlflowClient(tracking_uri=tracking_uri)
    wait_out_lock(lambda: prepare_store(tracking_uri), "creating the store")
    return LockPatientClient(MlflowClient(tracking_uri=tracking_uri))


class _DropLockedErrors(logging.Filter):
    """MLflow logs every locked write with a traceback at ERROR; the retry above makes those noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_locked_error(exc):
            return False
        try:
            return not any(marker in record.getMessage() for marker in LOCKED_MARKERS)
        except Exception:
            return True


def quiet_locked_errors() -> None:
    """Keep MLflow's per-attempt ``database is locked`` tracebacks out of the task log."""
    logger = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropLockedErrors) for f in logger.filters):
        logger.addFilter(_DropLockedErrors())


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_provider_sparktune.tracking.store URI``: create the store the way tasks do.

    ``mlflow ui`` and ``mlflow server`` create a fresh store's schema without the lock; run this first
    when one of them may open the store while tuning tasks start.
    """
    import argparse

    parser = argparse.ArgumentParser(description=(main.__doc__ or "").splitlines()[0])
    parser.add_argument("tracking_uri", help="sqlite:////absolute/path/mlflow.db (anything else: no-op)")
    args = parser.parse_args(argv)
    open_client(args.tracking_uri)
    print(f"MLflow store ready: {args.tracking_uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
