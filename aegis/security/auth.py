"""Authentication for Aegis's HTTP services (the world server, the alert receiver).

Declared once per router, FastAPI style::

    router = APIRouter(dependencies=[Depends(require_scope("control"))])

or as a parameter when the handler wants to know who called::

    def handler(caller: Annotated[Caller, Depends(require_scope("alerts"))]) -> ...

:func:`install_auth` wires an app: the token store the dependencies verify
against, the Host header check against DNS rebinding (a browser tricked into
talking to a loopback service sends the attacker's host name), the JSON error
shape of refusals (``{"error", "message", "details"}``, with ``WWW-Authenticate:
Bearer`` on a 401) and the refusal counters that ``/metrics`` exposes as
``aegis_refused_requests_total{reason=...}``. No CORS middleware is installed:
browsers get no cross-origin access to a control API.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from aegis.security.tokens import REFUSAL_REASONS, SCOPES, AuthError, TokenStore

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
ENV_ALLOWED_HOSTS = "AEGIS_ALLOWED_HOSTS"
STATE_STORE = "aegis_token_store"
STATE_COUNTER = "aegis_refusal_counter"
REFUSAL_METRIC = "aegis_refused_requests_total"
_ERROR_CODES = {400: "invalid_host", 401: "unauthorized", 403: "forbidden"}

# One bearer scheme per scope, so the OpenAPI document says which scope each operation needs.
_BEARERS = {
    scope: HTTPBearer(
        auto_error=False,
        scheme_name=scope,
        description=f"An Aegis token with the `{scope}` scope"
        + (" (or `control`, which includes it)" if scope == "read" else "")
        + f": `aegis token issue --scope {scope}`; see docs/security.md",
    )
    for scope in SCOPES
}


class Caller(BaseModel):
    """Who made an authenticated call."""

    token_id: str
    scopes: list[str]
    address: str


class RefusalCounter:
    """In-process counts of refused calls by reason, for Prometheus (a counter: only grows)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(REFUSAL_REASONS, 0)

    def add(self, reason: str) -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def render(self) -> str:
        """The Prometheus text lines of ``aegis_refused_requests_total``."""
        lines = [
            f"# HELP {REFUSAL_METRIC} Requests refused by authentication, authorization or the Host check.",
            f"# TYPE {REFUSAL_METRIC} counter",
        ]
        lines += [f'{REFUSAL_METRIC}{{reason="{r}"}} {n}' for r, n in sorted(self.snapshot().items())]
        return "\n".join(lines) + "\n"


def error_body(status: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "error": _ERROR_CODES.get(status, "refused"),
        "message": message,
        "details": {"reason": reason, **({"accepted_scopes": list(SCOPES)} if reason == "scope" else {})},
    }


def _refusal_response(status: int, reason: str, message: str) -> JSONResponse:
    """RFC 6750 challenge: ``invalid_token`` for a withdrawn or bad token, ``insufficient_scope``."""
    challenge = 'Bearer realm="aegis"'
    if reason == "scope":
        challenge += ', error="insufficient_scope"'
    elif reason in ("malformed", "unknown", "forged", "revoked", "expired", "rotated"):
        challenge += ', error="invalid_token"'
    headers = {"WWW-Authenticate": challenge} if status in (401, 403) else {}
    return JSONResponse(status_code=status, content=error_body(status, reason, message), headers=headers)


def normalize_host(host: str) -> str:
    """``Host`` without its port, lower case; IPv6 literals without brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def allowed_host_set(bind_host: str | None, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The Host names a service answers: its bind address, loopback names, ``extra`` and ``AEGIS_ALLOWED_HOSTS``.

    A wildcard bind address (``0.0.0.0``, ``::``) is no name: such a server must be
    given the names it is reached by.
    """
    names = [*LOOPBACK_HOSTS]
    if bind_host and bind_host not in ("0.0.0.0", "::"):
        names.append(bind_host)
    names += list(extra)
    names += [h for h in os.environ.get(ENV_ALLOWED_HOSTS, "").split(",") if h.strip()]
    return sorted({normalize_host(n) for n in names if n.strip()})


class HostCheckMiddleware:
    """Refuse (400) a request whose ``Host`` is not one of this server's names: DNS rebinding."""

    def __init__(self, app: ASGIApp, allowed: list[str], on_refusal: Callable[[str, str, str], None]) -> None:
        self.app = app
        self.allowed = {normalize_host(h) for h in allowed}
        self.on_refusal = on_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        raw = b""
        for name, value in scope.get("headers", ()):
            if name == b"host":
                raw = value
                break
        host = normalize_host(raw.decode("latin-1"))
        if host in self.allowed:
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("unknown", 0)
        message = (
            f"Host {raw.decode('latin-1')[:100]!r} is not a name of this server "
            f"(allowed: {', '.join(sorted(self.allowed))}); see docs/security.md"
        )
        self.on_refusal(str(client[0]), str(scope.get("path", "")), message)
        response = JSONResponse(status_code=400, content=error_body(400, "host", message))
        await response(scope, receive, send)


def install_auth(app: FastAPI, store: TokenStore | None, allowed_hosts: list[str]) -> None:
    """Wire ``app``: token store, Host check, refusal error shape and refusal counters.

    ``store=None`` opens the platform's store (``AEGIS_HOME/security.db``) on the
    first request that needs it, so building an app (e.g. for its OpenAPI
    document) touches no file.
    """
    counter = RefusalCounter()
    setattr(app.state, STATE_COUNTER, counter)
    setattr(app.state, STATE_STORE, store)
    lock = threading.Lock()

    def get_store() -> TokenStore:
        current = getattr(app.state, STATE_STORE, None)
        if current is None:
            with lock:
                current = getattr(app.state, STATE_STORE, None)
                if current is None:
                    current = TokenStore()
                    setattr(app.state, STATE_STORE, current)
        return current

    app.state.aegis_get_store = get_store

    def host_refused(address: str, path: str, message: str) -> None:
        counter.add("host")
        try:
            get_store().record_refusal(address, path, "host", None, 400, detail=message)
        except Exception:  # pragma: no cover - storage failure must not turn a 400 into a 500
            log.exception("could not record a Host refusal")

    app.add_middleware(HostCheckMiddleware, allowed=allowed_hosts, on_refusal=host_refused)

    @app.exception_handler(AuthError)
    def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
        return _refusal_response(exc.status, exc.reason, exc.message)


def refusal_metrics(app: FastAPI) -> str:
    """``aegis_refused_requests_total`` lines for an app wired by :func:`install_auth` ('' if not)."""
    counter = getattr(app.state, STATE_COUNTER, None)
    return counter.render() if counter is not None else ""


def require_scope(scope: str) -> Callable[..., Caller]:
    """A FastAPI dependency: the call must carry a bearer token with ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; accepted: {', '.join(SCOPES)}")

    # A default, not an Annotated[...] hint: hints are strings here and could not see ``scope``.
    def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_BEARERS[scope]),
    ) -> Caller:
        get_store = getattr(request.app.state, "aegis_get_store", None)
        if get_store is None:  # pragma: no cover - a wiring bug, never an open door
            raise RuntimeError("require_scope used on an app without install_auth")
        address = request.client.host if request.client else "unknown"
        raw = credentials.credentials if credentials is not None else None
        if raw is None and request.headers.get("authorization"):
            raw = "\x00"  # a credential in another scheme is not a missing one: malformed
        store: TokenStore = get_store()
        try:
            info = store.verify(raw, scope, address, path=request.url.path)
        except AuthError as exc:
            getattr(request.app.state, STATE_COUNTER).add(exc.reason)
            raise
        return Caller(token_id=info.id, scopes=info.scopes, address=address)

    dependency.__name__ = f"require_{scope}"
    return dependency
