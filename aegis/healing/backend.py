"""The game backend as healing sees it: the remediation endpoints of the contract
(``/v1/faults``, ``/v1/shards/{id}/signals``, ``/v1/shards/{id}/remediations``) plus
the few reads and config writes a playbook needs.

Plain httpx with the platform's ``control`` credential (``service_token("control")``):
remediation is a control action. A failure is a :class:`BackendError` carrying the
server's own message, which the executor records as the action's outcome.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from aegis.domain import ShardConfig, ShardInfo, WorldParams

DEFAULT_TIMEOUT_S = 10.0


class BackendError(RuntimeError):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def control_token() -> str | None:
    try:
        from aegis.security.secrets import service_token
    except ImportError:  # pragma: no cover - the security package is part of aegis
        return None
    return service_token("control")


class RemediationBackend:
    """HTTP client of the remediation part of the game backend contract."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        tok = token if token is not None else control_token()
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemediationBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise BackendError(f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}") from exc
        if r.status_code >= 400:
            try:
                msg = r.json().get("message", r.text)
            except ValueError:
                msg = r.text
            raise BackendError(f"{method} {path} answered {r.status_code}: {msg}", r.status_code)
        return r.json()

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/faults"))

    def signals(self, shard_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/shards/{shard_id}/signals"))

    def remediate(self, shard_id: str, action: str, **body: Any) -> dict[str, Any]:
        payload = {"action": action, **{k: v for k, v in body.items() if v is not None}}
        return dict(self._call("POST", f"/v1/shards/{shard_id}/remediations", json=payload))

    def shard(self, shard_id: str) -> ShardInfo:
        return ShardInfo.model_validate(self._call("GET", f"/v1/shards/{shard_id}"))

    def get_config(self, shard_id: str) -> ShardConfig:
        return ShardConfig.model_validate(self._call("GET", f"/v1/shards/{shard_id}/config"))

    def put_config(self, shard_id: str, params: WorldParams, if_match: int) -> ShardConfig:
        return ShardConfig.model_validate(
            self._call(
                "PUT",
                f"/v1/shards/{shard_id}/config",
                json={"params": params.model_dump(mode="json")},
                headers={"If-Match": f'"{if_match}"', "Idempotency-Key": f"heal-{uuid.uuid4().hex}"},
            )
        )
