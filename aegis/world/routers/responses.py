"""The error answers the world's routes declare in the OpenAPI document (all :class:`ErrorBody`)."""

from __future__ import annotations

from typing import Any

from aegis.world.client import ErrorBody

# Request bodies above this many bytes are refused with 413 before they are read in full
# (the largest legitimate body, a full parameter set, is under 2 KiB).
MAX_BODY_BYTES = 64 * 1024

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Host header is not this server's (DNS rebinding guard)"},
    401: {"model": ErrorBody, "description": "No bearer token, or one this server does not know"},
    403: {
        "model": ErrorBody,
        "description": "Token lacks the scope, is revoked, expired or rotated out, or the caller is isolated",
    },
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    413: {"model": ErrorBody, "description": f"Request body larger than {MAX_BODY_BYTES} bytes"},
}
ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": ErrorBody, "description": "Unknown shard or snapshot; details list the known ones"},
    422: {
        "model": ErrorBody,
        "description": "Invalid request: the message says which field and what is accepted",
    },
}
# Answers of a write on a shard: unknown shard, invalid body, auth, body too large.
SHARD_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {**ERRORS, **WRITE_ERRORS}
