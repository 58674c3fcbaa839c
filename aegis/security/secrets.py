"""The platform's own service tokens: where its clients find them, and how they are kept fresh.

The profile's secret source: the environment first (``AEGIS_TOKEN_<SCOPE>``, how
a deployment injects secrets), else one file per scope under
``AEGIS_HOME/secrets/`` (directory 0700, files 0600). :func:`ensure_service_tokens`
mints the local files on ``aegis up`` and ``aegis world serve`` and renews a
token before it expires by rotating it, so a client holding the old one keeps
working through the grace period (no downtime).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aegis.config import AegisPaths, paths
from aegis.security.tokens import DEFAULT_GRACE, TokenStore, parse_token

ENV_PREFIX = "AEGIS_TOKEN_"
SERVICE_TTL = timedelta(days=7)
# Renew when less than this is left, so a long-running client never meets an expired token.
RENEW_BEFORE = timedelta(days=2)
SERVICE_ACTOR = "aegis-service-tokens"
# The platform's own credentials: file name stem -> scopes.
SERVICE_TOKENS: dict[str, tuple[str, ...]] = {
    "control": ("read", "control"),
    "read": ("read",),
    "faults": ("faults",),
    "alerts": ("alerts",),
}
DIR_MODE = 0o700
FILE_MODE = 0o600


def token_file(scope: str, aegis_paths: AegisPaths | None = None) -> Path:
    return (aegis_paths or paths()).secrets / f"{scope}.token"


def service_token(scope: str, aegis_paths: AegisPaths | None = None) -> str | None:
    """The token a platform client uses for ``scope``: env ``AEGIS_TOKEN_<SCOPE>``, else the file, else None."""
    env = os.environ.get(f"{ENV_PREFIX}{scope.upper()}", "").strip()
    if env:
        return env
    path = token_file(scope, aegis_paths)
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


def _write_secret(path: Path, secret: str) -> None:
    """Write 0600 from the first byte (never a moment world-readable), then swap in atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, (secret + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


def _needs_new(store: TokenStore, raw: str | None, scopes: tuple[str, ...], now: datetime) -> str | None:
    """Why the file's token cannot stay ("missing", "invalid", "renew"), or None when it is fine."""
    if raw is None:
        return "missing"
    parsed = parse_token(raw)
    info = store.get(parsed[0]) if parsed else None
    if info is None or info.state(now) != "active" or sorted(info.scopes) != sorted(scopes):
        return "invalid"
    try:
        store._check(raw, scopes[-1], "")  # the secret must match, not just the id
    except Exception:
        return "invalid"
    if info.expires_at is not None and info.expires_at - now < RENEW_BEFORE:
        return "renew"
    return None


def ensure_service_tokens(aegis_paths: AegisPaths | None = None) -> dict[str, Path]:
    """Make sure ``secrets/<scope>.token`` holds a valid, not nearly expired token for each service scope.

    Missing or invalid (revoked, unknown, expired): a new token. Nearly expired:
    rotated, so the old one keeps working for the grace period. Returns the files.
    """
    p = aegis_paths or paths()
    p.home.mkdir(parents=True, exist_ok=True)
    p.secrets.mkdir(parents=True, exist_ok=True)
    os.chmod(p.secrets, DIR_MODE)
    store = TokenStore(aegis_paths=p)
    now = datetime.now(UTC)
    files: dict[str, Path] = {}
    try:
        for name, scopes in SERVICE_TOKENS.items():
            path = token_file(name, p)
            try:
                raw = path.read_text().strip() or None
            except OSError:
                raw = None
            why = _needs_new(store, raw, scopes, now)
            if why == "renew" and raw is not None:
                parsed = parse_token(raw)
                assert parsed is not None
                issued = store.rotate(parsed[0], actor=SERVICE_ACTOR, grace=DEFAULT_GRACE)
                _write_secret(path, issued.token)
            elif why is not None:
                issued = store.issue(
                    list(scopes), ttl=SERVICE_TTL, label=f"service:{name}", actor=SERVICE_ACTOR
                )
                _write_secret(path, issued.token)
            elif path.stat().st_mode & 0o077:
                os.chmod(path, FILE_MODE)
            files[name] = path
    finally:
        store.close()
    return files
