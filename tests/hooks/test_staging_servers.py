"""DataStagingHook against real servers on 127.0.0.1: what an allowed prefix or a connection's port
lets through is judged by what the server is asked for, and by who logs in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from airflow_provider_sparktune.exceptions import StagingError
from airflow_provider_sparktune.hooks.staging import DataStagingHook
from tests.hooks.test_staging import parquet, set_conn

pytestmark = pytest.mark.integration


@contextmanager
def http_files(root: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server (a thread of this test) serving ``root``; yields its URL and the paths
    it was asked for."""
    import functools
    import http.server
    import threading

    from tests.servers import free_port

    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def send_head(self) -> Any:
            asked.append(self.path)
            return super().send_head()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", free_port()), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


ESCAPES = [
    "public/%2e%2e/private/x.csv",  # the case: yarl decodes it and fetches /private/x.csv
    "public/%2E%2E/private/x.csv",
    "public/.%2e/private/x.csv",
    "public/%2e./private/x.csv",
]


@pytest.mark.parametrize("escape", ESCAPES)
def test_an_encoded_parent_step_does_not_leave_the_allowed_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, escape: str
) -> None:
    """A real HTTP server behind the prefix: the private file is never asked for."""
    for folder in ("public", "private"):
        (tmp_path / folder).mkdir()
        pd.DataFrame({"x": [1.0, 2.0]}).to_csv(tmp_path / folder / "x.csv", index=False)
    with http_files(tmp_path) as (url, asked):
        set_conn(monkeypatch, "web", extra={"allowed_prefixes": [f"{url}/public/"]})
        hooks = {
            "allowed_prefixes": DataStagingHook(None, allowed_prefixes=[f"{url}/public/"]),
            "data_conn_id 'web': extra.allowed_prefixes": DataStagingHook("web"),
        }
        for where, hook in hooks.items():
            assert hook.plan(f"{url}/public/x.csv").size_bytes > 0  # the prefix itself is readable
            with pytest.raises(StagingError) as caught:
                hook.plan(f"{url}/{escape}")
            assert str(caught.value).startswith(
                f"data: '{url}/{escape}' is not under the prefixes {where} allows ('{url}/public/'): its "
                "path has a '..' segment once percent-decoded, which the filesystem or the server "
                "resolves, climbing out of any prefix; write the path without '.' or '..' segments"
            ), caught.value
        assert asked and not any("private" in path for path in asked), asked


def test_a_connection_without_a_port_sends_its_credentials_to_the_default_port_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real FTP server on another port of the connection's host never sees the login."""
    from tests.servers import ftp_server

    served = tmp_path / "served"
    served.mkdir()
    parquet(served / "x.parquet")
    with ftp_server(served, "ann", "pw-31c9") as ftp:
        set_conn(monkeypatch, "files", host="127.0.0.1", login="ann", password="pw-31c9")  # no port
        with pytest.raises(StagingError) as caught:
            DataStagingHook("files").plan(ftp.uri("x.parquet"))
        assert str(caught.value) == (
            f"data '{ftp.uri('x.parquet')}': port {ftp.port} is not the port of data_conn_id 'files' (21: "
            "the connection names no port, so ftp's default port), whose login, password and options go "
            f"only to that server; read the data from port 21, or use a connection whose port is {ftp.port}"
        )
        assert (ftp.logins, ftp.refused) == (0, 0)  # nothing was sent
        set_conn(monkeypatch, "files", host="127.0.0.1", port=ftp.port, login="ann", password="pw-31c9")
        assert DataStagingHook("files").plan(ftp.uri("x.parquet")).size_bytes > 0
        assert ftp.logins >= 1 and ftp.refused == 0
