"""The game backend contract over HTTP (FastAPI), as a studio's backend would speak it.

:func:`create_app` assembles the app: the body limit, auth
(:mod:`aegis.security.auth`), the error handlers and the routers, one module
per resource in :mod:`aegis.world.routers` plus :mod:`aegis.world.remediation_api`
and :mod:`aegis.world.simulations_api`. Handlers are thin: they get the
:class:`~aegis.world.service.WorldService` and their scope check through
``Depends``, call the service and shape the answer. Every failure leaves as JSON in one shape
(:class:`~aegis.world.client.ErrorBody`: ``error``, ``message``, ``details``)
with a 4xx that says what was wrong and what is accepted; validation errors
are rendered with :func:`aegis.domain.explain`. Handlers are plain ``def``
functions: FastAPI runs them in its thread pool, where waiting for the world
lock (a tick in progress) does not block the event loop.

``docs/openapi.json`` is generated from this module (:func:`openapi_document`,
``aegis world openapi``); a test keeps the committed copy current.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegis.domain import PARAM_BOUNDS, FaultKind, ShardRole, explain
from aegis.security.auth import allowed_host_set, install_auth
from aegis.security.tokens import TokenStore
from aegis.world import remediation_api
from aegis.world.client import ErrorBody
from aegis.world.routers import config, faults, health, metrics, shards, snapshots
from aegis.world.routers.deps import CONTROL, install_service, snapshot_loader
from aegis.world.routers.responses import MAX_BODY_BYTES, WRITE_ERRORS
from aegis.world.service import ServiceError, WorldService, server_version
from aegis.world.simulations_api import make_router as simulations_router

log = logging.getLogger(__name__)

API_TITLE = "Aegis game backend API"
API_DESCRIPTION = (
    "The contract between Aegis and a game backend: shards, world configs with optimistic concurrency "
    "and idempotency, consistent snapshots with verified restores, integrity, fault injection and "
    "metrics. Telemetry is not pulled through this API; shards land Parquet batches in the lake. "
    "See docs/game-backend-api.md."
)

DEFAULT_BIND_HOST = "127.0.0.1"

# The routers and their include options, in the order requests are matched (and docs/openapi.json
# lists them): each request is tried against the routes in turn, so the most frequent calls come
# first (the liveness probe, the metrics scrape, the platform's reads), the rare ones last.
# Paths never overlap across routers except GET/POST /v1/faults, told apart by method.
ROUTERS: tuple[tuple[APIRouter, dict[str, Any]], ...] = (
    (health.router, {}),
    (metrics.router, {}),
    (shards.router, {}),
    (config.router, {}),
    (remediation_api.router, {}),  # the healer's reads: faults acting now, a shard's signals
    (snapshots.router, {}),
    (faults.router, {}),
    # The simulation gate's endpoint: runs where the snapshots live (aegis.world.simulations_api).
    (
        simulations_router(loader=snapshot_loader),
        {"dependencies": [CONTROL], "responses": WRITE_ERRORS},
    ),
)


class _Explainable:
    """Lets :func:`aegis.domain.explain` render FastAPI's request validation errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self._errors = errors

    def error_count(self) -> int:
        return len(self._errors)

    def errors(self, include_url: bool = False) -> list[dict[str, Any]]:
        return self._errors


def _error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    body = ErrorBody(error=code, message=message, details=details or {})
    return JSONResponse(status_code=status, content=body.model_dump(mode="json"))


def _jsonable(value: Any) -> Any:
    """Validation errors may carry arbitrary inputs and exceptions: keep what JSON can say."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return repr(value)


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [dict(e) for e in exc.errors()]
    if any(e.get("type") == "json_invalid" for e in errors):
        err = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (err.get("ctx") or {}).get("error", "malformed JSON")
        return _error(
            400,
            "malformed_json",
            f"the request body is not valid JSON: {reason}",
            {"content_type_expected": "application/json"},
        )
    for e in errors:  # drop the 'body' prefix: the user's document is the body
        loc = list(e.get("loc", ()))
        e["loc"] = loc[1:] if loc[:1] == ["body"] else loc
        e.pop("ctx", None)
        e.pop("url", None)
        e["input"] = _jsonable(e.get("input"))
    details: dict[str, Any] = {
        "errors": [{"loc": e["loc"], "msg": e.get("msg"), "type": e.get("type")} for e in errors]
    }
    path = request.url.path
    if path.endswith("/config"):
        details["param_bounds"] = {k: list(v) for k, v in PARAM_BOUNDS.items()}
    if path.endswith("/faults"):
        details["accepted_fault_kinds"] = [k.value for k in FaultKind]
    if path.endswith("/role"):
        details["accepted_roles"] = [r.value for r in ShardRole]
    message = explain(_Explainable(errors), what=f"{request.method} {path} request")  # type: ignore[arg-type]
    if path.endswith("/faults") and any("kind" in map(str, e["loc"]) for e in errors):
        message += "\naccepted fault kinds: " + ", ".join(k.value for k in FaultKind)
    return _error(422, "invalid_request", message, details)


class BodyLimitMiddleware:
    """Answer 413 to a body over ``limit`` bytes: by ``Content-Length`` up front, else while it streams.

    Pure ASGI, so a chunked upload that never declares its size is cut off at
    the limit instead of being buffered whole.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> JSONResponse:
        return _error(
            413,
            "payload_too_large",
            f"the request body is larger than {self.limit} bytes; see docs/game-backend-api.md",
            {"max_body_bytes": self.limit},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _error(400, "invalid_request", "Content-Length is not a number")(
                        scope, receive, send
                    )
                    return
                if declared > self.limit:
                    await self._too_large()(scope, receive, send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._too_large()(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in; FastAPI passes HTTP exceptions on to the app's handler."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes; see docs/game-backend-api.md")


def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return _error(exc.status_code, exc.code, exc.message, exc.details)


def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
        exc.status_code, "http_error"
    )
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such endpoint {request.method} {request.url.path}; see /docs for the API"
    details = {"max_body_bytes": MAX_BODY_BYTES} if exc.status_code == 413 else None
    return _error(exc.status_code, code, message, details)


def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
    log.exception("unhandled error in %s %s", request.method, request.url.path)
    return _error(500, "internal_error", f"internal error: {type(exc).__name__}: {exc}")


# Every failure leaves in the ErrorBody shape; refusals by auth are install_auth's.
EXCEPTION_HANDLERS: tuple[tuple[type[Exception], Any], ...] = (
    (ServiceError, _service_error),
    (RequestValidationError, _validation_response),
    (StarletteHTTPException, _http_error),
    (Exception, _unexpected),
)


def create_app(
    service: WorldService | None,
    *,
    store: TokenStore | None = None,
    bind_host: str = DEFAULT_BIND_HOST,
    allowed_hosts: list[str] | tuple[str, ...] = (),
) -> FastAPI:
    """The HTTP app over ``service``; ``None`` builds the app for its OpenAPI document only.

    Auth (docs/security.md): reads need the ``read`` scope (``control`` includes
    it), writes ``control``, fault injection ``faults``; ``/v1/health`` stays
    open for liveness probes. ``store`` is the token store (default: the one
    under ``AEGIS_HOME``); requests whose ``Host`` is not ``bind_host``, a
    loopback name or one of ``allowed_hosts`` are refused. Handlers get the
    service and the scope check through ``Depends`` (:mod:`aegis.world.routers`).
    """
    app = FastAPI(title=API_TITLE, description=API_DESCRIPTION, version=server_version())
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    install_auth(app, store, allowed_host_set(bind_host, list(allowed_hosts)))
    install_service(app, service)
    for exc_class, handler in EXCEPTION_HANDLERS:
        app.add_exception_handler(exc_class, handler)
    for router, options in ROUTERS:
        app.include_router(router, **options)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the contract (what ``docs/openapi.json`` holds)."""
    doc = create_app(None).openapi()
    doc["info"]["version"] = "v1"  # the contract's version, not the package's: keeps the file stable
    return doc


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"
