"""Allowed prefixes judged on the URL the filesystem fetches: decoded, dot-segments resolved."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sparktune.hooks.uri_scope import dot_segment, fetched, in_scope, refusal

pytestmark = pytest.mark.unit

PUBLIC = "https://files.example.com/public/"


@pytest.mark.parametrize(
    "uri",
    [
        "https://files.example.com/public/%2e%2e/private/x.csv",  # the case
        "https://files.example.com/public/%2E%2E/private/x.csv",
        "https://files.example.com/public/.%2e/private/x.csv",
        "https://files.example.com/public/%2e./private/x.csv",
        "https://files.example.com/public/..%2fprivate/x.csv",  # a server may decode %2f and resolve
        "https://files.example.com/public%2f..%2fprivate/x.csv",
        "https://files.example.com/public/%252e%252e/private/x.csv",  # decoded twice
        "https://files.example.com/public/..%5cprivate/x.csv",  # a backslash, encoded
        "https://files.example.com/public/..\\private/x.csv",
        "https://files.example.com/public/..;/private/x.csv",  # a path parameter: '..' to Tomcat
        "https://files.example.com/public/./../private/x.csv",
        "https://files.example.com/public/%2e/x.csv",
        "simplecache::https://files.example.com/public/%2e%2e/private/x.csv",
    ],
)
def test_an_encoded_parent_step_is_refused(uri: str) -> None:
    why = refusal(uri, [PUBLIC])
    assert why is not None and "segment" in why.reason, why
    assert why.fix == "write the path without '.' or '..' segments"


def test_the_url_fetched_is_the_one_compared() -> None:
    # what fsspec's HTTP filesystem fetches (yarl, encoded=False): the escape is real
    assert fetched("https://files.example.com/public/%2e%2e/private/x.csv") == (
        "https://files.example.com/private/x.csv"
    )
    assert fetched("https://user:pw@Files.Example.com:443/public/x") == "https://files.example.com/public/x"
    assert fetched("file://~/x").startswith("/") and not fetched("file://~/x").startswith("file://~")
    assert fetched("ftp://ann:pw@files.example.com:2121/a%2e%2e") == "ftp://files.example.com:2121/a%2e%2e"
    assert in_scope("https://files.example.com/pub%6cic/x.csv", [PUBLIC])  # %6c is l: fetched as /public/
    assert in_scope("simplecache::https://files.example.com/public/x.csv", [PUBLIC])
    assert in_scope("https://FILES.example.com:443/public/x.csv", [PUBLIC])
    assert not in_scope("https://files.example.com:8443/public/x.csv", [PUBLIC])
    assert not in_scope("/data/pub%6cic/x", ["/data/public/"])  # a local path is read as written
    assert not in_scope("file://~/x", ["/data/"])
    why = refusal("zip://a.csv::https://files.example.com/public/x.zip", [PUBLIC])
    assert why is not None and "not 'zip::'" in why.reason and why.fix == "read the data by its own URL"


def test_dot_segments_in_any_decoding() -> None:
    assert dot_segment("s3://bucket/features/x.parquet") is None
    assert dot_segment("s3://bucket/features/v1.2/..x/x...y") is None  # dots inside names are names
    assert dot_segment("s3://bucket/a/%2e%2e/b") == ("..", 1)
    assert dot_segment("s3://bucket/a/%252E%252e/b") == ("..", 2)
    assert dot_segment("/a/. /b") == (". ", 0)
    assert dot_segment("/a/...;x/b") == ("...", 0)


# -- property: whatever the check accepts, every way of reading it lies under an allowed prefix ------

PREFIXES = [PUBLIC, "ftp://files.example.com/public/", "s3://bucket/public/", "/data/public/"]
BASES = [
    "https://files.example.com/",
    "https://Files.Example.COM:443/",
    "https://user:pw@files.example.com/",
    "simplecache::https://files.example.com/",
    "ftp://files.example.com/",
    "s3://bucket/",
    "/data/",
    "file:///data/",
]
TOKENS = ["public", "private", "..", ".", "", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%2e", "%252e%252e"]
TOKENS += [
    "%2f",
    "%2F",
    "%5c",
    "\\",
    "..\\",
    "..;",
    ";x",
    "a%2fb",
    "x y",
    "%20",
    "%25",
    "v1.2",
    "...",
    "x.csv",
]


def _worst_case(uri: str) -> str:
    """Every reading a filesystem or server could make: decoded (repeatedly), ``\\`` as ``/``, path
    parameters dropped, dot-segments resolved, the host lower case, userinfo and default port gone."""
    target = uri.split("::")[-1]
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", target)
    if match is None or match.group(1).lower() in ("file", "local"):
        path = target.split("://", 1)[-1] if match else target
        server = ""
    else:
        parts = urlsplit(target)
        netloc = parts.netloc.rsplit("@", 1)[-1].lower()
        server = f"{parts.scheme.lower()}://{netloc.removesuffix(':443')}"
        path = parts.path if parts.scheme.lower() in ("http", "https") else target.split(parts.netloc, 1)[1]
    for _ in range(6):
        path = unquote(path)
    segments = [s.split(";", 1)[0] for s in path.replace("\\", "/").split("/")]
    resolved = posixpath.normpath("/" + "/".join(segments))
    return server + resolved


def _covered(uri: str, prefix: str) -> bool:
    resolved, base = _worst_case(uri), _worst_case(prefix)
    return resolved == base or resolved.startswith(base.rstrip("/") + "/")


@st.composite
def uris(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(["public/", "public/", "public/", "public", "pub%6cic/", "public%2f", ""]))
    segments = draw(st.lists(st.sampled_from(TOKENS) | st.text("abp.%/\\;2eEfF5c ", max_size=6), max_size=6))
    path = head + "/".join(segments)
    if draw(st.booleans()):  # percent-encode some characters, maybe twice
        safe = draw(st.sampled_from(["/", "", "/%", "%"]))
        path = quote(path, safe=safe)
        if draw(st.booleans()):
            path = quote(path, safe="/")
    return draw(st.sampled_from(BASES)) + path


@settings(max_examples=1500, deadline=None)
@given(uris())
def test_an_accepted_uri_resolves_under_an_allowed_prefix(uri: str) -> None:
    if in_scope(uri, PREFIXES):
        assert any(_covered(uri, p) for p in PREFIXES), uri
