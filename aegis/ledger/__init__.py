"""The signed, hash-chained audit ledger (see :mod:`aegis.ledger.ledger`)."""

from aegis.ledger.ledger import BadRecord, Ledger, LedgerError, VerifyReport, record_hash
from aegis.ledger.signing import LedgerKeyError

__all__ = ["BadRecord", "Ledger", "LedgerError", "LedgerKeyError", "VerifyReport", "record_hash"]
