"""Typed client of the game backend contract (``/v1``), for the bundled world or a studio's backend.

The changeset lifecycle and the Dagster resources talk to the game only
through this class, so it is strict: every response is parsed into the
``aegis.domain`` models (a backend that answers something else is an error, not
a dict passed along), every failure is one of a few exceptions carrying the
server's own message, and retries happen only where they cannot apply a change
twice: reads, and config PUTs, which always carry an ``Idempotency-Key``.

The wire models of the contract that are not core domain types (health,
restore result, fault receipt, error body) live here too: the server declares
them in its OpenAPI document, and a client must not need FastAPI to read them.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from aegis.domain import (
    Fault,
    FaultKind,
    Integrity,
    ShardConfig,
    ShardInfo,
    ShardRole,
    SnapshotInfo,
    WorldParams,
)

API_PREFIX = "/v1"
DEFAULT_TIMEOUT_S = 10.0
# Restores pause a shard, rebuild it and verify it: allow them longer.
RESTORE_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 2
RETRY_BACKOFF_S = 0.25
RETRYABLE_STATUS = frozenset({502, 503, 504})

T = TypeVar("T", bound=BaseModel)


# ----------------------------------------------------------------- wire models


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Health(_Wire):
    """``GET /v1/health``."""

    status: Literal["ok", "degraded"] = Field(description="ok when every shard is up and the clock advances")
    version: str = Field(description="Version of the world server")
    api_version: str = "v1"
    game_time: datetime
    tick: int = Field(ge=0, description="Ticks committed since the world was created")
    speed: float = Field(description="Game seconds simulated per wall-clock second (0 = paused)")
    shards_up: int = Field(ge=0)
    shards_down: int = Field(ge=0)


class RoleUpdate(_Wire):
    """Body of ``PUT /v1/shards/{id}/role``."""

    role: ShardRole


class ConfigUpdate(_Wire):
    """Body of ``PUT /v1/shards/{id}/config``: the complete parameter set (not a patch)."""

    params: WorldParams


class RestoreRequest(_Wire):
    """Body of ``POST /v1/shards/{id}/restore``."""

    snapshot_id: str = Field(min_length=1)


class RestoreResult(_Wire):
    """Answer of a verified restore: the integrity now in force equals the snapshot's."""

    shard_id: str
    snapshot_id: str
    integrity: Integrity
    config_version: int = Field(ge=1, description="The new config version (source 'restore')")
    game_time: datetime


class FaultReceipt(_Wire):
    """``202`` answer of ``POST /v1/faults``: what was injected and until when (game time)."""

    fault: Fault
    injected_at: datetime
    until: datetime


class ErrorBody(_Wire):
    """Every 4xx/5xx body: a machine-readable code, a message for people, and details."""

    error: str = Field(
        description="not_found | invalid_request | precondition_required | stale_config_version | "
        "idempotency_conflict | integrity_mismatch | conflict | unavailable"
    )
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


# ------------------------------------------------------------------ exceptions


class GameBackendError(Exception):
    """Any failure talking to the game backend; ``message`` is the server's own words."""

    def __init__(
        self, message: str, status_code: int | None = None, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message if status_code is None else f"HTTP {status_code}: {message}")
        self.message = message
        self.status_code = status_code
        self.body = body or {}

    @property
    def details(self) -> dict[str, Any]:
        details = self.body.get("details")
        return details if isinstance(details, dict) else {}


class BackendUnavailable(GameBackendError):
    """Connection refused, timed out, or a 5xx: the request may be retried later."""


class NotFound(GameBackendError):
    """Unknown shard or snapshot (``details`` lists what is known)."""


class Unauthorized(GameBackendError):
    """401: no credential, or one the backend does not know (wrong, forged or malformed token)."""

    def __init__(
        self, message: str, status_code: int | None = None, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(
            f"{message} (the game backend needs a bearer token: set AEGIS_TOKEN_CONTROL, or run "
            "`aegis world serve`/`aegis up` on this AEGIS_HOME to mint the service tokens; see docs/security.md)",
            status_code,
            body,
        )


class Forbidden(GameBackendError):
    """403: the token is valid but may not do this (wrong scope, revoked, expired, or the caller is isolated)."""

    def __init__(
        self, message: str, status_code: int | None = None, body: dict[str, Any] | None = None
    ) -> None:
        super().__init__(
            f"{message} (issue a token with the needed scope: `aegis token issue --scope SCOPE`; see docs/security.md)",
            status_code,
            body,
        )


class BadRequest(GameBackendError):
    """The backend rejected the request itself (422, 400, 428): fix the request, do not retry."""


class StaleConfigVersion(GameBackendError):
    """``If-Match`` named an old version: re-read the config and decide again."""

    @property
    def current_version(self) -> int | None:
        v = self.details.get("current_version")
        return int(v) if isinstance(v, int) else None


class Conflict(GameBackendError):
    """409: the request conflicts with the state of the backend."""


class IdempotencyConflict(Conflict):
    """The Idempotency-Key was already used with a different request."""


class IntegrityMismatch(Conflict):
    """A restore did not reproduce the snapshot's integrity; the shard kept its pre-restore state."""


_ADAPTER_SHARDS = TypeAdapter(list[ShardInfo])
_ADAPTER_SNAPSHOTS = TypeAdapter(list[SnapshotInfo])


class GameBackendClient:
    """Synchronous client of one game backend. Use as a context manager, or call :meth:`close`.

    Credentials: ``token`` is sent as ``Authorization: Bearer`` on every call.
    Without one, the client uses the platform's service tokens
    (:func:`aegis.security.secrets.service_token`): ``control`` (which includes
    ``read``) for everything but fault injection, ``faults`` for that. They are
    looked up on each request, so a renewed token file is picked up without a
    restart. ``faults_token`` overrides the token of :meth:`inject_fault` only.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        retries: int = DEFAULT_RETRIES,
        headers: dict[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
        faults_token: str | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self._token = token
        self._faults_token = faults_token
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers or {}, transport=transport
        )

    def __enter__(self) -> GameBackendClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------- plumbing

    def _auth_header(self, scope: str) -> dict[str, str]:
        from aegis.security.secrets import service_token

        if self._token is None and self._faults_token is None and "authorization" in self._http.headers:
            return {}  # the caller set its own Authorization header
        if scope == "faults":
            token = self._faults_token or self._token or service_token("faults")
        else:
            token = self._token or service_token("control")
        return {"Authorization": f"Bearer {token}"} if token else {}

    def _request(
        self,
        method: str,
        path: str,
        *,
        retry: bool,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        scope: str = "control",
    ) -> httpx.Response:
        """Send, retrying where repeating cannot apply anything twice.

        A connection that was never made is always retried (nothing reached the
        server); timeouts, broken connections and 502/503/504 are retried only
        when ``retry`` says the request is safe to repeat.
        """
        kwargs: dict[str, Any] = {"json": json, "headers": {**self._auth_header(scope), **(headers or {})}}
        if timeout is not None:
            kwargs["timeout"] = timeout
        max_attempts = 1 + self.retries
        last: Exception | None = None
        for attempt in range(1, max_attempts + 1):
            if attempt > 1:
                time.sleep(RETRY_BACKOFF_S * (2 ** (attempt - 2)))
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                last = exc
                continue
            except httpx.HTTPError as exc:  # may have reached the server
                last = exc
                if retry:
                    continue
                break
            if response.status_code in RETRYABLE_STATUS and retry and attempt < max_attempts:
                continue
            return self._check(response)
        raise BackendUnavailable(
            f"{method} {self.base_url}{path} failed: {type(last).__name__}: {last}"
        ) from last

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        code = response.status_code
        if code < 400:
            return response
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = str(body.get("message") or body.get("detail") or response.text or response.reason_phrase)
        error = body.get("error")
        if code == 401:
            raise Unauthorized(message, code, body)
        if code == 403:
            raise Forbidden(message, code, body)
        if code == 404:
            raise NotFound(message, code, body)
        if code == 412:
            raise StaleConfigVersion(message, code, body)
        if code == 409:
            if error == "idempotency_conflict":
                raise IdempotencyConflict(message, code, body)
            if error == "integrity_mismatch":
                raise IntegrityMismatch(message, code, body)
            raise Conflict(message, code, body)
        if code >= 500:
            raise BackendUnavailable(message, code, body)
        raise BadRequest(message, code, body)

    @staticmethod
    def _parse(model: type[T], response: httpx.Response) -> T:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise GameBackendError(
                f"{response.request.method} {response.request.url} answered a body that is not a {model.__name__}: {exc}",
                response.status_code,
            ) from exc

    def _shard_path(self, shard_id: str, suffix: str = "") -> str:
        if not shard_id or "/" in shard_id:
            raise ValueError(f"invalid shard id {shard_id!r}")
        return f"{API_PREFIX}/shards/{shard_id}{suffix}"

    # ------------------------------------------------------------- the contract

    def health(self) -> Health:
        return self._parse(Health, self._request("GET", f"{API_PREFIX}/health", retry=True))

    def shards(self) -> list[ShardInfo]:
        response = self._request("GET", f"{API_PREFIX}/shards", retry=True)
        try:
            return _ADAPTER_SHARDS.validate_json(response.content)
        except ValidationError as exc:
            raise GameBackendError(
                f"GET /shards answered an unexpected body: {exc}", response.status_code
            ) from exc

    def shard(self, shard_id: str) -> ShardInfo:
        return self._parse(ShardInfo, self._request("GET", self._shard_path(shard_id), retry=True))

    def set_role(self, shard_id: str, role: ShardRole | str) -> ShardInfo:
        """Make a shard the canary (excluded from exploration) or a control; idempotent by nature."""
        body = RoleUpdate(role=ShardRole(role)).model_dump(mode="json")
        return self._parse(
            ShardInfo, self._request("PUT", self._shard_path(shard_id, "/role"), retry=True, json=body)
        )

    def get_config(self, shard_id: str) -> ShardConfig:
        return self._parse(
            ShardConfig, self._request("GET", self._shard_path(shard_id, "/config"), retry=True)
        )

    def put_config(
        self,
        shard_id: str,
        params: WorldParams,
        *,
        if_match: int,
        idempotency_key: str | None = None,
    ) -> ShardConfig:
        """Apply ``params`` if the shard is still at version ``if_match``.

        Raises :class:`StaleConfigVersion` when it is not. The request always
        carries an ``Idempotency-Key`` (a fresh one unless given), so a retry
        after a timeout applies at most once; pass your own key to make retries
        across processes safe too (e.g. the changeset id plus the step).
        """
        key = idempotency_key or f"aegis-{uuid.uuid4().hex}"
        body = ConfigUpdate(params=params).model_dump(mode="json")
        headers = {"If-Match": str(int(if_match)), "Idempotency-Key": key}
        response = self._request(
            "PUT", self._shard_path(shard_id, "/config"), retry=True, json=body, headers=headers
        )
        return self._parse(ShardConfig, response)

    def snapshot(self, shard_id: str) -> SnapshotInfo:
        """Take a consistent snapshot (not retried: a retry could take a second one)."""
        response = self._request("POST", self._shard_path(shard_id, "/snapshots"), retry=False)
        return self._parse(SnapshotInfo, response)

    def snapshots(self, shard_id: str) -> list[SnapshotInfo]:
        response = self._request("GET", self._shard_path(shard_id, "/snapshots"), retry=True)
        try:
            return _ADAPTER_SNAPSHOTS.validate_json(response.content)
        except ValidationError as exc:
            raise GameBackendError(
                f"GET snapshots answered an unexpected body: {exc}", response.status_code
            ) from exc

    def restore(self, shard_id: str, snapshot_id: str) -> RestoreResult:
        """Restore and verify; raises :class:`IntegrityMismatch` if verification fails."""
        body = RestoreRequest(snapshot_id=snapshot_id).model_dump(mode="json")
        response = self._request(
            "POST", self._shard_path(shard_id, "/restore"), retry=False, json=body, timeout=RESTORE_TIMEOUT_S
        )
        return self._parse(RestoreResult, response)

    def integrity(self, shard_id: str) -> Integrity:
        return self._parse(
            Integrity, self._request("GET", self._shard_path(shard_id, "/integrity"), retry=True)
        )

    def inject_fault(self, fault: Fault | dict[str, Any]) -> FaultReceipt:
        payload = fault if isinstance(fault, Fault) else Fault.model_validate(fault)
        response = self._request(
            "POST", f"{API_PREFIX}/faults", retry=False, json=payload.model_dump(mode="json"), scope="faults"
        )
        return self._parse(FaultReceipt, response)

    def metrics(self) -> str:
        return self._request("GET", "/metrics", retry=True).text


__all__ = [
    "BackendUnavailable",
    "BadRequest",
    "ConfigUpdate",
    "Conflict",
    "ErrorBody",
    "FaultKind",
    "FaultReceipt",
    "Forbidden",
    "GameBackendClient",
    "GameBackendError",
    "Health",
    "IdempotencyConflict",
    "IntegrityMismatch",
    "NotFound",
    "RestoreRequest",
    "RestoreResult",
    "RoleUpdate",
    "StaleConfigVersion",
    "Unauthorized",
]
