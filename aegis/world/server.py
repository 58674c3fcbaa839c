"""The game backend contract over HTTP (FastAPI), as a studio's backend would speak it.

Handlers are thin: they parse, call :class:`~aegis.world.service.WorldService`
and shape the answer. Every failure leaves as JSON in one shape
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
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aegis.domain import (
    PARAM_BOUNDS,
    Fault,
    FaultKind,
    Integrity,
    ShardConfig,
    ShardInfo,
    ShardRole,
    SnapshotInfo,
    explain,
)
from aegis.security.auth import allowed_host_set, install_auth, refusal_metrics, require_scope
from aegis.security.tokens import TokenStore
from aegis.world.client import (
    API_PREFIX,
    ConfigUpdate,
    ErrorBody,
    FaultReceipt,
    Health,
    RestoreRequest,
    RestoreResult,
    RoleUpdate,
)
from aegis.world.metrics import CONTENT_TYPE
from aegis.world.remediation_api import make_router as remediation_router
from aegis.world.service import ServiceError, Unavailable, WorldService, server_version
from aegis.world.simulations_api import make_router

log = logging.getLogger(__name__)

API_TITLE = "Aegis game backend API"
API_DESCRIPTION = (
    "The contract between Aegis and a game backend: shards, world configs with optimistic concurrency "
    "and idempotency, consistent snapshots with verified restores, integrity, fault injection and "
    "metrics. Telemetry is not pulled through this API; shards land Parquet batches in the lake. "
    "See docs/game-backend-api.md."
)

# Request bodies above this many bytes are refused with 413 before they are read in full
# (the largest legitimate body, a full parameter set, is under 2 KiB).
MAX_BODY_BYTES = 64 * 1024
DEFAULT_BIND_HOST = "127.0.0.1"

_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Host header is not this server's (DNS rebinding guard)"},
    401: {"model": ErrorBody, "description": "No bearer token, or one this server does not know"},
    403: {
        "model": ErrorBody,
        "description": "Token lacks the scope, is revoked, expired or rotated out, or the caller is isolated",
    },
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH_ERRORS,
    413: {"model": ErrorBody, "description": f"Request body larger than {MAX_BODY_BYTES} bytes"},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **_AUTH_ERRORS,
    404: {"model": ErrorBody, "description": "Unknown shard or snapshot; details list the known ones"},
    422: {
        "model": ErrorBody,
        "description": "Invalid request: the message says which field and what is accepted",
    },
}


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
    loopback name or one of ``allowed_hosts`` are refused.
    """
    app = FastAPI(title=API_TITLE, description=API_DESCRIPTION, version=server_version())
    app.add_middleware(BodyLimitMiddleware, limit=MAX_BODY_BYTES)
    install_auth(app, store, allowed_host_set(bind_host, list(allowed_hosts)))
    reads = APIRouter(dependencies=[Depends(require_scope("read"))])
    writes = APIRouter(dependencies=[Depends(require_scope("control"))])
    faults = APIRouter(dependencies=[Depends(require_scope("faults"))])

    def svc() -> WorldService:
        if service is None:
            raise Unavailable("no world is running behind this app")
        return service

    @app.exception_handler(ServiceError)
    def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint {request.method} {request.url.path}; see /docs for the API"
        details = {"max_body_bytes": MAX_BODY_BYTES} if exc.status_code == 413 else None
        return _error(exc.status_code, code, message, details)

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"internal error: {type(exc).__name__}: {exc}")

    # The simulation gate's endpoint: runs where the snapshots live (aegis.world.simulations_api).
    app.include_router(
        make_router(lambda shard_id, snapshot_id: svc().snapshot_state(shard_id, snapshot_id)),
        dependencies=[Depends(require_scope("control"))],
        responses=_WRITE_ERRORS,
    )
    app.include_router(remediation_router(svc))  # remediation endpoints (aegis.world.remediation_api)

    @app.get(f"{API_PREFIX}/health", response_model=Health, tags=["world"])
    def health() -> Health:
        """Liveness and the world clock: ``degraded`` when a shard is down or the clock stopped."""
        return svc().health()

    @reads.get(
        f"{API_PREFIX}/shards", response_model=list[ShardInfo], responses=_AUTH_ERRORS, tags=["shards"]
    )
    def list_shards() -> list[ShardInfo]:
        return svc().shards()

    @reads.get(
        f"{API_PREFIX}/shards/{{shard_id}}", response_model=ShardInfo, responses=_ERRORS, tags=["shards"]
    )
    def get_shard(shard_id: str) -> ShardInfo:
        return svc().shard(shard_id)

    @writes.put(
        f"{API_PREFIX}/shards/{{shard_id}}/role",
        response_model=ShardInfo,
        responses={**_ERRORS, **_WRITE_ERRORS},
        tags=["shards"],
    )
    def put_role(shard_id: str, body: Annotated[RoleUpdate, Body()]) -> ShardInfo:
        """Make a shard the canary or a control shard; while any shard is a canary, none explores."""
        return svc().set_role(shard_id, body.role)

    @reads.get(
        f"{API_PREFIX}/shards/{{shard_id}}/config",
        response_model=ShardConfig,
        responses=_ERRORS,
        tags=["config"],
    )
    def get_config(shard_id: str, response: Response) -> ShardConfig:
        """The parameters in force; the ``ETag`` header carries the version for ``If-Match``."""
        config = svc().config(shard_id)
        response.headers["ETag"] = f'"{config.version}"'
        return config

    @writes.put(
        f"{API_PREFIX}/shards/{{shard_id}}/config",
        response_model=ShardConfig,
        responses={
            **_ERRORS,
            **_WRITE_ERRORS,
            400: {
                "model": ErrorBody,
                "description": "If-Match is not a version (1-18 ASCII digits, optionally quoted), "
                "Idempotency-Key empty or over 200 characters, or Host refused",
            },
            409: {"model": ErrorBody, "description": "Idempotency-Key reused with a different request"},
            412: {
                "model": ErrorBody,
                "description": "If-Match is stale; details.current_version is the version now",
            },
            428: {"model": ErrorBody, "description": "If-Match is missing"},
        },
        tags=["config"],
    )
    def put_config(
        shard_id: str,
        body: Annotated[ConfigUpdate, Body()],
        response: Response,
        if_match: Annotated[
            str | None, Header(alias="If-Match", description="The config version read")
        ] = None,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", description="Makes retries apply at most once")
        ] = None,
    ) -> Any:
        """Replace the shard's parameters (complete set) if its version still equals ``If-Match``."""
        status, payload, replayed = svc().put_config(shard_id, body.params, if_match, idempotency_key)
        headers = {"ETag": f'"{payload["version"]}"'}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(status_code=status, content=payload, headers=headers)

    @writes.post(
        f"{API_PREFIX}/shards/{{shard_id}}/snapshots",
        response_model=SnapshotInfo,
        status_code=201,
        responses={**_ERRORS, **_WRITE_ERRORS},
        tags=["snapshots"],
    )
    def post_snapshot(shard_id: str) -> SnapshotInfo:
        """A consistent snapshot (between ticks), stored durably before the answer."""
        return svc().snapshot(shard_id)

    @reads.get(
        f"{API_PREFIX}/shards/{{shard_id}}/snapshots",
        response_model=list[SnapshotInfo],
        responses=_ERRORS,
        tags=["snapshots"],
    )
    def list_snapshots(shard_id: str) -> list[SnapshotInfo]:
        return svc().snapshots(shard_id)

    @writes.post(
        f"{API_PREFIX}/shards/{{shard_id}}/restore",
        response_model=RestoreResult,
        responses={
            **_ERRORS,
            **_WRITE_ERRORS,
            409: {"model": ErrorBody, "description": "Restored integrity differs; the shard kept its state"},
        },
        tags=["snapshots"],
    )
    def post_restore(shard_id: str, body: Annotated[RestoreRequest, Body()]) -> RestoreResult:
        """Restore and verify: answers only once the restored integrity equals the snapshot's."""
        return svc().restore(shard_id, body.snapshot_id)

    @reads.get(
        f"{API_PREFIX}/shards/{{shard_id}}/integrity",
        response_model=Integrity,
        responses=_ERRORS,
        tags=["snapshots"],
    )
    def get_integrity(shard_id: str) -> Integrity:
        return svc().integrity(shard_id)

    @faults.post(
        f"{API_PREFIX}/faults",
        response_model=FaultReceipt,
        status_code=202,
        responses={**_ERRORS, **_WRITE_ERRORS},
        tags=["faults"],
    )
    def post_fault(body: Annotated[Fault, Body()]) -> FaultReceipt:
        """Inject a fault (chaos tests, demos); it lasts ``duration_minutes`` of game time."""
        return svc().inject_fault(body)

    @reads.get("/metrics", tags=["world"], response_class=Response, responses=_AUTH_ERRORS)
    def metrics() -> Response:
        """Prometheus text exposition format, refused calls (``aegis_refused_requests_total``) included."""
        body = svc().render_metrics() + refusal_metrics(app).encode()
        return Response(content=body, media_type=CONTENT_TYPE)

    for router in (reads, writes, faults):
        app.include_router(router)
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the contract (what ``docs/openapi.json`` holds)."""
    doc = create_app(None).openapi()
    doc["info"]["version"] = "v1"  # the contract's version, not the package's: keeps the file stable
    return doc


def openapi_text() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=False) + "\n"
