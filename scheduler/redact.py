"""Credentials out of text: the one function every error message and log line that may quote a
URL, a DSN or a driver's error passes through before anyone sees it.

``redact`` hides what looks like a credential wherever it stands in free text (the password of
a URL, the user part of an http(s) URL, secret-named query and connection parameters); given
the URL the text is about, it also hides that URL's own secrets where they appear out of
context (a parser quoting ``'secret@host'`` as a bad port). It imports nothing of tomlflow, so
the exception tree and every layer can use it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"

# scheme://user:password@ — the password may hold '@' (unencoded), never '/' or a space.
_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s/@:]*:)(?P<secret>[^\s/]*)(?=@)",
                       re.IGNORECASE)
# http(s)://token@host — a lone user part of a web URL is often the key itself.
_WEB_USER = re.compile(r"(?P<head>\bhttps?://)(?P<secret>[^\s/@:]+)(?=@)", re.IGNORECASE)
_SECRET_NAME = r"[\w.\-]*(?:token|secret|passw|pwd|key|sig|auth|credential|session)[\w.\-]*"
# ?token=… &api_key=… in a URL's query.
_QUERY = re.compile(rf"(?P<head>[?&;]{_SECRET_NAME}=)(?P<secret>[^&#\s'\"]+)", re.IGNORECASE)
# password=… in a libpq connection string (quoted or not).
_CONNINFO = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd)\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|[^\s&'\"]+)",
    re.IGNORECASE)
_PATTERNS = (_PASSWORD, _WEB_USER, _QUERY, _CONNINFO)


def redact(text: str, url: str | None = None) -> str:
    """``text`` with every credential replaced by ``***``; with ``url``, also every secret
    part of that URL wherever it appears (see ``url_secrets``). Never raises."""
    for secret in sorted(url_secrets(url) if url else [], key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group("head") + MASK, text)
    return text


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url`` as they may be quoted: its password (raw and decoded), the
    user part of an http(s) URL that has no password (then it is the key), and the values of
    secret-named query parameters."""
    try:
        parts = urlsplit(url)
        found = [parts.password or ""]
        if parts.scheme.lower() in ("http", "https") and parts.password is None:
            found.append(parts.username or "")
        found += [value for name, value in parse_qsl(parts.query)
                  if re.fullmatch(_SECRET_NAME, name, re.IGNORECASE)]
    except ValueError:  # not a URL we can take apart: the patterns still apply
        return []
    return sorted({s for f in found if f for s in (f, unquote(f))}, key=len, reverse=True)

