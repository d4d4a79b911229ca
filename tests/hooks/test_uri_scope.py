"""Allowed prefixes judged on the URL the filesystem fetches: decoded, dot-segments resolved."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_sparktune.hooks.uri_scope import (
    control_character,
    describe_control,
    dot_segment,
    fetched,
    in_scope,
    refusal,
)

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


# -- control characters, raw or percent-encoded -------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "char", "level"),
    [
        ("s3://bucket/x%00.csv", "\x00", 1),
        ("ftp://files.example.com/x%0a.csv", "\n", 1),
        ("ftp://files.example.com/x%0D%0ARETR%20/etc/passwd", "\r", 1),
        ("https://files.example.com/x%1f", "\x1f", 1),
        ("https://files.example.com/x%7f", "\x7f", 1),
        ("https://files.example.com/x%C2%85", "\x85", 1),  # C1: NEL, a line break to str.splitlines
        ("https://files.example.com/x%250a", "\n", 2),  # a server that decodes twice
        ("/data/x\ny.csv", "\n", 0),
        ("s3://bucket/x\t.csv", "\t", 0),
    ],
)
def test_a_control_character_is_found_raw_or_encoded(uri: str, char: str, level: int) -> None:
    assert control_character(uri) == (char, level)


def test_names_that_are_not_control_characters_pass() -> None:
    for uri in (
        "s3://bucket/a b/x.csv",
        "https://h/a%20b/%2e.x",
        "/data/été/x.csv",
        "s3://b/%25",
        "s3://b/%",
    ):
        assert control_character(uri) is None, uri
    assert describe_control("\n") == "U+000A line feed" and describe_control("\x1b") == "U+001B"


@settings(max_examples=500, deadline=None)
@given(
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.characters(categories=["Cc"]),
    st.text(st.characters(codec="utf-8"), max_size=20),
    st.integers(0, 3),
)
def test_every_control_character_is_found_however_often_encoded(
    before: str, char: str, after: str, times: int
) -> None:
    hidden = char
    for _ in range(times):
        hidden = quote(hidden, safe="")
    assert control_character(f"s3://bucket/{before}{hidden}{after}") is not None


# -- scheme and host compare case-insensitively where they name a server; paths never -----------------


def test_scheme_and_host_compare_case_insensitively_where_they_name_a_server() -> None:
    ftp = ["ftp://files.example.com/public/"]
    assert in_scope("ftp://FILES.Example.com/public/x.csv", ftp)
    assert in_scope("ftp://ann@Files.example.COM/public/x.csv", ftp)  # the login is not the place
    assert in_scope("ftp://files.example.com/public/x.csv", ["FTP://Files.Example.com/public/"])
    assert in_scope("SFTP://files.example.com/public/x", ["sftp://FILES.example.com/public/"])
    assert in_scope("HTTPS://Files.Example.com/public/x.csv", [PUBLIC])
    assert not in_scope("ftp://files.example.com/PUBLIC/x.csv", ftp)  # the path stays case-sensitive
    assert not in_scope("https://files.example.com/Public/x.csv", [PUBLIC])
    assert in_scope("S3://bucket/public/x", ["s3://bucket/public/"])  # schemes: always
    assert in_scope("gs://Bucket/public/x", ["gs://bucket/public/"])  # GCS names are lower case only
    assert in_scope("abfs://Data@Acct.dfs.core.windows.net/x", ["abfs://data@acct.dfs.core.windows.net/"])


def test_a_netloc_that_is_a_name_compares_as_written() -> None:
    # a legacy S3 bucket may hold capitals: 'Bucket' is another bucket
    assert not in_scope("s3://Bucket/public/x", ["s3://bucket/public/"])
    assert not in_scope("memory://DATA/public/x", ["memory://data/public/"])  # memory:// is a path
    # before the last '@' is a place, not a login: an Azure container, a GitHub org and repository
    assert not in_scope(
        "abfs://secret@acct.dfs.core.windows.net/features/x",
        ["abfs://public@acct.dfs.core.windows.net/features/"],
    )
    assert not in_scope("github://evil:repo@main/x.csv", ["github://org:repo@main/"])
    assert fetched("github://org:repo@main/x.csv") == "github://org:repo@main/x.csv"


SERVER_BASES = ["ftp://files.example.com/", "sftp://files.example.com/", "https://files.example.com/"]


def _case_variant(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def server_uris(draw: st.DrawFn) -> tuple[str, str, bool]:
    """(prefix, uri, whether the prefix's own path kept its case)."""
    base = draw(st.sampled_from(SERVER_BASES))
    scheme, _, host = base.rstrip("/").partition("://")
    folder = _case_variant(draw, "public") if draw(st.booleans()) else "public"
    rest = _case_variant(draw, draw(st.sampled_from(["x.csv", "a/b.parquet", "Mixed/X.csv"])))
    uri = f"{_case_variant(draw, scheme)}://{_case_variant(draw, host)}/{folder}/{rest}"
    return f"{base}public/", uri, folder == "public"


@settings(max_examples=400, deadline=None)
@given(server_uris())
def test_a_case_variant_of_scheme_and_host_is_the_same_place_and_of_the_path_is_not(
    case: tuple[str, str, bool],
) -> None:
    prefix, uri, same_path = case
    assert in_scope(uri, [prefix]) == same_path, uri
