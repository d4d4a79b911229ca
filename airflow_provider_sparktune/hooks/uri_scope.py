"""Whether a URI stays under allowed prefixes, judged on the URL the filesystem really fetches.

A prefix compared with the text as written is walked around by encoding: fsspec's HTTP filesystem
hands the URL to yarl, which decodes ``%2e%2e`` and resolves dot-segments, so
``https://h/public/%2e%2e/private/x`` fetches ``https://h/private/x``; a server may decode ``%2f`` or
``%252e`` once more and resolve again. So a URI is in scope only when none of its decodings has a
dot-segment (an encoded ``..`` has no honest use in a dataset path) and both the URL the filesystem
fetches and its percent-decoded form lie under the same allowed prefix.

Scheme and host compare case-insensitively (RFC 3986) where the URI names a server or a name that is
lower case only; the path, and the netloc of any other protocol (an S3 bucket, ``memory://Dir``,
``github://org:repo@ref``), compare as written: the filesystem reads them case-sensitively.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

# Outer layers of a chained URL (``simplecache::https://...``) that only cache what the inner URL
# fetches; any other layer (an archive, a reference file system) is refused where prefixes apply.
CACHE_LAYERS = ("simplecache", "filecache", "blockcache")
LOCAL_PROTOCOLS = ("file", "local")
_HTTP_PROTOCOLS = ("http", "https")
# Protocols whose URI names the server it connects to (host, port, and who logs in): the netloc after
# the last '@' is a host, case-insensitive; what is before it is a login, not a place.
SERVER_PROTOCOLS = ("ftp", "sftp", "ssh", "smb", "hdfs", "webhdfs", "http", "https")
# Protocols whose netloc names a bucket, container or account that exists in lower case only (GCS
# buckets; Azure containers and account hosts): a case variant names the same one, or none. An S3
# bucket is left out on purpose: a legacy bucket may hold capitals, and 'MyBucket' is not 'mybucket'.
_LOWER_CASE_NAMES = ("gs", "gcs", "abfs", "abfss", "az")
_CONTROL_NAMES = {"\x00": "NUL", "\t": "tab", "\n": "line feed", "\r": "carriage return", "\x7f": "DEL"}
_MAX_DECODINGS = 5  # %25 nests: each decoding a server might apply is checked
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class Refusal:
    """Why a URI is out of scope, to follow the prefixes in an error message; ``fix`` None: the usual."""

    reason: str = ""
    fix: str | None = None
    reads: str | None = None  # the URL the filesystem fetches, when it is not the URI as written


def decodings(text: str) -> list[str]:
    """``text`` and each percent-decoding of it, until decoding changes nothing (or a bound)."""
    found = [text]
    for _ in range(_MAX_DECODINGS):
        decoded = unquote(found[-1])
        if decoded == found[-1]:
            break
        found.append(decoded)
    return found


def control_character(text: str) -> tuple[str, int] | None:
    """(character, how many percent-decodings it took) of the first control character, or None.

    C0 (``%00``, ``%0a``, ``%0d``, ...), DEL and C1, raw or encoded (once or more): no dataset path
    holds one, and a filesystem or server that decodes it ends a log line or a protocol command
    (an FTP command, an HTTP header) there.
    """
    for level, decoded in enumerate(decodings(text)):
        for char in decoded:
            if unicodedata.category(char) == "Cc":
                return char, level
    return None


def describe_control(char: str) -> str:
    """``U+000A line feed``: a control character named for an error message."""
    name = _CONTROL_NAMES.get(char)
    return f"U+{ord(char):04X}{' ' + name if name else ''}"


def dot_segment(text: str) -> tuple[str, int] | None:
    """(segment, how many percent-decodings it took) of the first ``.``/``..`` path segment, or None.

    Segments split at ``/`` and ``\\`` (Windows servers and some proxies take either), and what
    follows ``;`` is a path parameter (``..;/`` is ``..`` to Tomcat), so only the part before counts;
    ``...`` and ``.. `` count too (Windows drops trailing dots and spaces).
    """
    rest = text.split("://", 1)[-1] if _SCHEME.match(text) else text
    for level, decoded in enumerate(decodings(rest)):
        for segment in re.split(r"[/\\]", decoded):
            name = segment.split(";", 1)[0]
            if name and not name.strip(". "):
                return name, level
    return None


def chain(uri: str) -> tuple[list[str], str]:
    """(outer layers, the URL that is fetched) of a chained fsspec URL; plain URLs have no layers."""
    parts = uri.split("::")
    return parts[:-1], parts[-1]


def non_cache_layer(layers: Sequence[str]) -> str | None:
    """The first outer layer of a chain that is not a cache (``zip``), as fsspec names it; None when
    every layer is one of ``CACHE_LAYERS``."""
    for layer in layers:
        name = layer.strip().lower().split("://", 1)[0]
        if name not in CACHE_LAYERS:
            return name
    return None


def protocol(uri: str) -> str:
    """The protocol fsspec opens ``uri`` with, read as fsspec reads it; ``file`` for a path."""
    from fsspec.core import split_protocol

    return (split_protocol(uri)[0] or "file").lower()


def fetched(uri: str) -> str | None:
    """The URL the filesystem fetches for ``uri`` (no chain); None when it cannot parse it.

    HTTP(S): the URL yarl builds from it (fsspec's ``encoded=False``): decoded, dot-segments resolved,
    host lower case, default port dropped. Local paths: fsspec's own reading (``file://~/x`` is in
    the home directory), then normalized. Other protocols pass the path on as written, the scheme
    lower case. For the protocols that name a server, a URI's own ``user:password@`` names who
    reads, not where: it is left out, and the host is lower case. Elsewhere the netloc is a name
    (``abfs://container@account...``, ``github://org:repo@ref``): it stays, and only names that
    exist in lower case only are lowered.
    """
    kind = protocol(uri)
    if kind in _HTTP_PROTOCOLS:
        import yarl

        try:
            return str(yarl.URL(uri, encoded=False).with_user(None))
        except (ValueError, TypeError):
            return None
    if kind in LOCAL_PROTOCOLS:
        from fsspec.implementations.local import LocalFileSystem

        path = LocalFileSystem._strip_protocol(uri)
        return posixpath.normpath(path) if path.startswith("/") else path
    _, _, rest = uri.partition("://")
    netloc, slash, path = rest.partition("/")
    if kind in SERVER_PROTOCOLS:  # as fsspec reads the server: the host after the last '@'
        netloc = netloc.rsplit("@", 1)[-1].lower()
    elif kind in _LOWER_CASE_NAMES:
        netloc = netloc.lower()
    return f"{kind}://{netloc}{slash}{path}"


def decoded(uri: str) -> str:
    return decodings(uri)[-1]


def under(uri: str, prefix: str) -> bool:
    """``uri`` is the prefix itself or inside it (``s3://b/feat`` does not cover ``s3://b/features``)."""
    if prefix.endswith("/"):
        return uri.startswith(prefix) or uri == prefix.rstrip("/")
    return uri == prefix or uri.startswith(prefix + "/")


def _forms(uri: str) -> tuple[str, str] | None:
    url = fetched(uri)
    return None if url is None else (url, decoded(url))


def refusal(uri: str, prefixes: Sequence[str]) -> Refusal | None:
    """None when ``uri`` is in scope of ``prefixes``; else why not, with the fix."""
    layers, target = chain(uri)
    odd = non_cache_layer(layers)
    if odd is not None:
        return Refusal(
            f": a chained URL may only wrap the data in {', '.join(c + '::' for c in CACHE_LAYERS)}, "
            f"not {odd + '::'!r}",
            "read the data by its own URL",
        )
    found = dot_segment(target)
    if found is not None:
        name, level = found
        return Refusal(
            f": its path has a {name!r} segment{' once percent-decoded' if level else ''}, which the "
            "filesystem or the server resolves, climbing out of any prefix",
            "write the path without '.' or '..' segments",
        )
    forms = _forms(target)
    if forms is None:
        return Refusal(": the filesystem cannot parse it as a URL", "write it as scheme://host/path")
    for prefix in prefixes:
        allowed = _forms(prefix)
        if allowed is not None and all(under(f, p) for f, p in zip(forms, allowed, strict=True)):
            return None
    return Refusal(reads=forms[0] if forms[0] != target else None)


def in_scope(uri: str, prefixes: Sequence[str]) -> bool:
    return refusal(uri, prefixes) is None
