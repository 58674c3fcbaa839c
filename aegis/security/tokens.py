"""Scoped bearer tokens: issued, verified, rotated and revoked; refusals and isolations kept.

Axiom 2 (least privilege, authenticated control paths): every control path asks
for a token that carries the scope it needs, and nothing else. A token is
``aegis.<id>.<secret>``: the id is public (it names the token in ``aegis token
list``, the ledger and refusal records), the secret is 32 random bytes shown
once, at issue. Only ``sha256(secret)`` is stored, compared in constant time, so
a copy of ``security.db`` grants nothing.

Tokens are short-lived by default (:data:`DEFAULT_TTL`, 12 hours). Rotation has
no downtime: :meth:`TokenStore.rotate` issues the replacement at once and lets
the old token work until its grace period ends. Every refused call is written
down (:meth:`TokenStore.record_refusal`) so the healing loop can open a security
incident and contain the caller (:meth:`TokenStore.isolate`).

Locally the store is ``AEGIS_HOME/security.db`` (SQLite, WAL, mode 0600); in
prod the platform's PostgreSQL (schema ``aegis_security``, :mod:`aegis.db`).
Writes take the store's write lock first (``BEGIN IMMEDIATE`` on SQLite, an
advisory lock on PostgreSQL), so isolating a caller twice at once records once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from aegis import db
from aegis.config import AegisPaths, paths

log = logging.getLogger(__name__)

SCOPES = ("read", "control", "faults", "alerts")
# A scope that includes another: control may read what it changes.
IMPLIED_SCOPES: dict[str, tuple[str, ...]] = {"control": ("read",)}
DEFAULT_TTL = timedelta(hours=12)
MAX_TTL = timedelta(days=365)
DEFAULT_GRACE = timedelta(minutes=15)
TOKEN_PREFIX = "aegis"
SECRET_BYTES = 32
MAX_TOKEN_CHARS = 256
MAX_TEXT_CHARS = 500
STORE = "security"
SQLITE_BUSY_TIMEOUT_S = db.SQLITE_BUSY_TIMEOUT_S
WRITE_LOCK = db.store_schema(STORE)
# Refusal records are bounded (a flood of bad requests must not fill the disk): the newest
# REFUSALS_KEPT are kept, pruned every REFUSALS_PRUNE_EVERY inserts.
REFUSALS_KEPT = 100_000
REFUSALS_PRUNE_EVERY = 1_000
_TOKEN_RE = re.compile(r"^aegis\.(tk-[0-9a-f]{12})\.([A-Za-z0-9_-]{16,128})$")

# Why a call was refused: the bounded label set of ``aegis_refused_requests_total{reason}``.
REFUSAL_REASONS = (
    "missing",  # 401: no credential
    "malformed",  # 401: not an Aegis token
    "unknown",  # 401: no such token id
    "forged",  # 401: known id, wrong secret
    "revoked",  # 403
    "expired",  # 403
    "rotated",  # 403: replaced, and its grace period is over
    "scope",  # 403: valid token without the scope the endpoint needs
    "isolated",  # 403: the caller (address or token) is contained by an incident
    "host",  # 400: Host header not this server's (DNS rebinding)
)
# Reasons that mean a token that once was valid was used after it was withdrawn.
_WITHDRAWN = {"revoked", "rotated"}

metadata = MetaData()
tokens_table = Table(
    "tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("label", String(MAX_TEXT_CHARS), nullable=False, default=""),
    Column("scopes", Text, nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("revoke_reason", String(MAX_TEXT_CHARS), nullable=True),
    Column("replaced_by", String(32), nullable=True),
    Column("grace_until", DateTime(timezone=True), nullable=True),
    Column("issued_by", String(200), nullable=False),
)
refusals_table = Table(
    "refusals",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("caller", String(MAX_TEXT_CHARS), nullable=False),
    Column("path", String(MAX_TEXT_CHARS), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("status", Integer, nullable=False),
    Column("token_id", String(32), nullable=True),
    Column("revoked", Boolean, nullable=False, default=False),
    Column("detail", String(MAX_TEXT_CHARS), nullable=False, default=""),
)
isolations_table = Table(
    "isolations",
    metadata,
    Column("caller", String(MAX_TEXT_CHARS), primary_key=True),
    Column("reason", String(MAX_TEXT_CHARS), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)


def _create_tables(conn: Connection) -> None:
    metadata.create_all(conn)  # only what is missing: adopts a store made before migrations


MIGRATIONS = [db.Migration(1, "tokens, refusals, isolations", _create_tables)]


def default_url(aegis_paths: AegisPaths | None = None) -> str:
    """The store's URL: ``$AEGIS_SECURITY_URL``, the platform database in prod, else ``AEGIS_HOME/security.db``."""
    return db.store_url(STORE, sqlite_path=(aegis_paths or paths()).security_db)


class AuthError(Exception):
    """A refused credential: ``status`` 401 (no or invalid credential) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str, message: str, token_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.token_id = token_id


class IssuedToken(BaseModel):
    """A freshly issued token; ``token`` is the secret and is never shown again."""

    id: str
    token: str
    scopes: list[str]
    expires_at: datetime | None
    label: str = ""


class TokenInfo(BaseModel):
    """What the store knows about a token (never its secret)."""

    id: str
    label: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    replaced_by: str | None = None
    grace_until: datetime | None = None
    issued_by: str = ""

    def state(self, now: datetime | None = None) -> str:
        """``active``, ``grace`` (rotated, still accepted), ``rotated``, ``revoked`` or ``expired``."""
        now = now or _now()
        if self.revoked_at is not None:
            return "revoked"
        if self.grace_until is not None:
            return "grace" if now < self.grace_until else "rotated"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


class Refusal(BaseModel):
    """One refused call."""

    seq: int
    at: datetime
    caller: str
    path: str
    reason: str
    status: int
    token_id: str | None = None
    revoked: bool = Field(False, description="a revoked or rotated-out token was used")
    detail: str = ""


class Isolation(BaseModel):
    caller: str
    reason: str
    actor: str
    at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(ts: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if ts is None:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def expand_scopes(scopes: list[str] | tuple[str, ...]) -> set[str]:
    """The scopes a token effectively holds (``control`` includes ``read``)."""
    held = set(scopes)
    for scope in scopes:
        held.update(IMPLIED_SCOPES.get(scope, ()))
    return held


def validate_scopes(scopes: list[str] | tuple[str, ...]) -> list[str]:
    """Known, de-duplicated, in :data:`SCOPES` order; ``ValueError`` names the accepted ones."""
    if not scopes:
        raise ValueError(f"a token needs at least one scope; accepted: {', '.join(SCOPES)}")
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(SCOPES)}")
    return [s for s in SCOPES if s in set(scopes)]


def parse_token(raw: str) -> tuple[str, str] | None:
    """``(token_id, secret)`` of a well-formed token, else ``None``."""
    if len(raw) > MAX_TOKEN_CHARS:
        return None
    match = _TOKEN_RE.match(raw.strip())
    return (match.group(1), match.group(2)) if match else None


def _ledger_append(
    kind: str, subject: str, payload: dict[str, Any], actor: str, aegis_paths: AegisPaths | None
) -> None:
    """Security decisions are decisions: each one is a signed ledger record (never a secret)."""
    from aegis.ledger.ledger import Ledger

    ledger = (
        Ledger(db.store_url("ledger", sqlite_path=aegis_paths.ledger), aegis_paths.keys)
        if aegis_paths
        else Ledger()
    )
    try:
        ledger.append(kind=kind, subject=subject, payload=payload, actor=actor)
    finally:
        ledger.dispose()


class TokenStore:
    """Tokens, refusals and isolations in ``url`` (default :func:`default_url`: ``security.db``
    under ``AEGIS_HOME`` locally, the platform database in prod).

    ``aegis_paths`` names another ``AEGIS_HOME`` than the environment's (its
    security database and ledger). ``ledger=False`` skips the ledger records
    (only for a store that is not the platform's, e.g. a scratch store).
    """

    def __init__(
        self, url: str | None = None, *, aegis_paths: AegisPaths | None = None, ledger: bool = True
    ) -> None:
        self._paths = aegis_paths
        url = url or default_url(aegis_paths)
        self.url = url
        self._ledger = ledger
        self.engine = db.open_store(url, STORE, MIGRATIONS)
        db_file = db.sqlite_file(url)
        if db_file is not None and db_file.exists():
            db_file.chmod(0o600)  # hashes only, but who was refused and isolated is nobody's business

    def close(self) -> None:
        self.engine.dispose()

    # -- tokens -------------------------------------------------------------------------------

    def issue(
        self,
        scopes: list[str],
        ttl: timedelta | None = DEFAULT_TTL,
        label: str = "",
        actor: str = "operator",
    ) -> IssuedToken:
        """Mint a token for ``scopes`` valid for ``ttl`` (``None``: no expiry; discouraged)."""
        scopes = validate_scopes(scopes)
        if ttl is not None and (ttl <= timedelta(0) or ttl > MAX_TTL):
            raise ValueError(f"ttl must be positive and at most {MAX_TTL.days} days, got {ttl}")
        token_id = f"tk-{secrets.token_hex(6)}"
        secret = secrets.token_urlsafe(SECRET_BYTES)
        now = _now()
        expires_at = now + ttl if ttl is not None else None
        with db.write_transaction(self.engine, WRITE_LOCK) as conn:
            conn.execute(
                insert(tokens_table).values(
                    token_id=token_id,
                    label=_clip(label),
                    scopes=json.dumps(scopes),
                    secret_sha256=_hash(secret),
                    created_at=now,
                    expires_at=expires_at,
                    issued_by=_clip(actor, 200),
                )
            )
        self._record(
            "token",
            token_id,
            {
                "action": "issue",
                "scopes": scopes,
                "label": label,
                "expires_at": expires_at.isoformat() if expires_at else None,
                "summary": f"token {token_id} issued for {', '.join(scopes)}"
                + (f" ({label})" if label else "")
                + (f", valid until {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ", no expiry"),
            },
            actor,
        )
        return IssuedToken(id=token_id, token=f"{TOKEN_PREFIX}.{token_id}.{secret}", scopes=scopes,
                           expires_at=expires_at, label=label)  # fmt: skip

    def get(self, token_id: str) -> TokenInfo | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(tokens_table).where(tokens_table.c.token_id == token_id))
                .mappings()
                .first()
            )
        return self._info(row) if row else None

    def tokens(self) -> list[TokenInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(tokens_table).order_by(tokens_table.c.created_at)).mappings().all()
        return [self._info(r) for r in rows]

    @staticmethod
    def _info(row: Any) -> TokenInfo:
        return TokenInfo(
            id=row["token_id"],
            label=row["label"] or "",
            scopes=json.loads(row["scopes"]),
            created_at=_aware(row["created_at"]),
            expires_at=_aware(row["expires_at"]),
            revoked_at=_aware(row["revoked_at"]),
            revoke_reason=row["revoke_reason"],
            replaced_by=row["replaced_by"],
            grace_until=_aware(row["grace_until"]),
            issued_by=row["issued_by"],
        )

    def _require(self, token_id: str) -> TokenInfo:
        info = self.get(token_id)
        if info is None:
            raise KeyError(f"no token {token_id!r}; `aegis token list` shows the known ones")
        return info

    def revoke(self, token_id: str, actor: str = "operator", reason: str = "") -> None:
        """Refuse the token from now on (idempotent: revoking twice records once)."""
        info = self._require(token_id)
        if info.revoked_at is not None:
            return
        with db.write_transaction(self.engine, WRITE_LOCK) as conn:
            conn.execute(
                update(tokens_table)
                .where(tokens_table.c.token_id == token_id, tokens_table.c.revoked_at.is_(None))
                .values(revoked_at=_now(), revoke_reason=_clip(reason or "revoked by the operator"))
            )
        self._record(
            "token",
            token_id,
            {
                "action": "revoke",
                "scopes": info.scopes,
                "reason": reason,
                "summary": f"token {token_id} ({', '.join(info.scopes)}) revoked"
                + (f": {reason}" if reason else ""),
            },
            actor,
        )

    def rotate(self, token_id: str, actor: str = "operator", grace: timedelta = DEFAULT_GRACE) -> IssuedToken:
        """Issue the replacement (same scopes and label) now; the old token works until the grace ends.

        The new token lives as long as the old one was meant to (its issued TTL),
        so rotating does not quietly extend or shorten a credential's lifetime.
        """
        info = self._require(token_id)
        state = info.state()
        if state in ("revoked", "rotated"):
            raise ValueError(f"token {token_id} is {state}; issue a new one instead")
        if grace < timedelta(0):
            raise ValueError("grace must not be negative")
        ttl = (info.expires_at - info.created_at) if info.expires_at is not None else None
        new = self.issue(info.scopes, ttl=ttl, label=info.label, actor=actor)
        now = _now()
        grace_until = now + grace
        if info.expires_at is not None:
            grace_until = min(grace_until, max(info.expires_at, now))
        with db.write_transaction(self.engine, WRITE_LOCK) as conn:
            conn.execute(
                update(tokens_table)
                .where(tokens_table.c.token_id == token_id)
                .values(replaced_by=new.id, grace_until=grace_until)
            )
        self._record(
            "token",
            token_id,
            {
                "action": "rotate",
                "replaced_by": new.id,
                "grace_until": grace_until.isoformat(),
                "scopes": info.scopes,
                "summary": f"token {token_id} rotated to {new.id}; the old one is accepted until "
                f"{grace_until:%Y-%m-%d %H:%M:%S} UTC",
            },
            actor,
        )
        return new

    # -- verification ------------------------------------------------------------------------

    def verify(self, raw: str | None, scope: str, caller: str, path: str = "") -> TokenInfo:
        """The token's info if ``raw`` may act with ``scope``; else :class:`AuthError` (recorded)."""
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}; accepted: {', '.join(SCOPES)}")
        try:
            return self._check(raw, scope, caller)
        except AuthError as exc:
            self.record_refusal(caller, path, exc.reason, exc.token_id, exc.status, detail=exc.message)
            raise

    def _check(self, raw: str | None, scope: str, caller: str) -> TokenInfo:
        if caller and self.is_isolated(caller):
            raise AuthError(403, "isolated", f"caller {caller} is isolated by a security incident")
        if raw is None or not raw.strip():
            raise AuthError(401, "missing", f"this endpoint needs a bearer token with scope {scope!r}")
        parsed = parse_token(raw)
        if parsed is None:
            raise AuthError(401, "malformed", "the bearer token is not an Aegis token (aegis.<id>.<secret>)")
        token_id, secret = parsed
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(tokens_table).where(tokens_table.c.token_id == token_id))
                .mappings()
                .first()
            )
        if row is None:
            # still spend a hash comparison, so unknown and forged ids take the same time
            hmac.compare_digest(_hash(secret), "0" * 64)
            raise AuthError(401, "unknown", "the bearer token is not known here", token_id)
        if not hmac.compare_digest(_hash(secret), row["secret_sha256"]):
            raise AuthError(401, "forged", "the bearer token is not valid", token_id)
        info = self._info(row)
        if self.is_isolated(token_id):
            raise AuthError(403, "isolated", f"token {token_id} is isolated by a security incident", token_id)
        state = info.state()
        if state == "revoked":
            raise AuthError(403, "revoked", f"token {token_id} was revoked", token_id)
        if state == "rotated":
            raise AuthError(403, "rotated", f"token {token_id} was rotated to {info.replaced_by}", token_id)
        if state == "expired":
            raise AuthError(403, "expired", f"token {token_id} expired at {info.expires_at:%Y-%m-%d %H:%M} UTC",
                            token_id)  # fmt: skip
        if scope not in expand_scopes(info.scopes):
            raise AuthError(
                403,
                "scope",
                f"token {token_id} has scope(s) {', '.join(info.scopes)}; this endpoint needs {scope!r}",
                token_id,
            )
        return info

    # -- refusals ----------------------------------------------------------------------------

    def record_refusal(
        self,
        caller: str,
        path: str,
        reason: str,
        token_id: str | None,
        status: int,
        detail: str = "",
    ) -> None:
        """Write one refused call down (never raises: a full disk must not turn a 401 into a 500)."""
        try:
            with db.write_transaction(self.engine, WRITE_LOCK) as conn:
                result = conn.execute(
                    insert(refusals_table).values(
                        at=_now(),
                        caller=_clip(caller or "unknown"),
                        path=_clip(path),
                        reason=_clip(reason, 32),
                        status=status,
                        token_id=token_id,
                        revoked=reason in _WITHDRAWN,
                        detail=_clip(detail),
                    )
                )
                seq = result.inserted_primary_key[0] if result.inserted_primary_key else None
                if seq is not None and int(seq) % REFUSALS_PRUNE_EVERY == 0:
                    conn.execute(
                        refusals_table.delete().where(refusals_table.c.seq <= int(seq) - REFUSALS_KEPT)
                    )
        except Exception:  # pragma: no cover - storage failure
            log.exception("could not record a refused call (%s %s)", caller, reason)

    def refusals(self, since: datetime | None = None, limit: int | None = None) -> list[Refusal]:
        query = select(refusals_table).order_by(refusals_table.c.seq)
        if since is not None:
            query = query.where(refusals_table.c.at >= since)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Refusal(
                seq=r["seq"],
                at=_aware(r["at"]),
                caller=r["caller"],
                path=r["path"],
                reason=r["reason"],
                status=r["status"],
                token_id=r["token_id"],
                revoked=bool(r["revoked"]),
                detail=r["detail"] or "",
            )
            for r in rows
        ]

    def refusal_counts(self) -> dict[str, int]:
        """Refusals so far by reason (every known reason present, zero included)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(refusals_table.c.reason, func.count()).group_by(refusals_table.c.reason)
            ).all()
        counts = dict.fromkeys(REFUSAL_REASONS, 0)
        counts.update({str(row[0]): int(row[1]) for row in rows})
        return counts

    # -- isolation ---------------------------------------------------------------------------

    def isolate(self, caller: str, reason: str, actor: str) -> None:
        """Refuse ``caller`` (a client address or a token id) before any token check."""
        if not caller:
            raise ValueError("isolate needs a caller (a client address or a token id)")
        with db.write_transaction(self.engine, WRITE_LOCK) as conn:
            existing = conn.execute(
                select(isolations_table.c.caller).where(isolations_table.c.caller == caller)
            ).first()
            if existing is not None:
                return
            conn.execute(
                insert(isolations_table).values(
                    caller=_clip(caller), reason=_clip(reason), actor=_clip(actor, 200), at=_now()
                )
            )
        self._record(
            "security",
            caller,
            {"action": "isolate", "reason": reason, "summary": f"caller {caller} isolated: {reason}"},
            actor,
        )

    def release(self, caller: str, actor: str = "operator") -> None:
        with db.write_transaction(self.engine, WRITE_LOCK) as conn:
            deleted = conn.execute(
                isolations_table.delete().where(isolations_table.c.caller == caller)
            ).rowcount
        if deleted:
            self._record(
                "security",
                caller,
                {"action": "release", "summary": f"caller {caller} released from isolation"},
                actor,
            )

    def is_isolated(self, caller: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(isolations_table.c.caller).where(isolations_table.c.caller == caller)
            ).first()
        return row is not None

    def isolations(self) -> list[Isolation]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(isolations_table).order_by(isolations_table.c.at)).mappings().all()
        return [
            Isolation(caller=r["caller"], reason=r["reason"], actor=r["actor"], at=_aware(r["at"]))
            for r in rows
        ]

    def _record(self, kind: str, subject: str, payload: dict[str, Any], actor: str) -> None:
        if self._ledger:
            _ledger_append(kind, subject, payload, actor, self._paths)
