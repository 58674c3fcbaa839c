"""The signed, hash-chained, append-only audit ledger.

Every policy decision and every lifecycle transition is one :class:`AuditRecord`.
Each record carries the hash of the one before it (genesis: 64 zeros), its own
hash (sha256 over a canonical JSON of every field except the signature) and an
Ed25519 signature over that hash. Changing any byte of any record, removing,
reordering or re-signing records breaks :meth:`Ledger.verify`, which names the
first bad record.

Appends are serialized so concurrent writers never fork the chain: SQLite takes
the write lock up front (``BEGIN IMMEDIATE``), PostgreSQL locks the chain-head
row (``SELECT ... FOR UPDATE``); unique constraints on ``seq`` and
``prev_hash`` back both up. There is no update or delete API.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from aegis.config import paths
from aegis.domain import AuditRecord, AutonomousChangeSet, Decision, PromotionState, new_id, utcnow
from aegis.ledger import signing
from aegis.ledger.models import (
    GENESIS_HASH,
    HEAD_ROW_ID,
    POSTGRES_TRIGGERS,
    SQLITE_TRIGGERS,
    audit_records,
    ledger_head,
    metadata,
)

HASHED_FIELDS = (
    "seq",
    "record_id",
    "recorded_at",
    "actor",
    "kind",
    "subject",
    "payload",
    "prev_hash",
    "key_id",
)
APPEND_RETRIES = 20
RETRY_BACKOFF_S = 0.05
SQLITE_BUSY_TIMEOUT_S = 60.0
VERIFY_BATCH = 1000
INIT_LOCK_KEY = 0x41E615  # pg advisory lock serializing schema creation between processes
MAX_TEXT = {"actor": 200, "kind": 64, "subject": 200}


class LedgerError(RuntimeError):
    """The ledger cannot be opened or written (corrupt file, refused key, broken chain head)."""


class BadRecord(BaseModel):
    seq: int | None = Field(
        None, description="Sequence number of the first bad record (None: the store itself)"
    )
    record_id: str | None = None
    reason: str


class VerifyReport(BaseModel):
    """What :meth:`Ledger.verify` found: ``ok`` only if every link and every signature holds."""

    ok: bool
    records_checked: int = 0
    head_seq: int = 0
    first_bad: BadRecord | None = None
    key_ids: list[str] = Field(default_factory=list, description="Keys that signed the records checked")

    def summary(self) -> str:
        if self.ok:
            return f"ledger OK: {self.records_checked} record(s), chain intact, every signature valid"
        bad = self.first_bad
        assert bad is not None
        where = f"record seq={bad.seq} ({bad.record_id})" if bad.seq is not None else "the ledger store"
        return f"ledger TAMPERED or CORRUPT at {where}: {bad.reason} ({self.records_checked} record(s) checked before it)"


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, no NaN: the byte string hashes are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def format_ts(ts: datetime) -> str:
    """UTC, microseconds, ``+00:00``: one spelling per instant, so the hash is stable."""
    if ts.tzinfo is None:
        raise ValueError("recorded_at must be timezone-aware")
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def record_hash(fields: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of the hashed fields (everything but ``hash`` and ``signature``)."""
    doc = {k: fields[k] for k in HASHED_FIELDS}
    if isinstance(doc["recorded_at"], datetime):
        doc["recorded_at"] = format_ts(doc["recorded_at"])
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def _normalize_payload(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    try:
        plain = to_jsonable_python(payload)
        text_ = canonical_json(plain)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"payload is not JSON-serializable (no NaN/inf, no arbitrary objects): {exc}"
        ) from exc
    return json.loads(text_), text_


class Ledger:
    """The audit ledger at ``url`` (default ``paths().ledger_url``), signed with the key in ``key_dir``."""

    def __init__(
        self, url: str | None = None, key_dir: Path | None = None, *, read_only: bool = False
    ) -> None:
        """Open the ledger; ``read_only`` for verifying and reading (``aegis audit``).

        A writer loads (or makes, on first use) the signing key and creates the
        schema. A reader touches nothing: it needs no private key, never creates,
        replaces or archives key material, and refuses a SQLite ledger file that
        does not exist rather than creating an empty one.
        """
        home = paths()
        self.url = url or home.ledger_url
        self.key_dir = key_dir or home.keys
        self.read_only = read_only
        self._key: signing.SigningKey | None = None
        self.public_key_pem: str | None = None
        self.key_id: str | None = None
        if read_only:
            current = signing.current_public_key(self.key_dir)
            if current is not None:
                self.key_id, self.public_key_pem = current
            self._engine = self._make_engine(self.url, create_dirs=False)
            self._require_existing_store()
        else:
            self._key = signing.load_or_create(self.key_dir)
            self.public_key_pem = self._key.public_key_pem
            self.key_id = self._key.key_id
            self._engine = self._make_engine(self.url)
            self._init_schema()

    # ------------------------------------------------------------------ set-up

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @staticmethod
    def _sqlite_path(url: str) -> str:
        return url.split("///", 1)[1] if "///" in url else ""

    def _require_existing_store(self) -> None:
        """A reader never creates the store: a missing SQLite file is an error that says where it looked."""
        if self.dialect != "sqlite":
            return
        db_path = self._sqlite_path(self.url)
        if db_path and db_path != ":memory:" and not Path(db_path).is_file():
            raise LedgerError(
                f"no audit ledger at {db_path}: nothing has been recorded under this AEGIS_HOME "
                "(check AEGIS_HOME, or pass --url)"
            )

    def _make_engine(self, url: str, create_dirs: bool = True) -> Engine:
        if url.startswith("sqlite"):
            db_path = self._sqlite_path(url)
            if create_dirs and db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

            @event.listens_for(engine, "connect")
            def _no_implicit_tx(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (pysqlite would defer it)

            @event.listens_for(engine, "begin")
            def _begin(conn: Connection) -> None:
                immediate = conn.get_execution_options().get("ledger_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

            return engine
        if url.startswith("postgresql"):
            return create_engine(url, pool_pre_ping=True)
        raise LedgerError(f"unsupported ledger URL {url!r}: use sqlite:///PATH or postgresql+psycopg://...")

    def _write_conn(self) -> Connection:
        return self._engine.connect().execution_options(ledger_write=True)

    def _init_schema(self) -> None:
        try:
            with self._write_conn() as conn, conn.begin():
                if self.dialect == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": INIT_LOCK_KEY})
                metadata.create_all(conn)
                for ddl in SQLITE_TRIGGERS if self.dialect == "sqlite" else POSTGRES_TRIGGERS:
                    conn.exec_driver_sql(ddl)
                head = conn.execute(select(ledger_head.c.id).where(ledger_head.c.id == HEAD_ROW_ID)).first()
                if head is None:
                    last = conn.execute(
                        select(audit_records.c.seq, audit_records.c.hash)
                        .order_by(audit_records.c.seq.desc())
                        .limit(1)
                    ).first()
                    seq, digest = (last.seq, last.hash) if last else (0, GENESIS_HASH)
                    conn.execute(insert(ledger_head).values(id=HEAD_ROW_ID, seq=seq, hash=digest))
        except DBAPIError as exc:
            raise LedgerError(f"cannot open the audit ledger at {self._safe_url()}: {exc.orig}") from exc

    def _safe_url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        """Close pooled connections (tests and short-lived processes)."""
        self._engine.dispose()

    # ------------------------------------------------------------------ writing

    def append(self, kind: str, subject: str, payload: dict[str, Any], actor: str) -> AuditRecord:
        """Add one signed record at the head of the chain and return it."""
        if self._key is None:
            raise LedgerError(
                "this ledger was opened read-only (for verifying); open it without read_only to append"
            )
        for name, value in (("kind", kind), ("subject", subject), ("actor", actor)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string")
            if len(value) > MAX_TEXT[name]:
                raise ValueError(f"{name} is longer than {MAX_TEXT[name]} characters")
        plain, payload_text = _normalize_payload(payload)
        last_exc: Exception | None = None
        for attempt in range(APPEND_RETRIES):
            try:
                return self._append_once(kind, subject, plain, payload_text, actor)
            except (IntegrityError, OperationalError) as exc:  # lost a race or the db was busy: try again
                if isinstance(exc, OperationalError) and "locked" not in str(exc.orig).lower():
                    raise LedgerError(f"cannot append to the audit ledger: {exc.orig}") from exc
                last_exc = exc
                time.sleep(RETRY_BACKOFF_S * (attempt + 1))
            except DBAPIError as exc:
                raise LedgerError(f"cannot append to the audit ledger: {exc.orig}") from exc
        raise LedgerError(f"could not append after {APPEND_RETRIES} attempts: {last_exc}")

    def _append_once(
        self, kind: str, subject: str, payload: dict[str, Any], payload_text: str, actor: str
    ) -> AuditRecord:
        key = self._key
        assert key is not None  # append() refuses a read-only ledger before this
        with self._write_conn() as conn, conn.begin():
            head = conn.execute(
                select(ledger_head.c.seq, ledger_head.c.hash)
                .where(ledger_head.c.id == HEAD_ROW_ID)
                .with_for_update()
            ).one()
            last = conn.execute(
                select(audit_records.c.seq, audit_records.c.hash)
                .order_by(audit_records.c.seq.desc())
                .limit(1)
            ).first()
            last_seq, last_hash = (last.seq, last.hash) if last else (0, GENESIS_HASH)
            if (head.seq, head.hash) != (last_seq, last_hash):
                raise LedgerError(
                    f"refusing to append: the chain head (seq {head.seq}) disagrees with the last record "
                    f"(seq {last_seq}); run 'aegis audit verify'"
                )
            fields: dict[str, Any] = {
                "seq": last_seq + 1,
                "record_id": new_id("aud"),
                "recorded_at": format_ts(utcnow()),
                "actor": actor,
                "kind": kind,
                "subject": subject,
                "payload": payload,
                "prev_hash": last_hash,
                "key_id": key.key_id,
            }
            digest = record_hash(fields)
            signature = key.sign(digest)
            conn.execute(
                insert(audit_records).values(
                    **{**fields, "payload": payload_text}, hash=digest, signature=signature
                )
            )
            conn.execute(
                update(ledger_head)
                .where(ledger_head.c.id == HEAD_ROW_ID)
                .values(seq=fields["seq"], hash=digest)
            )
        return AuditRecord.model_validate({**fields, "hash": digest, "signature": signature})

    def record_decision(self, decision: Decision, changeset: AutonomousChangeSet, actor: str) -> AuditRecord:
        """A policy Decision together with the exact changeset it judged (replayable)."""
        if decision.changeset_id != changeset.id:
            raise ValueError(
                f"decision {decision.id} is about {decision.changeset_id}, not changeset {changeset.id}"
            )
        payload = {
            "decision": decision.model_dump(mode="json"),
            "changeset": changeset.model_dump(mode="json"),
        }
        return self.append("decision", changeset.id, payload, actor)

    def record_transition(
        self,
        changeset_id: str,
        from_state: PromotionState | str,
        to_state: PromotionState | str,
        actor: str,
        reason: str = "",
        detail: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """A lifecycle transition: payload ``{"from", "to", "reason", "detail"}`` (``audit show`` reads it)."""
        payload = {
            "from": PromotionState(from_state).value,
            "to": PromotionState(to_state).value,
            "reason": reason,
            "detail": detail or {},
        }
        return self.append("transition", changeset_id, payload, actor)

    # ------------------------------------------------------------------ reading

    def records(self, subject: str | None = None) -> list[AuditRecord]:
        """Every record (or those about ``subject``), in chain order."""
        query = select(audit_records).order_by(audit_records.c.seq)
        if subject is not None:
            query = query.where(audit_records.c.subject == subject)
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(query).mappings().all()
        except DBAPIError as exc:
            raise LedgerError(f"cannot read the audit ledger: {exc.orig}") from exc
        out = []
        for row in rows:
            try:
                out.append(AuditRecord.model_validate({**row, "payload": json.loads(row["payload"])}))
            except ValueError as exc:
                raise LedgerError(
                    f"record seq={row['seq']} is unreadable ({exc}); run 'aegis audit verify'"
                ) from exc
        return out

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record; (0, 64 zeros) for an empty ledger."""
        with self._engine.connect() as conn:
            row = conn.execute(select(ledger_head.c.seq, ledger_head.c.hash)).one()
        return int(row.seq), str(row.hash)

    def _rows(self, conn: Connection) -> Iterator[dict[str, Any]]:
        last = None
        while True:  # keyset pagination: bounded memory on a long chain
            query = select(audit_records).order_by(audit_records.c.seq).limit(VERIFY_BATCH)
            if last is not None:
                query = query.where(audit_records.c.seq > last)
            batch = conn.execute(query).mappings().all()
            if not batch:
                return
            for row in batch:
                yield dict(row)
            last = batch[-1]["seq"]

    # ------------------------------------------------------------------ verifying

    def verify(self, trusted_keys: dict[str, Any] | None = None) -> VerifyReport:
        """Check every link, hash and signature; name the first bad record.

        ``trusted_keys`` (key_id -> Ed25519 public key) defaults to the public
        keys in ``key_dir``: a record signed by any other key fails, whatever
        key_id it claims.
        """
        keys = trusted_keys if trusted_keys is not None else signing.trusted_public_keys(self.key_dir)
        if not keys:
            raise signing.LedgerKeyError(
                f"no ledger public key in {self.key_dir}: cannot verify signatures without the key(s) that signed "
                f"the ledger ({signing.PUBLIC_KEY_FILE}, or archived <key_id>{signing.ARCHIVE_SUFFIX}); "
                "restore them from a backup or from 'aegis audit export-key' output"
            )
        checked, used_keys = 0, set[str]()
        prev_hash, expected_seq = GENESIS_HASH, 1

        def bad(reason: str, row: dict[str, Any] | None = None) -> VerifyReport:
            return VerifyReport(
                ok=False,
                records_checked=checked,
                head_seq=expected_seq - 1,
                first_bad=BadRecord(
                    seq=row.get("seq") if row else None,
                    record_id=row.get("record_id") if row else None,
                    reason=reason,
                ),
                key_ids=sorted(used_keys),
            )

        try:
            with self._engine.connect() as conn:
                if self.dialect == "sqlite":
                    result: list[Any] = list(conn.exec_driver_sql("PRAGMA integrity_check").scalars().all())
                    if result != ["ok"]:
                        return bad(f"the database file is corrupt: {'; '.join(map(str, result))[:300]}")
                for row in self._rows(conn):
                    reason = self._check_row(row, expected_seq, prev_hash, keys)
                    if reason:
                        return bad(reason, row)
                    used_keys.add(row["key_id"])
                    checked += 1
                    prev_hash, expected_seq = row["hash"], expected_seq + 1
                head = conn.execute(select(ledger_head.c.seq, ledger_head.c.hash)).all()
        except DBAPIError as exc:
            return bad(f"the ledger cannot be read: {exc.orig}")
        if len(head) != 1:
            return bad(f"the chain-head table has {len(head)} rows, expected 1")
        if (head[0].seq, head[0].hash) != (expected_seq - 1, prev_hash):
            return bad(
                f"the chain head names seq {head[0].seq} (hash {head[0].hash[:12]}…) but the last record is "
                f"seq {expected_seq - 1} (hash {prev_hash[:12]}…): records were removed from the end or the head "
                "was altered"
            )
        return VerifyReport(ok=True, records_checked=checked, head_seq=checked, key_ids=sorted(used_keys))

    @staticmethod
    def _check_row(
        row: dict[str, Any], expected_seq: int, prev_hash: str, keys: dict[str, Any]
    ) -> str | None:
        """Why ``row`` breaks the chain, or None."""
        if row["seq"] != expected_seq:
            return f"sequence gap: expected seq {expected_seq}, found {row['seq']} (a record was removed or reordered)"
        if row["prev_hash"] != prev_hash:
            return (
                f"prev_hash {str(row['prev_hash'])[:12]}… does not match the hash of the record before it "
                f"({prev_hash[:12]}…): a record was removed, inserted or reordered"
            )
        try:
            payload = json.loads(row["payload"])
        except (TypeError, ValueError) as exc:
            return f"payload is not valid JSON ({exc}): the record was altered"
        if not isinstance(payload, dict) or canonical_json(payload) != row["payload"]:
            return "payload is not in canonical form: the record was altered"
        digest = record_hash({**row, "payload": payload})
        if digest != row["hash"]:
            return f"content hash mismatch (stored {str(row['hash'])[:12]}…, computed {digest[:12]}…): a field was altered"
        key = keys.get(row["key_id"])
        if key is None:
            return f"signed by key {row['key_id']!r}, which is not a trusted ledger key (re-signed with another key?)"
        if not signing.verify_signature(key, digest, row["signature"]):
            return f"signature does not verify with key {row['key_id']}: the record was re-signed or altered"
        return None
