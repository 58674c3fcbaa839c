"""The signed, hash-chained, append-only audit ledger, anchored outside its database.

Every policy decision, lifecycle transition, token, canary verdict, healing
action and model promotion is one :class:`AuditRecord`. Each record carries the
hash of the one before it (genesis: 64 zeros), its own hash (sha256 over a
canonical JSON of every field except the signature) and an Ed25519 signature
over that hash. Changing any byte of any record, removing, reordering or
re-signing records breaks :meth:`Ledger.verify`, which names the first bad record.

Keys are pinned in the chain: record 1 is a ``genesis`` record naming the
trusted key (fingerprint and public key); a ``key_rotation`` record, signed by
the key it retires, names the next one. Only those keys are trusted: a public
key dropped into ``keys/`` is not, and neither is a new private key made after
the trusted one was lost.

Removing records from the end (or all of them) and resetting the head row
leaves a valid, shorter chain, so the head is anchored outside the database:
after each append a signed checkpoint (head seq, head hash, trusted key
fingerprints, time) goes to the witness (:mod:`aegis.ledger.witness`); verify
fails when the witness saw more, or other, records than the ledger holds.

Appends are serialized so concurrent writers never fork the chain: SQLite takes
the write lock up front (``BEGIN IMMEDIATE``), PostgreSQL takes the ledger's
advisory lock and locks the chain-head row (``SELECT ... FOR UPDATE``); unique
constraints on ``seq`` and ``prev_hash`` back both up. There is no update or
delete API.

Where: ``AEGIS_HOME/ledger.db`` locally; in prod the platform's PostgreSQL,
schema ``aegis_ledger`` (:func:`default_url`, :mod:`aegis.db`). A writer
migrates the schema on open (:data:`MIGRATIONS`); a reader never does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from aegis import db
from aegis.config import AegisPaths, paths
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
from aegis.ledger.witness import Checkpoint, Witness, WitnessError, default_witness

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
SQLITE_BUSY_TIMEOUT_S = db.SQLITE_BUSY_TIMEOUT_S
VERIFY_BATCH = 1000
STORE = "ledger"
WRITE_LOCK = db.store_schema(STORE)  # every writer's lock on PostgreSQL (SQLite: BEGIN IMMEDIATE)
MAX_TEXT = {"actor": 200, "kind": 64, "subject": 200}
GENESIS_KIND = "genesis"
ROTATION_KIND = "key_rotation"
KEY_KINDS = (GENESIS_KIND, ROTATION_KIND)
LEDGER_SUBJECT = "ledger"
LEDGER_ACTOR = "aegis-ledger"
KIND_INDEX_DDL = "CREATE INDEX IF NOT EXISTS ix_audit_records_kind ON audit_records (kind)"

log = logging.getLogger(__name__)


class LedgerError(RuntimeError):
    """The ledger cannot be opened or written (corrupt file, refused key, broken chain head)."""


def default_url(aegis_paths: AegisPaths | None = None) -> str:
    """The ledger's URL: ``$AEGIS_LEDGER_URL``, the platform database in prod, else ``AEGIS_HOME/ledger.db``."""
    return db.store_url(STORE, sqlite_path=(aegis_paths or paths()).ledger)


def _create_schema(conn: Connection) -> None:
    """Tables, append-only triggers and the kind index, each only if missing (adopts an older ledger)."""
    metadata.create_all(conn)
    for ddl in SQLITE_TRIGGERS if conn.dialect.name == "sqlite" else POSTGRES_TRIGGERS:
        conn.exec_driver_sql(ddl)
    conn.exec_driver_sql(KIND_INDEX_DDL)  # finds the newest key record on each append


MIGRATIONS = [db.Migration(1, "audit records, chain head, append-only triggers", _create_schema)]


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
    trusted_keys: list[str] = Field(
        default_factory=list, description="Keys the chain trusts at its head (genesis, then rotations)"
    )
    witness: str | None = Field(None, description="Where the checkpoints were read")
    witnessed_seq: int = Field(0, description="Sequence of the newest witness checkpoint")
    unwitnessed: int = Field(
        0, description="Records after the newest checkpoint (appends in flight when a writer died)"
    )

    def summary(self) -> str:
        if self.ok:
            if not self.records_checked:
                return "ledger OK: 0 record(s), nothing recorded yet"
            tail = f", {self.unwitnessed} record(s) after it not yet witnessed" if self.unwitnessed else ""
            return (
                f"ledger OK: {self.records_checked} record(s), chain intact, every signature valid, "
                f"signed by pinned key(s) {', '.join(self.key_ids)}; anchored by the witness checkpoint "
                f"at seq {self.witnessed_seq} in {self.witness}{tail}"
            )
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


def _normalize_payload(payload: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    try:
        plain = to_jsonable_python(payload)
        text_ = canonical_json(plain)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"payload is not JSON-serializable (no NaN/inf, no arbitrary objects): {exc}"
        ) from exc
    return dict(json.loads(text_))


class Ledger:
    """The audit ledger at ``url`` (default :func:`default_url`), signed with the key in ``key_dir``."""

    def __init__(
        self,
        url: str | None = None,
        key_dir: Path | None = None,
        *,
        read_only: bool = False,
        witness: Witness | None = None,
    ) -> None:
        """Open the ledger; ``read_only`` for verifying and reading (``aegis audit``).

        A writer loads (or makes, on first use) the signing key and creates the
        schema. A reader touches nothing: it needs no private key, never creates,
        replaces or archives key material, never writes a checkpoint, and refuses
        a SQLite ledger file that does not exist rather than creating an empty one.
        ``witness`` defaults to :func:`aegis.ledger.witness.default_witness` of the URL.
        """
        home = paths()
        self.url = url or default_url(home)
        self.key_dir = key_dir or home.keys
        self.read_only = read_only
        self._key: signing.SigningKey | None = None
        self._genesis_hash: str | None = None
        self.public_key_pem: str | None = None
        self.key_id: str | None = None
        try:
            self.witness: Witness = witness if witness is not None else default_witness(self.url)
        except WitnessError as exc:
            raise LedgerError(f"the ledger's witness is not configured: {exc}") from exc
        self.last_witness_error: str | None = None
        if read_only:
            current = signing.current_public_key(self.key_dir)
            if current is not None:
                self.key_id, self.public_key_pem = current
            self._engine = self._make_engine(self.url, create_dirs=False)
            self._require_existing_store()
        else:
            self._set_key(signing.load_or_create(self.key_dir))
            self._engine = self._make_engine(self.url)
            self._init_schema()

    def _set_key(self, key: signing.SigningKey) -> None:
        self._key = key
        self.public_key_pem = key.public_key_pem
        self.key_id = key.key_id

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
        try:
            engine = db.make_engine(url, read_only=self.read_only)
        except ValueError as exc:
            raise LedgerError(
                f"unsupported ledger URL {db.safe_url(url)!r}: use sqlite:///PATH or postgresql+psycopg://..."
            ) from exc
        file = db.sqlite_file(url)
        if create_dirs and file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        return engine

    def _write_conn(self) -> Connection:
        """A connection whose transactions take the ledger's write lock first."""
        return self._engine.connect().execution_options(**{db.WRITE_LOCK: WRITE_LOCK})

    def _init_schema(self) -> None:
        try:
            db.migrate(self._engine, STORE, MIGRATIONS)
            with self._write_conn() as conn, conn.begin():
                head = conn.execute(select(ledger_head.c.id).where(ledger_head.c.id == HEAD_ROW_ID)).first()
                if head is None:
                    last = conn.execute(
                        select(audit_records.c.seq, audit_records.c.hash)
                        .order_by(audit_records.c.seq.desc())
                        .limit(1)
                    ).first()
                    seq, digest = (last.seq, last.hash) if last else (0, GENESIS_HASH)
                    conn.execute(insert(ledger_head).values(id=HEAD_ROW_ID, seq=seq, hash=digest))
        except db.SchemaTooNew as exc:
            raise LedgerError(f"cannot open the audit ledger at {self._safe_url()}: {exc}") from exc
        except DBAPIError as exc:
            raise LedgerError(f"cannot open the audit ledger at {self._safe_url()}: {exc.orig}") from exc

    def _safe_url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        """Close pooled connections (tests and short-lived processes)."""
        self._engine.dispose()

    # ------------------------------------------------------------------ writing

    def append(self, kind: str, subject: str, payload: dict[str, Any], actor: str) -> AuditRecord:
        """Add one signed record at the head of the chain, checkpoint it in the witness, and return it."""
        if kind in KEY_KINDS:
            raise ValueError(f"kind {kind!r} is the ledger's own (genesis, rotate_key), not for append")
        return self._append_checked(kind, subject, payload, actor)

    def _append_checked(
        self,
        kind: str,
        subject: str,
        payload: dict[str, Any],
        actor: str,
        rotate_to: signing.SigningKey | None = None,
    ) -> AuditRecord:
        if self._key is None:
            raise LedgerError(
                "this ledger was opened read-only (for verifying); open it without read_only to append"
            )
        for name, value in (("kind", kind), ("subject", subject), ("actor", actor)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} must be a non-empty string")
            if len(value) > MAX_TEXT[name]:
                raise ValueError(f"{name} is longer than {MAX_TEXT[name]} characters")
        plain = _normalize_payload(payload)
        last_exc: Exception | None = None
        for attempt in range(APPEND_RETRIES):
            try:
                return self._append_once(kind, subject, plain, actor, rotate_to)
            except (IntegrityError, OperationalError) as exc:  # lost a race or the db was busy: try again
                if isinstance(exc, OperationalError) and "locked" not in str(exc.orig).lower():
                    raise LedgerError(f"cannot append to the audit ledger: {exc.orig}") from exc
                last_exc = exc
                time.sleep(RETRY_BACKOFF_S * (attempt + 1))
            except DBAPIError as exc:
                raise LedgerError(f"cannot append to the audit ledger: {exc.orig}") from exc
        raise LedgerError(f"could not append after {APPEND_RETRIES} attempts: {last_exc}")

    def _append_once(
        self,
        kind: str,
        subject: str,
        payload: dict[str, Any],
        actor: str,
        rotate_to: signing.SigningKey | None = None,
    ) -> AuditRecord:
        """One transaction: (genesis if the chain is empty,) the record, the head; then the checkpoint."""
        assert self._key is not None  # append() refuses a read-only ledger before this
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
            self._check_against_witness(conn, last_seq)
            if last_seq == 0:
                trusted = {self._key.key_id: self._key.public_key_pem}
                genesis_payload = {
                    "summary": f"the ledger starts here and trusts only signing key {self._key.key_id}",
                    "trusted_keys": trusted,
                }
                genesis = self._insert(
                    conn,
                    1,
                    GENESIS_HASH,
                    GENESIS_KIND,
                    LEDGER_SUBJECT,
                    genesis_payload,
                    LEDGER_ACTOR,
                    self._key,
                )
                last_seq, last_hash = genesis.seq, genesis.hash
                self._genesis_hash = None  # a new chain (a test may reuse the object across ledgers)
            else:
                trusted = self._trusted_now(conn)
                self._use_trusted_key(trusted)
            signer = self._key
            if rotate_to is not None:
                payload = {
                    "summary": f"signing key {signer.key_id} retired; {rotate_to.key_id} signs from here on",
                    "old_key": signer.key_id,
                    "new_key": rotate_to.key_id,
                    "new_public_key": rotate_to.public_key_pem,
                    "reason": payload.get("reason", ""),
                }
                trusted = {rotate_to.key_id: rotate_to.public_key_pem}
            record = self._insert(conn, last_seq + 1, last_hash, kind, subject, payload, actor, signer)
            conn.execute(
                update(ledger_head)
                .where(ledger_head.c.id == HEAD_ROW_ID)
                .values(seq=record.seq, hash=record.hash)
            )
            ledger_id = self._genesis(conn)
        self._checkpoint(ledger_id, record, trusted, rotate_to or signer)
        return record

    def _insert(
        self,
        conn: Connection,
        seq: int,
        prev_hash: str,
        kind: str,
        subject: str,
        payload: dict[str, Any],
        actor: str,
        key: signing.SigningKey,
    ) -> AuditRecord:
        fields: dict[str, Any] = {
            "seq": seq,
            "record_id": new_id("aud"),
            "recorded_at": format_ts(utcnow()),
            "actor": actor,
            "kind": kind,
            "subject": subject,
            "payload": payload,
            "prev_hash": prev_hash,
            "key_id": key.key_id,
        }
        digest = record_hash(fields)
        signature = key.sign(digest)
        conn.execute(
            insert(audit_records).values(
                **{**fields, "payload": canonical_json(payload)}, hash=digest, signature=signature
            )
        )
        return AuditRecord.model_validate({**fields, "hash": digest, "signature": signature})

    def _genesis(self, conn: Connection) -> str:
        """Hash of record 1: the chain's identity in every checkpoint (it never changes, so it is cached)."""
        if self._genesis_hash is None:
            self._genesis_hash = str(
                conn.execute(select(audit_records.c.hash).where(audit_records.c.seq == 1)).scalar_one()
            )
        return self._genesis_hash

    def _trusted_now(self, conn: Connection) -> dict[str, str]:
        """key_id -> PEM of the keys the chain trusts now: the newest genesis or rotation record decides."""
        row = conn.execute(
            select(audit_records.c.kind, audit_records.c.payload)
            .where(audit_records.c.kind.in_(KEY_KINDS))
            .order_by(audit_records.c.seq.desc())
            .limit(1)
        ).first()
        if row is None:
            raise LedgerError(
                "refusing to append: the ledger has no genesis record pinning its keys (made before key "
                "pinning, or its start was replaced); run 'aegis audit verify'"
            )
        payload = json.loads(row.payload)
        if row.kind == GENESIS_KIND:
            return dict(payload["trusted_keys"])
        return {payload["new_key"]: payload["new_public_key"]}

    def _use_trusted_key(self, trusted: dict[str, str]) -> None:
        """Sign with a key the chain trusts: ours, or the one another process rotated to; else refuse."""
        assert self._key is not None
        if self._key.key_id in trusted:
            return
        pending = self.key_dir / signing.NEXT_KEY_FILE
        current = self.key_dir / signing.PRIVATE_KEY_FILE
        for path in (pending, current):
            if not path.exists():
                continue
            key = signing.load_private(path)
            if key.key_id in trusted:
                if path == pending:  # a rotation committed but its key was not installed: finish it
                    self._install(key)
                self._set_key(key)
                return
        raise LedgerError(
            f"refusing to append: the signing key {self._key.key_id} in {self.key_dir} is not a key the ledger "
            f"trusts ({', '.join(sorted(trusted))}); a key becomes trusted only by a rotation record signed "
            "with the trusted key ('aegis audit rotate-key'); restore the trusted private key"
        )

    def _install(self, key: signing.SigningKey) -> None:
        signing.write_private(self.key_dir / signing.PRIVATE_KEY_FILE, key.private_key)
        signing.install_public(self.key_dir, key)
        (self.key_dir / signing.NEXT_KEY_FILE).unlink(missing_ok=True)

    def _check_against_witness(self, conn: Connection, last_seq: int) -> None:
        """Refuse to extend a chain the witness saw longer, or different: appending would bury the cut."""
        try:
            latest = self.witness.latest()
        except WitnessError as exc:
            raise LedgerError(f"refusing to append: {exc}") from exc
        if latest is None:
            if last_seq > 0:
                log.warning("the ledger has %d record(s) but its witness %s has no checkpoint yet",
                            last_seq, self.witness.describe())  # fmt: skip
            return
        if latest.seq > last_seq:
            raise LedgerError(
                f"refusing to append: the witness {self.witness.describe()} saw seq {latest.seq} but the ledger "
                f"ends at seq {last_seq}: records were removed; run 'aegis audit verify'"
            )
        stored = conn.execute(select(audit_records.c.hash).where(audit_records.c.seq == latest.seq)).scalar()
        if stored != latest.head_hash:
            raise LedgerError(
                f"refusing to append: record seq {latest.seq} is not the one the witness saw "
                f"({latest.head_hash[:12]}…): the history was rewritten; run 'aegis audit verify'"
            )

    def _checkpoint(
        self, ledger_id: str, record: AuditRecord, trusted: dict[str, str], signer: signing.SigningKey
    ) -> None:
        """Sign and store the checkpoint of the new head; a failure is logged (the next append covers it)."""
        cp = Checkpoint(
            ledger=ledger_id,
            seq=record.seq,
            head_hash=record.hash,
            key_id=signer.key_id,
            trusted_keys=sorted(trusted),
            at=format_ts(utcnow()),
        )
        cp.signature = signer.sign(cp.digest())
        try:
            self.witness.put(cp)
            self.last_witness_error = None
        except (WitnessError, OSError) as exc:
            self.last_witness_error = str(exc)
            log.error(
                "ledger record seq %d is committed but its witness checkpoint failed: %s", record.seq, exc
            )

    def rotate_key(self, actor: str = "operator", reason: str = "") -> AuditRecord:
        """Replace the signing key: a ``key_rotation`` record signed with the old key names the new one.

        The new private key is written first as ``ledger_ed25519.next.pem``, so a
        crash between the record and the key swap loses nothing: the next append
        finds the committed rotation and installs that key.
        """
        if self._key is None:
            raise LedgerError("this ledger was opened read-only; open it without read_only to rotate its key")
        if not self.records_exist():
            self.append("note", LEDGER_SUBJECT, {"summary": "ledger opened for a key rotation"}, actor)
        new = signing.signing_key(signing.Ed25519PrivateKey.generate())
        signing.write_private(self.key_dir / signing.NEXT_KEY_FILE, new.private_key)
        record = self._append_checked(ROTATION_KIND, LEDGER_SUBJECT, {"reason": reason}, actor, rotate_to=new)
        self._install(new)
        self._set_key(new)
        return record

    def pinned_keys(self) -> dict[str, str]:
        """key_id -> PEM of the keys the chain trusts now ({} for an empty ledger); read-only."""
        try:
            with self._engine.connect() as conn:
                return self._trusted_now(conn)
        except LedgerError:
            return {}
        except DBAPIError as exc:
            raise LedgerError(f"cannot read the audit ledger: {exc.orig}") from exc

    def records_exist(self) -> bool:
        return self.head()[0] > 0

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
        """Check every link, hash and signature against the pinned keys, and the head against the witness.

        Read-only. The keys come from the chain (genesis, then rotations signed
        by the key they retire), never from ``key_dir``; ``key_dir`` is only
        checked for loose permissions. ``trusted_keys`` (key_id -> anything) is an
        out-of-band pin: when given, the genesis key must be one of them.
        """
        state = _VerifyState()
        try:
            checkpoints = self._witness_checkpoints()
            head = self._walk_chain(state, checkpoints)
            self._check_end(state, head, checkpoints, trusted_keys)
        except _Broken as broken:
            return VerifyReport(
                ok=False,
                records_checked=state.checked,
                head_seq=state.expected_seq - 1,
                first_bad=BadRecord(
                    seq=broken.row.get("seq") if broken.row else broken.seq,
                    record_id=broken.row.get("record_id") if broken.row else None,
                    reason=broken.reason,
                ),
                key_ids=sorted(state.used_keys),
                trusted_keys=sorted(state.trusted),
                witness=self.witness.describe(),
            )
        last_seq = state.expected_seq - 1
        witnessed = max(checkpoints, default=0)
        return VerifyReport(
            ok=True,
            records_checked=state.checked,
            head_seq=last_seq,
            key_ids=sorted(state.used_keys),
            trusted_keys=sorted(state.trusted),
            witness=self.witness.describe(),
            witnessed_seq=witnessed,
            unwitnessed=last_seq - witnessed,
        )

    def _witness_checkpoints(self) -> dict[int, Checkpoint]:
        """The witness's checkpoints by seq, once the key directory has passed its permission check."""
        problem = signing.key_dir_problem(self.key_dir)
        if problem:
            raise _Broken(problem)
        try:
            return {cp.seq: cp for cp in self.witness.checkpoints()}
        except WitnessError as exc:
            raise _Broken(f"the witness cannot be read: {exc}") from exc

    def _walk_chain(self, state: _VerifyState, checkpoints: dict[int, Checkpoint]) -> list[Any]:
        """Walk every record (``state`` moves along); the chain-head rows once the walk got to the end."""
        try:
            with self._engine.connect() as conn:
                if self.dialect == "sqlite":
                    result: list[Any] = list(conn.exec_driver_sql("PRAGMA integrity_check").scalars().all())
                    if result != ["ok"]:
                        raise _Broken(f"the database file is corrupt: {'; '.join(map(str, result))[:300]}")
                for row in self._rows(conn):
                    reason = state.check(row) or state.check_checkpoint(row, checkpoints.get(row["seq"]))
                    if reason:
                        raise _Broken(reason, row)
                return list(conn.execute(select(ledger_head.c.seq, ledger_head.c.hash)).all())
        except DBAPIError as exc:
            raise _Broken(f"the ledger cannot be read: {exc.orig}") from exc

    def _check_end(
        self,
        state: _VerifyState,
        head: list[Any],
        checkpoints: dict[int, Checkpoint],
        trusted_keys: dict[str, Any] | None,
    ) -> None:
        """After the walk: the head row, the witness (truncation, anchoring) and the out-of-band key pin."""
        last_seq = state.expected_seq - 1
        if len(head) != 1:
            raise _Broken(f"the chain-head table has {len(head)} rows, expected 1")
        if (head[0].seq, head[0].hash) != (last_seq, state.prev_hash):
            raise _Broken(
                f"the chain head names seq {head[0].seq} (hash {head[0].hash[:12]}…) but the last record is "
                f"seq {last_seq} (hash {state.prev_hash[:12]}…): records were removed from the end or the head "
                "was altered"
            )
        beyond = sorted(seq for seq in checkpoints if seq > last_seq)
        if beyond:
            cp = checkpoints[beyond[-1]]
            raise _Broken(
                f"the witness {self.witness.describe()} saw the ledger at seq {cp.seq} (head {cp.head_hash[:12]}…, "
                f"checkpoint made {cp.at}) but it now ends at seq {last_seq}: "
                f"{cp.seq - last_seq} record(s) were removed from the end (truncation)",
                seq=last_seq + 1,
            )
        if last_seq and not checkpoints:
            raise _Broken(
                f"the witness {self.witness.describe()} holds no checkpoint of this ledger: its head is not "
                "anchored (the witness was deleted, or this ledger was made elsewhere)"
            )
        if trusted_keys is not None and state.genesis_keys and not (state.genesis_keys & set(trusted_keys)):
            raise _Broken(
                f"the genesis record pins key(s) {', '.join(sorted(state.genesis_keys))}, none of which is among "
                f"the expected key(s) {', '.join(sorted(trusted_keys))}: the ledger was re-made with another key",
                seq=1,
            )


class _Broken(Exception):
    """:meth:`Ledger.verify` stops: why, and at which record (``row``, else ``seq``, else the store itself)."""

    def __init__(self, reason: str, row: dict[str, Any] | None = None, seq: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.row = row
        self.seq = seq


class _VerifyState:
    """The walk of :meth:`Ledger.verify` along the chain: position, trusted keys, keys seen."""

    def __init__(self) -> None:
        self.checked = 0
        self.expected_seq = 1
        self.prev_hash = GENESIS_HASH
        self.trusted: dict[str, Any] = {}  # key_id -> Ed25519 public key, as pinned by the chain so far
        self.genesis_keys: set[str] = set()
        self.genesis_hash: str | None = None
        self.used_keys: set[str] = set()

    def check(self, row: dict[str, Any]) -> str | None:
        """Why ``row`` breaks the chain, or None (then the walk moves past it)."""
        if row["seq"] != self.expected_seq:
            return (
                f"sequence gap: expected seq {self.expected_seq}, found {row['seq']} "
                "(a record was removed or reordered)"
            )
        if row["prev_hash"] != self.prev_hash:
            return (
                f"prev_hash {str(row['prev_hash'])[:12]}… does not match the hash of the record before it "
                f"({self.prev_hash[:12]}…): a record was removed, inserted or reordered"
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
        if row["seq"] == 1:
            reason = self._pin_genesis(row, payload)
            if reason:
                return reason
        elif row["kind"] == GENESIS_KIND:
            return "a second genesis record: only record 1 may pin the ledger's keys"
        key = self.trusted.get(row["key_id"])
        if key is None:
            return (
                f"signed by key {row['key_id']!r}, which is not a trusted ledger key (trusted here: "
                f"{', '.join(sorted(self.trusted)) or 'none'}): re-signed with another key, or a planted key; "
                "a key is trusted only through the genesis record or a rotation signed by a trusted key"
            )
        if not signing.verify_signature(key, digest, row["signature"]):
            return f"signature does not verify with key {row['key_id']}: the record was re-signed or altered"
        if row["kind"] == ROTATION_KIND:
            reason = self._rotate(row, payload)
            if reason:
                return reason
        self.used_keys.add(row["key_id"])
        self.checked += 1
        self.prev_hash, self.expected_seq = row["hash"], self.expected_seq + 1
        return None

    def _pin_genesis(self, row: dict[str, Any], payload: dict[str, Any]) -> str | None:
        pinned = payload.get("trusted_keys") if row["kind"] == GENESIS_KIND else None
        if not isinstance(pinned, dict) or not pinned:
            return (
                "record 1 is not a genesis record pinning the ledger's keys: the start of the chain was replaced "
                "(or the ledger predates key pinning)"
            )
        for key_id, pem in pinned.items():
            try:
                pub = signing.load_public_pem(str(pem))
            except (ValueError, signing.LedgerKeyError):
                return f"the genesis record pins key {key_id!r} with an unreadable public key"
            if signing.fingerprint(pub) != key_id:
                return f"the genesis record pins key {key_id!r} but its public key has another fingerprint"
            self.trusted[key_id] = pub
        self.genesis_keys = set(pinned)
        self.genesis_hash = row["hash"]
        return None

    def _rotate(self, row: dict[str, Any], payload: dict[str, Any]) -> str | None:
        if payload.get("old_key") != row["key_id"]:
            return f"key rotation retires {payload.get('old_key')!r} but is signed by {row['key_id']!r}"
        try:
            pub = signing.load_public_pem(str(payload.get("new_public_key", "")))
        except (ValueError, signing.LedgerKeyError):
            return "key rotation names a new key whose public key is unreadable"
        if signing.fingerprint(pub) != payload.get("new_key"):
            return f"key rotation names key {payload.get('new_key')!r} but its public key has another fingerprint"
        self.trusted = {str(payload["new_key"]): pub}
        return None

    def check_checkpoint(self, row: dict[str, Any], cp: Checkpoint | None) -> str | None:
        """Why the witness checkpoint at ``row``'s seq contradicts the chain, or None (also when there is none)."""
        if cp is None:
            return None
        if cp.ledger != self.genesis_hash:
            return (
                f"the witness checkpoint at seq {cp.seq} is about another chain (genesis {cp.ledger[:12]}…, this "
                f"ledger's is {str(self.genesis_hash)[:12]}…): the ledger was re-made from its start"
            )
        if cp.head_hash != row["hash"]:
            return (
                f"the witness saw record seq {cp.seq} with hash {cp.head_hash[:12]}…, the ledger holds "
                f"{str(row['hash'])[:12]}…: history was rewritten"
            )
        if cp.trusted_keys != sorted(self.trusted):
            return (
                f"the witness saw trusted key(s) {', '.join(cp.trusted_keys)} at seq {cp.seq}, the chain pins "
                f"{', '.join(sorted(self.trusted))}: the key set was changed"
            )
        key = self.trusted.get(cp.key_id)
        if key is None or not signing.verify_signature(key, cp.digest(), cp.signature):
            return (
                f"the witness checkpoint at seq {cp.seq} is not signed by a trusted ledger key: it was forged"
            )
        return None
