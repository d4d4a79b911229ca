"""Whether a URI stays under allowed prefixes, judged on the URL the filesystem really fetches.

A prefix compared with the text as written is walked around by encoding: fsspec's HTTP filesystem
hands the URL to yarl, which decodes ``%2e%2e`` and resolves dot-segments, so
``https://h/public/%2e%2e/private/x`` fetches ``https://h/private/x``; a server may decode ``%2f`` or
``%252e`` once more and resolve again. So a URI is in scope only when none of its decodings has a
dot-segment (an encoded ``..`` has no honest use in a dataset path) and both the URL the filesystem
fetches and its percent-decoded form lie under the same allowed prefix.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

# Outer layers of a chained URL (``simplecache::https://...``) that only cache what the inner URL
# fetches; any other layer (an archive, a reference file system) is refused where prefixes apply.
CACHE_LAYERS = ("simplecache", "filecache", "blockcache")
_LOCAL_PROTOCOLS = ("file", "local")
_HTTP_PROTOCOLS = ("http", "https")
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


def protocol(uri: str) -> str:
    found = _SCHEME.match(uri)
    return found.group(1).lower() if found else "file"


def fetched(uri: str) -> str | None:
    """The URL the filesystem fetches for ``uri`` (no chain); None when it cannot parse it.

    HTTP(S): the URL yarl builds from it (fsspec's ``encoded=False``): decoded, dot-segments resolved,
    host lower case, default port dropped. Local paths: fsspec's own reading (``file://~/x`` is in
    the home directory), then normalized. Other protocols pass the path on as written. A URI's own
    ``user:password@`` names who reads, not where: it is left out.
    """
    kind = protocol(uri)
    if kind in _HTTP_PROTOCOLS:
        import yarl

        try:
            return str(yarl.URL(uri, encoded=False).with_user(None))
        except (ValueError, TypeError):
            return None
    if kind in _LOCAL_PROTOCOLS:
        from fsspec.implementations.local import LocalFileSystem

        path = LocalFileSystem._strip_protocol(uri)
        return posixpath.normpath(path) if path.startswith("/") else path
    scheme, _, rest = uri.partition("://")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rsplit('@', 1)[-1]}{slash}{path}"  # as fsspec reads the server


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
    odd = [layer for layer in layers if layer.strip().lower().removesuffix("://") not in CACHE_LAYERS]
    if odd:
        return Refusal(
            f": a chained URL may only wrap the data in {', '.join(c + '::' for c in CACHE_LAYERS)}, "
            f"not {odd[0].split('://', 1)[0].strip() + '::'!r}",
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
