"""The one place that knows how to hide credentials in what a run writes out.

A URI from run conf or a connection may carry credentials (``ftp://user:pw@host/x``,
``http://user:token@mlflow:5000``, an Azure SAS ``?sig=``). Exception messages, log lines, XCom,
MLflow params and tags, asset extras, OpenLineage facets and the extra link are read by people who
may not hold them, so every URI leaves the process without them. The rules:

- **userinfo is dropped whole**: ``scheme://<anything>@host`` becomes ``scheme://host``. The
  userinfo ends at the *last* ``@`` of the URI (of its part of an fsspec chain ``a::b::c``) whose text
  before it is a userinfo: it holds no ``/``, ``?`` or ``#``, or it has a ``:`` before the first of
  them (``user:pa/ss``). So ``user:p@ss@host`` and ``user:it's@host`` leave nothing behind, while
  ``s3://bucket/alice@example.com/x`` keeps its path. When in doubt the redactor hides more: a path
  with an ``@`` after ``host:port/`` is shown from that ``@`` on. Azure's
  ``abfs://container@account...`` names an address, not a user, and stays (a container name only).
- **credential-like query values are hidden**: a ``key=value`` after ``?``, ``&``, ``;`` or ``#``
  whose key, percent-decoded, lower-cased and stripped of everything but letters and digits,
  contains one of ``CREDENTIAL_WORDS`` (``sig``, ``token``, ``secret``, ``pass``, ``key``, ...) has
  its value replaced by ``***`` (``client_secret``, ``X-Amz-Signature``, ``api-key``, ``;token=``).
- URIs inside free text (exception messages, tracebacks) are found by their ``scheme://`` and redacted
  the same way, each up to the next whitespace.

``SafeUri`` carries a URI through code that builds messages: its ``str``, ``repr`` and ``format`` are
the redacted form and ``.raw`` is for I/O only, so a message is redacted by construction.

Read as every URL parser and fsspec read them: a user name (not a password) with an unencoded ``/``,
``?`` or ``#`` ends the authority there, and a password holding ``::scheme://`` splits an fsspec
chain; percent-encode such characters. ``SafeUri.hide_in`` looks for the URI's own secrets in a
library's text only from 4 characters on.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload
from urllib.parse import quote, quote_plus, unquote

Redact = Callable[[str], str]

HIDDEN = "***"
# A query key whose letters and digits contain one of these names a credential.
CREDENTIAL_WORDS = (
    "sig",  # sig, signature, x-amz-signature, x-goog-signature
    "token",  # token, access_token, auth_token, refresh_token, x-amz-security-token
    "secret",  # secret, client_secret
    "pass",  # password, passwd, passphrase
    "pwd",
    "key",  # key, apikey, api-key, access_key, accountkey
    "cred",  # credential, x-amz-credential
    "auth",  # auth, authorization, oauth
    "session",  # session, sessionid
    "sas",
    "jwt",
    "bearer",
    "cookie",
)
# Schemes whose URI names a container before the @ (abfs://container@account.dfs.core.windows.net/)
_CONTAINER_SCHEMES = frozenset({"abfs", "abfss", "az", "adl", "wasb", "wasbs"})
_CONTAINER = re.compile(r"\$?[A-Za-z0-9][A-Za-z0-9-]{0,62}")
_SCHEME = re.compile(r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_CHAIN = re.compile(r"::(?=[A-Za-z][A-Za-z0-9+.-]*://)")  # fsspec's chain: simplecache::ftp://...
_WHITESPACE = re.compile(r"\s")
_DELIMITER = re.compile(r"[/?#]")
_ONE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*(://|::)")
# key=value after ? & ; #; a value already hidden stays as it is (the redactor may run twice)
_QUERY_IN_URI = re.compile(r"(?P<lead>[?&;#])(?P<key>[^=&;#?]*)=(?P<value>\*\*\*(?=[&;#]|$)|[^&;#]*)")
# in text a value also ends at a closing quote before punctuation (``'...?sig=abc': refused``)
_QUERY_IN_TEXT = re.compile(
    r"(?P<lead>[?&;#])(?P<key>[^=&;#?\s]*)="
    r"(?P<value>\*\*\*(?=[&;#'\"\s]|$)|[^&;#\s]*?(?=[&;#\s]|$|['\"](?:[\s:,;)\]}]|$)))"
)
_MIN_SCRUB = 4  # a URI's own secret shorter than this is not searched for in free text


def is_credential_key(key: str) -> bool:
    """Whether a query key names a credential (``client_secret``, ``X-Amz-Signature``, ``api-key``)."""
    normalized = "".join(ch for ch in unquote(key).casefold() if ch.isalnum())
    return any(word in normalized for word in CREDENTIAL_WORDS)


def _first_at_or_after(positions: list[int], index: int, default: int) -> int:
    found = bisect_left(positions, index)
    return positions[found] if found < len(positions) else default


def _last_in(positions: list[int], low: int, high: int) -> int:
    """The last position in ``[low, high)``, or -1."""
    found = bisect_left(positions, high) - 1
    return positions[found] if found >= 0 and positions[found] >= low else -1


def _scan(text: str, whole: bool) -> tuple[str, list[str]]:
    """``text`` redacted, and what was hidden (userinfos, query values). ``whole``: ``text`` is one URI.

    After ``scheme://`` the userinfo ends at an ``@`` before the next whitespace (free text) or chain
    separator. The text before that ``@`` reads as a userinfo when it holds no ``/``, ``?`` or ``#``,
    or has a ``:`` before the first of them; of the ``@`` that qualify, the last one wins (it hides
    more). Positions are found once, so a long or hostile text costs linear time.
    """
    hidden: list[str] = []
    out: list[str] = []
    ats = [found.start() for found in re.finditer("@", text)]
    chains = [found.start() for found in _CHAIN.finditer(text)]
    spaces = [] if whole else [found.start() for found in _WHITESPACE.finditer(text)]
    pos = 0
    for match in _SCHEME.finditer(text):
        if match.start() < pos:
            continue  # inside a userinfo already dropped
        start = match.end()
        end = min(_first_at_or_after(spaces, start, len(text)), _first_at_or_after(chains, start, len(text)))
        delimiter = _DELIMITER.search(text, start, end)
        cut = delimiter.start() if delimiter else end
        at = _last_in(ats, start, end if ":" in text[start:cut] else cut)
        if at < 0:
            continue
        userinfo = text[start:at]
        if match["scheme"].lower() in _CONTAINER_SCHEMES and _CONTAINER.fullmatch(userinfo):
            continue  # abfs://container@account: the address, not a user
        hidden.append(userinfo)
        out.append(text[pos:start])
        pos = at + 1
    out.append(text[pos:])
    query = _QUERY_IN_URI if whole else _QUERY_IN_TEXT

    def hide(found: re.Match[str]) -> str:
        if not is_credential_key(found["key"]) or found["value"] in ("", HIDDEN):
            return found[0]
        hidden.append(found["value"])
        return f"{found['lead']}{found['key']}={HIDDEN}"

    return query.sub(hide, "".join(out)), hidden


def _is_one_uri(text: str) -> bool:
    """Text that starts with a scheme is one URI, spaces or line breaks and all (a password or a
    query value may hold either), unless it holds both: then it is lines of free text."""
    return bool(_ONE_URI.match(text)) and not ("\n" in text and " " in text)


@overload
def redact_uri(text: str | SafeUri) -> str: ...
@overload
def redact_uri(text: None) -> None: ...
def redact_uri(text: str | SafeUri | None) -> str | None:
    """A URI without its userinfo and credential query values; text that is not one URI as ``redact_text``."""
    if text is None:
        return None
    if isinstance(text, SafeUri):
        return _scan(text.raw, whole=True)[0]
    if "://" not in text and "=" not in text:
        return text
    return _scan(text, whole=_is_one_uri(text))[0]


def redact_text(text: str) -> str:
    """Free text (an exception message, a log line, a traceback) with every URI in it redacted."""
    if "://" not in text and "=" not in text:
        return text
    return _scan(text, whole=False)[0]


def redact_values(value: Any, redact: Redact = redact_uri) -> Any:
    """Every string in a JSON-like value (a staging plan, a trial record) through ``redact``."""
    if isinstance(value, SafeUri):
        return str(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_values(v, redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_values(v, redact) for v in value)
    return value


class SafeUri:
    """A URI whose text is redacted: ``str``, ``repr`` and f-strings hide its credentials, ``.raw`` is for I/O.

    Code that builds messages carries the URI as a ``SafeUri``, so ``f"data {uri!r}: ..."`` cannot
    write a password; only an explicit ``uri.raw`` reaches a filesystem. ``hide_in`` cleans a third
    party's error text of this URI's own secrets too (a server may quote the login it refused).
    """

    __slots__ = ("raw",)
    raw: str

    def __init__(self, uri: str | SafeUri | os.PathLike[str]) -> None:
        object.__setattr__(self, "raw", uri.raw if isinstance(uri, SafeUri) else os.fspath(uri))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"SafeUri is immutable: cannot set {name}")

    def __reduce__(self) -> tuple[type[SafeUri], tuple[str]]:
        return (SafeUri, (self.raw,))

    def __str__(self) -> str:
        return _scan(self.raw, whole=True)[0]

    def __repr__(self) -> str:
        return repr(str(self))

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SafeUri) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash((SafeUri, self.raw))

    @property
    def secrets(self) -> tuple[str, ...]:
        """What ``str`` hides: each userinfo, its password, the credential query values, in every
        form a message may quote them (as written, percent-decoded, percent-encoded)."""
        found: list[str] = []
        for secret in _scan(self.raw, whole=True)[1]:
            found.append(secret)
            if ":" in secret:
                found.append(secret.split(":", 1)[1])
        forms = {form for s in found for form in (s, unquote(s), quote(s, safe=""), quote(s), quote_plus(s))}
        return tuple(sorted((f for f in forms if len(f) >= _MIN_SCRUB), key=len, reverse=True))

    def hide_in(self, text: str) -> str:
        """``text`` (a library's error message) with URIs redacted and this URI's secrets replaced."""
        return scrub(redact_text(text), self.secrets)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, HIDDEN)
    return text
