"""The ledger's tables (SQLAlchemy 2 Core), the same on SQLite and PostgreSQL.

``audit_records`` is the chain; ``seq`` (the primary key) and ``prev_hash``
are unique, so two writers can never both extend the same head: the chain
cannot fork even if the application-level lock were bypassed.
``ledger_head`` is a single row naming the last record: appends lock it
(``SELECT ... FOR UPDATE`` under the ledger's advisory lock on PostgreSQL,
``BEGIN IMMEDIATE`` on SQLite), and verification compares it with the last
record, so removing records from the end of the chain is noticed too. Triggers
refuse UPDATE and DELETE on ``audit_records``: append-only is enforced by the
database, not only by the API.

The tables carry no schema: in prod the ledger's URL puts its connections in
the ``aegis_ledger`` schema (:func:`aegis.db.store_url`), so the raw DDL below
(triggers, their function, the kind index) lands beside them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text, UniqueConstraint

GENESIS_HASH = "0" * 64
HEAD_ROW_ID = 1

metadata = MetaData()

audit_records = Table(
    "audit_records",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("record_id", String(64), nullable=False, unique=True),
    Column("recorded_at", String(40), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(200), nullable=False, index=True),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("signature", Text, nullable=False),
    Column("key_id", String(80), nullable=False),
    UniqueConstraint("seq", name="uq_audit_records_seq"),
    UniqueConstraint("prev_hash", name="uq_audit_records_prev_hash"),
    UniqueConstraint("hash", name="uq_audit_records_hash"),
)

ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

APPEND_ONLY_MESSAGE = "the audit ledger is append-only"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END""",
    f"""CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
    BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END""",
]

POSTGRES_TRIGGERS = [
    f"""CREATE OR REPLACE FUNCTION aegis_ledger_append_only() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}'; END $$ LANGUAGE plpgsql""",
    """CREATE OR REPLACE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION aegis_ledger_append_only()""",
    """CREATE OR REPLACE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION aegis_ledger_append_only()""",
]
