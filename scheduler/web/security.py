"""Who may call the dashboard, and which POSTs are really meant.

- Token: with ``[web] token`` set, every request but ``/healthz``, ``/login`` and ``/static``
  needs ``Authorization: Bearer <token>`` or the session cookie the login form sets (HttpOnly,
  SameSite=Lax, holding an HMAC, never the token itself). Pages redirect to the login form;
  the API answers 401 in JSON.
- CSRF: a state change is a POST, and a POST is accepted when it carries a bearer token (a
  browser never adds one by itself), or is JSON (a cross-site page can only send JSON after a
  CORS preflight, which this server never grants), or carries the CSRF token that equals this
  browser's ``tomlflow_csrf`` cookie (double submit; the cookie is SameSite=Strict). A POST
  whose ``Origin`` names another host is refused whatever it carries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CSRF_COOKIE = "tomlflow_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_COOKIE = "tomlflow_session"
OPEN_PATHS = ("/healthz", "/login", "/static/")
_MAX_BODY = 2 * 1024 * 1024  # a form, a workflow file's text, a JSON call


@dataclass(frozen=True)
class Guard:
    """The token (empty: none needed) and the key that signs session cookies."""

    token: str
    key: bytes

    @classmethod
    def of(cls, token: str) -> Guard:
        return cls(token, secrets.token_bytes(32))

    def session_value(self) -> str:
        return hmac.new(self.key, b"session:" + self.token.encode(), hashlib.sha256).hexdigest()

    def token_ok(self, given: str) -> bool:
        return bool(self.token) and hmac.compare_digest(given.encode(), self.token.encode())

    def bearer_ok(self, headers: Headers) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(value.strip())

    def authenticated(self, headers: Headers, cookies: dict[str, str]) -> bool:
        if not self.token:
            return True
        if self.bearer_ok(headers):
            return True
        return hmac.compare_digest(cookies.get(SESSION_COOKIE, ""), self.session_value())


class SecurityMiddleware:
    """Token check, CSRF check and the CSRF cookie, around the whole app (pure ASGI, so
    streaming responses pass through untouched)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = scope["path"]
        csrf = request.cookies.get(CSRF_COOKIE, "")
        fresh = not _well_formed(csrf)
        if fresh:
            csrf = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf"] = csrf
        if not path.startswith(OPEN_PATHS) and not self.guard.authenticated(
            request.headers, request.cookies
        ):
            await _unauthenticated(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            body = await _read_body(receive)
            if body is None:
                await _json_or_text(413, "request body too large", scope, receive, send)
                return
            problem = self._refusal(request.headers, csrf if not fresh else "", body)
            if problem:
                await _json_or_text(403, problem, scope, receive, send)
                return
            receive = _replay(body)
        secure = scope.get("scheme") == "https"
        await self.app(scope, receive, _with_cookie(send, csrf, secure) if fresh else send)

    def _refusal(self, headers: Headers, cookie: str, body: bytes) -> str:
        """Why this POST is refused, or ``""`` when it is accepted."""
        origin = headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != headers.get("host", ""):
            return "cross-site request refused"
        if self.guard.bearer_ok(headers):
            return ""
        if headers.get("content-type", "").split(";")[0].strip() == "application/json":
            return ""
        given = headers.get(CSRF_HEADER, "") or _form_field(headers, body, CSRF_FIELD)
        if cookie and given and hmac.compare_digest(given.encode(), cookie.encode()):
            return ""
        return "missing or wrong CSRF token: reload the page and try again"


def _well_formed(value: str) -> bool:
    return 20 <= len(value) <= 100 and value.replace("-", "").replace("_", "").isalnum()


def _form_field(headers: Headers, body: bytes, name: str) -> str:
    kind = headers.get("content-type", "")
    if kind.startswith("application/x-www-form-urlencoded"):
        values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(name, [""])
        return values[0]
    if kind.startswith("multipart/form-data"):
        # The token is a plain field; find it without parsing uploads twice.
        marker = f'name="{name}"'.encode()
        at = body.find(marker)
        if at >= 0:
            start = body.find(b"\r\n\r\n", at)
            end = body.find(b"\r\n", start + 4)
            if start >= 0 and end >= 0:
                return body[start + 4 : end].decode("latin-1")
    return ""


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None when it is larger than _MAX_BODY."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _with_cookie(send: Send, csrf: str, secure: bool) -> Send:
    cookie = f"{CSRF_COOKIE}={csrf}; Path=/; HttpOnly; SameSite=Strict" + (
        "; Secure" if secure else ""
    )

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.append((b"set-cookie", cookie.encode()))
            message["headers"] = headers
        await send(message)

    return wrapped


async def _unauthenticated(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    if _wants_json(scope):
        await _json_or_text(401, "a token is required", scope, receive, send)
        return
    query = scope.get("query_string", b"").decode("latin-1")
    target = path + ("?" + query if query else "")
    location = "/login?next=" + quote(target, safe="")
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [(b"location", location.encode()), (b"content-length", b"0")],
        }
    )
    await send({"type": "http.response.body", "body": b""})


def _wants_json(scope: Scope) -> bool:
    path = scope["path"]
    accept = Headers(scope=scope).get("accept", "")
    return (
        path.startswith(("/api/", "/info", "/refresh", "/backload", "/task/", "/metrics"))
        or "text/html" not in accept
    )


async def _json_or_text(
    status: int, message: str, scope: Scope, _receive: Receive, send: Send
) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def safe_next(target: str) -> str:
    """A same-site path to go to after login; anything else becomes ``/``."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"
