"""The one redactor: URIs parsed (chains, userinfo with ``@ : ' " /``, percent-encoding), free text, SafeUri.

Generated inputs (hypothesis) check that no generated secret survives in any form, and that the
host and path do; examples pin each attack the issue names.
"""

from __future__ import annotations

import pickle
import re
from urllib.parse import quote, unquote

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from airflow_provider_sparktune.redaction import (
    SafeUri,
    is_credential_key,
    redact_text,
    redact_uri,
    redact_values,
)

pytestmark = pytest.mark.unit

# -- generators ------------------------------------------------------------------------------------

# Everything a password may hold: URL delimiters, quotes, percent signs and unicode (no whitespace:
# free text ends a URI at whitespace; whole URIs are checked with spaces too).
_SPECIAL = "@:'\"/%?#&=;+!$*,()[]~\\"
password_chars = st.one_of(
    st.sampled_from(_SPECIAL),
    st.characters(categories=("L", "N"), max_codepoint=0x2FFF),
)
# A user name holds anything but the delimiters that end an authority: a name with an unencoded /, ?
# or # is read as a host and a path, by every URL parser and by fsspec.
user_chars = st.one_of(
    st.sampled_from("@'\"%&=;+!$*,()~-._"),
    st.characters(categories=("L", "N"), max_codepoint=0x2FFF),
)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hosts = st.one_of(
    st.builds(".".join, st.lists(label, min_size=1, max_size=3)),
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", *[st.integers(0, 255)] * 4),
).flatmap(lambda host: st.sampled_from([host, f"{host}:21", f"{host}:8020", f"{host}:443"]))
segment = st.from_regex(r"[A-Za-z0-9._-]{1,12}", fullmatch=True)
paths = st.builds(lambda parts: "/" + "/".join(parts), st.lists(segment, max_size=4))
schemes = st.sampled_from(
    ["ftp", "sftp", "s3", "s3a", "https", "http", "hdfs", "webhdfs", "gs", "smb", "abfs"]
)
# fsspec chains in front of the storage URL (a::b::c)
chains = st.sampled_from(
    ["", "simplecache::", "filecache::", "blockcache::simplecache::", "zip://inner.csv::simplecache::"]
)
CREDENTIAL_KEYS = [
    "sig",
    "signature",
    "token",
    "access_token",
    "auth_token",
    "refresh_token",
    "client_secret",
    "secret",
    "access_key",
    "api-key",
    "apikey",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "password",
    "passwd",
    "pwd",
    "credential",
    "sas",
    "session",
    "SessionId",
    "Authorization",
]
PLAIN_KEYS = ["sv", "se", "sp", "versionId", "format", "x", "limit"]


def forms(secret: str) -> set[str]:
    """Every way a message might quote a secret: as written, decoded, encoded."""
    return {secret, unquote(secret), quote(secret, safe=""), quote(secret)}


def leaked(text: str, secret: str) -> list[str]:
    return [form for form in forms(secret) if form and form in text]


def chain_separator_in(text: str) -> bool:
    """``::scheme://`` is fsspec's chain separator: a secret holding one is read as a chain, as fsspec reads it."""
    return bool(re.search(r"::[A-Za-z][A-Za-z0-9+.-]*://", text))


# -- properties --------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    chain=chains,
    scheme=schemes,
    user=st.text(user_chars, min_size=1, max_size=10),
    password=st.text(st.one_of(password_chars, st.just(" ")), min_size=4, max_size=24),
    host=hosts,
    path=paths,
    encode=st.booleans(),
)
@example(chain="", scheme="ftp", user="user", password="p@ss", host="host", path="/x", encode=False)
@example(chain="", scheme="ftp", user="user", password="it's", host="host", path="/x", encode=False)
@example(chain="simplecache::", scheme="ftp", user="user", password="pw/x", host="h", path="/x", encode=False)
@example(chain="", scheme="ftp", user="ann", password="12/ab@c", host="h", path="/x", encode=False)
def test_a_uri_keeps_its_host_and_path_and_loses_its_userinfo(
    chain: str, scheme: str, user: str, password: str, host: str, path: str, encode: bool
) -> None:
    assume(not chain_separator_in(password))
    written = quote(password, safe="") if encode else password
    uri = f"{chain}{scheme}://{user}:{written}@{host}{path}"
    public = f"{chain}{scheme}://{host}{path}"
    for secret in (password, f"{user}:{written}"):
        assume(not any(form in public for form in forms(secret)))
    shown = redact_uri(uri)
    assert shown == public
    assert not leaked(shown, password)
    assert str(SafeUri(uri)) == public and repr(SafeUri(uri)) == repr(public)


@settings(max_examples=300, deadline=None)
@given(
    scheme=schemes,
    user=st.text(user_chars, min_size=1, max_size=10),
    password=st.text(password_chars, min_size=4, max_size=24),
    host=hosts,
    path=paths,
    quoting=st.sampled_from(["repr", "plain", "quoted", "paren"]),
)
def test_free_text_loses_every_userinfo_it_quotes(
    scheme: str, user: str, password: str, host: str, path: str, quoting: str
) -> None:
    """An exception message or a log line: the URI may be quoted by repr, by hand, or not at all."""
    assume(not chain_separator_in(password))
    uri = f"{scheme}://{user}:{password}@{host}{path}"
    public = f"{scheme}://{host}{path}"
    assume(not any(form in public + " OSError cannot open refused" for form in forms(password)))
    shown_uri = {"repr": repr(uri), "plain": uri, "quoted": f"'{uri}'", "paren": f"({uri})"}[quoting]
    text = f"OSError: cannot open {shown_uri}: refused\n  next line {shown_uri}"
    shown = redact_text(text)
    assert not leaked(shown, password), shown
    assert shown.count(public) == 2, shown
    assert redact_uri(text) == shown  # text that is not one URI is free text


@settings(max_examples=300, deadline=None)
@given(
    uri=st.builds(lambda s, h, p: f"{s}://{h}{p}", schemes, hosts, paths),
    params=st.lists(
        st.tuples(
            st.one_of(
                st.sampled_from(CREDENTIAL_KEYS).flatmap(
                    lambda key: st.sampled_from([key, key.upper(), key.lower(), key.replace("_", "-")])
                ),
                st.sampled_from(PLAIN_KEYS),
            ),
            st.text(st.characters(max_codepoint=0x2FFF, exclude_categories=("Cs",)), min_size=4, max_size=20),
        ),
        min_size=1,
        max_size=5,
    ),
    separator=st.sampled_from(["?", "#"]),
    in_text=st.booleans(),
)
def test_values_of_credential_query_keys_are_hidden_in_every_form(
    uri: str, params: list[tuple[str, str]], separator: str, in_text: bool
) -> None:
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params)
    expected = "&".join(
        f"{key}={'***' if key not in PLAIN_KEYS else quote(value, safe='')}" for key, value in params
    )
    secrets = [value for key, value in params if key not in PLAIN_KEYS]
    for secret in secrets:
        assume(not any(form in uri + expected for form in forms(secret)))
    written = f"{uri}{separator}{query}"
    shown = redact_text(f"cannot read {written!r}") if in_text else redact_uri(written)
    assert f"{uri}{separator}{expected}" in shown
    for secret in secrets:
        assert not leaked(shown, secret), shown


@settings(max_examples=200, deadline=None)
@given(
    scheme=schemes,
    password=st.text(password_chars, min_size=4, max_size=16),
    host=hosts,
    path=paths,
    sig=st.text(st.characters(categories=("L", "N")), min_size=4, max_size=12),
)
def test_safe_uri_is_redacted_in_every_text_form_and_raw_for_io(
    scheme: str, password: str, host: str, path: str, sig: str
) -> None:
    assume(not chain_separator_in(password))
    raw = f"{scheme}://ann:{password}@{host}{path}?sig={quote(sig)}"
    public = f"{scheme}://{host}{path}?sig=***"
    assume(not any(form in public for s in (password, sig) for form in forms(s)))
    uri = SafeUri(raw)
    assert uri.raw == raw
    logged = "%s %r" % (uri, uri)  # noqa: UP031 - as logging formats its arguments
    for text in (str(uri), repr(uri), f"{uri}", f"{uri!r}", f"{uri:>80}", logged):
        assert public in text
        assert not leaked(text, password) and not leaked(text, sig)
    assert pickle.loads(pickle.dumps(uri)) == uri
    # a library's message that quotes the secrets themselves, not the URI
    said = uri.hide_in(f"530 login as ann with {password} refused (sig {sig}, {quote(password)})")
    assert not leaked(said, password) and not leaked(said, sig), said


# -- each attack of the issue ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        # an @ in the password: everything up to the last @ before the host goes
        ("ftp://user:p@ss@host/x", "ftp://host/x"),
        # a quote in the password
        ("ftp://user:it's@host/x", "ftp://host/x"),
        ('ftp://user:say"hi"@host/x', "ftp://host/x"),
        ("ftp://user:pa/ss@host/x", "ftp://host/x"),
        ("ftp://user:p%40ss%2Fx@host/x", "ftp://host/x"),
        ("ftp://user:a b@host/x", "ftp://host/x"),
        # chained fsspec URLs
        ("simplecache::ftp://user:pw@h/x", "simplecache::ftp://h/x"),
        ("filecache::s3://key:secret@bucket/x", "filecache::s3://bucket/x"),
        ("zip://inner.csv::simplecache::ftp://u:pw@h/x.zip", "zip://inner.csv::simplecache::ftp://h/x.zip"),
        # credential query keys, by their letters: sig, token, secret, key, pass, auth, session, ...
        ("https://acct.blob/x?sv=1&sig=AbC%2F&se=2", "https://acct.blob/x?sv=1&sig=***&se=2"),
        (
            "s3://bucket/x?X-Amz-Signature=abc&X-Amz-Credential=AKIA",
            "s3://bucket/x?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        (
            "https://h/d?client_secret=a1&access_key=b2&auth_token=c3&refresh_token=d4&api-key=e5&x=1",
            "https://h/d?client_secret=***&access_key=***&auth_token=***&refresh_token=***&api-key=***&x=1",
        ),
        ("https://h/d#access_token=t0k3n&state=1", "https://h/d#access_token=***&state=1"),
        ("sc://spark:15002/;token=abc;user_id=ann", "sc://spark:15002/;token=***;user_id=ann"),
        # what stays
        (
            "abfs://container@account.dfs.core.windows.net/x",
            "abfs://container@account.dfs.core.windows.net/x",
        ),
        ("abfss://box@acct.dfs.core.windows.net/f", "abfss://box@acct.dfs.core.windows.net/f"),
        ("abfs://name:key@account/x", "abfs://account/x"),
        ("abfs://name:key@account/x", "abfs://account/x"),
        ("s3://bucket/users/alice@example.com/x", "s3://bucket/users/alice@example.com/x"),
        ("https://h/p?email=bob@example.com", "https://h/p?email=bob@example.com"),
        ("s3://bucket/features/ds=1/", "s3://bucket/features/ds=1/"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("local[*]", "local[*]"),
        ("/data/features", "/data/features"),
        # earlier cases
        ("ftp://ann:pw-7f3a@127.0.0.1:21/x.parquet", "ftp://127.0.0.1:21/x.parquet"),
        ("http://user:token@mlflow:5000", "http://mlflow:5000"),
        ("https://TOKEN@git.example.com/repo", "https://git.example.com/repo"),
        ("simplecache::sftp://ann:pw@host/x", "simplecache::sftp://host/x"),
    ],
)
def test_credentials_leave_every_uri(text: str, redacted: str) -> None:
    assert redact_uri(text) == redacted
    assert redact_uri(redacted) == redacted  # redacting twice changes nothing


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("OSError: cannot open ftp://ann:pw@h/x: refused", "OSError: cannot open ftp://h/x: refused"),
        ("data 'ftp://user:it\\'s@host/x': refused", "data 'ftp://host/x': refused"),
        ('data "ftp://user:it\'s@host/x": refused', 'data "ftp://host/x": refused'),
        ("data 'ftp://user:p@ss@host/x': gone", "data 'ftp://host/x': gone"),
        ("data 'https://h/x?sig=abc': refused", "data 'https://h/x?sig=***': refused"),
        ("two: ftp://a:b1@h/x and sftp://c:d2@k/y.", "two: ftp://h/x and sftp://k/y."),
        ("no uri here, just text: a@b", "no uri here, just text: a@b"),
    ],
)
def test_free_text_loses_the_credentials_of_each_uri_it_quotes(text: str, redacted: str) -> None:
    assert redact_text(text) == redacted


@pytest.mark.parametrize("key", CREDENTIAL_KEYS + ["Client-Secret", "ACCESS_KEY", "api_key", "%73ig"])
def test_credential_keys_are_recognised_by_their_letters(key: str) -> None:
    assert is_credential_key(key)


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_other_keys_keep_their_values(key: str) -> None:
    assert not is_credential_key(key)


def test_every_string_of_a_plan_is_redacted() -> None:
    plan = {"uri": "ftp://a:b@h/x", "size_bytes": 1, "files": ["ftp://a:b@h/x/1"], "reason": None}
    assert redact_values(plan) == {
        "uri": "ftp://h/x",
        "size_bytes": 1,
        "files": ["ftp://h/x/1"],
        "reason": None,
    }
    assert redact_values({"uri": SafeUri("simplecache::ftp://u:pw@h/x")}) == {"uri": "simplecache::ftp://h/x"}


def test_a_safe_uri_is_immutable_and_compares_by_its_raw_text() -> None:
    uri = SafeUri("ftp://ann:pw-1234@h/x")
    with pytest.raises(AttributeError):
        uri.raw = "ftp://h/y"  # type: ignore[misc]
    assert uri == SafeUri(uri) and uri != SafeUri("ftp://h/x") and uri != "ftp://h/x"
    assert uri.secrets and "pw-1234" in uri.secrets
    assert SafeUri("/data/x").secrets == ()


@pytest.mark.parametrize(
    ("uri", "public", "secret"),
    [
        ("ftp://ann:pw\n1@h/x", "ftp://h/x", "pw\n1"),
        ("ftp://a\r\n:pw0@h", "ftp://h", "pw0"),
        ("ftp://ann:p\tw0@h/x", "ftp://h/x", "p\tw0"),
        ("https://h/x?sig=ab\ncd&a=1", "https://h/x?sig=***&a=1", "ab\ncd"),
        ("ftp://ann:pa ss@host/x", "ftp://host/x", "pa ss"),
    ],
)
def test_a_line_break_or_space_inside_one_uri_hides_all_of_its_secret(
    uri: str, public: str, secret: str
) -> None:
    """A raw line break or space in a userinfo or a query value does not end the part hidden."""
    for shown in (redact_uri(uri), str(SafeUri(uri))):
        assert shown == public
        assert not any(part in shown for part in re.split(r"\s", secret) if len(part) > 1)
