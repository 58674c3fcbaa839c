"""The witness: signed checkpoints of the ledger's head, kept outside the ledger database.

A hash chain proves that nothing *inside* it was changed, but not that its end
is still there: whoever can write the database can delete the newest records
(or all of them) and reset the head row, and the shorter chain is still a valid
chain. The witness closes that gap. After every append the writer signs a
:class:`Checkpoint` (head sequence, head hash, the fingerprints of the keys the
ledger trusts at that point, the time) and hands it to a :class:`Witness`, an
append-only store somewhere else:

* :class:`LocalWitness`: one file per checkpoint under ``AEGIS_HOME/witness/``
  (apart from ``ledger.db``), written under a temporary name, fsynced, then
  linked into place so an existing checkpoint is never overwritten.
* :class:`S3Witness`: one object per checkpoint in the audit bucket, which has
  S3 Object Lock in COMPLIANCE mode (infrastructure/): once written, nobody,
  root included, can delete or overwrite a checkpoint before its retention
  ends, so a truncated ledger cannot be made to agree with its witness. The
  objects are written with ``If-None-Match: *``.

Verification (:meth:`aegis.ledger.Ledger.verify`) compares every checkpoint with
the record at its sequence: a checkpoint beyond the last record is truncation, a
different hash is rewritten history, a different key set is a planted key.

Bound: a checkpoint is written after each append commits, so the witness lags
the ledger by at most the appends in flight when a process dies (or whose
checkpoint write failed; each is logged); the next append checkpoints the new
head, which covers every record before it. Records after the newest checkpoint
are reported by ``verify`` (``unwitnessed``).

A local witness only protects against an attacker who can write the database
but not ``AEGIS_HOME/witness/``; one who can write both can cut both ends
alike. That is what the Object Lock bucket is for in production.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field, ValidationError

from aegis.config import current_profile, paths

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
BUCKET_SIZE = 1000  # checkpoints per directory (or S3 prefix): listing the newest stays cheap
SEQ_DIGITS = 12
BUCKET_DIGITS = 6
SUFFIX = ".json"
ENV_WITNESS = "AEGIS_LEDGER_WITNESS"
ENV_AUDIT_BUCKET = "AEGIS_AUDIT_BUCKET"
DEFAULT_S3_PREFIX = "ledger-witness"
DEFAULT_LOCAL_NAME = "ledger"
MAX_CHECKPOINT_BYTES = 64 * 1024
SIGNED_FIELDS = ("version", "ledger", "seq", "head_hash", "key_id", "trusted_keys", "at")


class WitnessError(RuntimeError):
    """The witness cannot be read or written, or refuses a checkpoint that contradicts one it holds."""


class Checkpoint(BaseModel):
    """What the witness saw: the ledger ``ledger`` (its genesis hash) had ``seq`` records ending in ``head_hash``."""

    version: int = CHECKPOINT_VERSION
    ledger: str = Field(description="Hash of the genesis record: which chain this is about")
    seq: int = Field(ge=1)
    head_hash: str = Field(min_length=64, max_length=64)
    key_id: str = Field(description="Fingerprint of the key that signed this checkpoint")
    trusted_keys: list[str] = Field(description="Fingerprints the ledger trusts at seq (sorted)")
    at: str = Field(description="When the checkpoint was made (UTC, ISO 8601)")
    signature: str = ""

    def digest(self) -> str:
        """sha256 over the canonical JSON of every field but the signature: what is signed."""
        doc = {k: getattr(self, k) for k in SIGNED_FIELDS}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def to_bytes(self) -> bytes:
        return (self.model_dump_json() + "\n").encode()

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Checkpoint:
        if len(raw) > MAX_CHECKPOINT_BYTES:
            raise WitnessError(f"witness checkpoint {where} is {len(raw)} bytes: not a checkpoint")
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise WitnessError(f"witness checkpoint {where} is unreadable: {exc.errors()[0]['msg']}") from exc


def checkpoint_name(seq: int) -> str:
    """``<bucket>/<seq>.json``, zero-padded so names sort by sequence."""
    return f"{seq // BUCKET_SIZE:0{BUCKET_DIGITS}d}/{seq:0{SEQ_DIGITS}d}{SUFFIX}"


def _seq_of(name: str) -> int | None:
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else ""
    return int(stem) if stem.isdigit() and len(stem) == SEQ_DIGITS else None


@runtime_checkable
class Witness(Protocol):
    """An append-only store of checkpoints, kept apart from the ledger database."""

    def put(self, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` durably; one already stored for its seq is kept (a different head hash is an error)."""
        ...

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint, by sequence; read-only."""
        ...

    def latest(self) -> Checkpoint | None:
        """The checkpoint with the highest sequence, or None; read-only."""
        ...

    def describe(self) -> str:
        """Where the witness lives, for messages."""
        ...


class LocalWitness:
    """Checkpoint files under ``directory`` (``AEGIS_HOME/witness/ledger`` by default)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def describe(self) -> str:
        return str(self.directory)

    def put(self, checkpoint: Checkpoint) -> None:
        dest = self.directory / checkpoint_name(checkpoint.seq)
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = checkpoint.to_bytes()
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{id(data)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, dest)  # never replaces: an existing checkpoint stays as it was
            created = True
        except FileExistsError:
            created = False
        finally:
            tmp.unlink()
        if created:
            _fsync_dir(dest.parent)
            _fsync_dir(self.directory)
            return
        existing = Checkpoint.from_bytes(dest.read_bytes(), str(dest))
        if (existing.ledger, existing.head_hash) != (checkpoint.ledger, checkpoint.head_hash):
            raise WitnessError(
                f"the witness at {dest} already holds seq {checkpoint.seq} with head "
                f"{existing.head_hash[:12]}…, not {checkpoint.head_hash[:12]}…: the ledger was rewritten"
            )

    def _files(self) -> list[tuple[int, Path]]:
        if not self.directory.is_dir():
            return []
        out = []
        for bucket in self.directory.iterdir():
            if not bucket.is_dir() or not bucket.name.isdigit():
                continue
            for path in bucket.iterdir():
                seq = _seq_of(path.name)
                if seq is not None:
                    out.append((seq, path))
        return sorted(out)

    def checkpoints(self) -> list[Checkpoint]:
        return [self._read(seq, path) for seq, path in self._files()]

    def latest(self) -> Checkpoint | None:
        if not self.directory.is_dir():
            return None
        buckets = sorted(
            (b for b in self.directory.iterdir() if b.is_dir() and b.name.isdigit()), reverse=True
        )
        for bucket in buckets:
            files = sorted((s, p) for p in bucket.iterdir() if (s := _seq_of(p.name)) is not None)
            if files:
                return self._read(*files[-1])
        return None

    @staticmethod
    def _read(seq: int, path: Path) -> Checkpoint:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise WitnessError(f"cannot read witness checkpoint {path}: {exc.strerror}") from exc
        cp = Checkpoint.from_bytes(raw, str(path))
        if cp.seq != seq:
            raise WitnessError(f"witness checkpoint {path} names seq {cp.seq}: it was moved or altered")
        return cp


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class S3Witness:
    """Checkpoint objects under ``s3://bucket/prefix/`` of an Object Lock bucket (the production witness).

    The bucket's default retention (COMPLIANCE) locks each object as it is
    written; ``If-None-Match: *`` makes a put of an existing key fail instead of
    adding a version. ``client`` is a boto3 S3 client (made from the default
    session when omitted).
    """

    def __init__(self, bucket: str, prefix: str = DEFAULT_S3_PREFIX, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"

    def _key(self, seq: int) -> str:
        return f"{self.prefix}/{checkpoint_name(seq)}"

    def put(self, checkpoint: Checkpoint) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self._key(checkpoint.seq)
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=checkpoint.to_bytes(),
                ContentType="application/json",
                IfNoneMatch="*",
                ChecksumAlgorithm="SHA256",
            )
            return
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise WitnessError(
                    f"cannot write witness checkpoint s3://{self.bucket}/{key}: {exc}"
                ) from exc
        except BotoCoreError as exc:
            raise WitnessError(f"cannot write witness checkpoint s3://{self.bucket}/{key}: {exc}") from exc
        existing = self._get(key, checkpoint.seq)
        if (existing.ledger, existing.head_hash) != (checkpoint.ledger, checkpoint.head_hash):
            raise WitnessError(
                f"the witness s3://{self.bucket}/{key} already holds seq {checkpoint.seq} with head "
                f"{existing.head_hash[:12]}…, not {checkpoint.head_hash[:12]}…: the ledger was rewritten"
            )

    def _get(self, key: str, seq: int) -> Checkpoint:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise WitnessError(f"cannot read witness checkpoint s3://{self.bucket}/{key}: {exc}") from exc
        cp = Checkpoint.from_bytes(body, f"s3://{self.bucket}/{key}")
        if cp.seq != seq:
            raise WitnessError(f"witness checkpoint s3://{self.bucket}/{key} names seq {cp.seq}: altered")
        return cp

    def _keys(self, prefix: str) -> list[tuple[int, str]]:
        from botocore.exceptions import BotoCoreError, ClientError

        out: list[tuple[int, str]] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                for obj in page.get("Contents", []):
                    seq = _seq_of(obj["Key"].rsplit("/", 1)[-1])
                    if seq is not None:
                        out.append((seq, obj["Key"]))
        except (ClientError, BotoCoreError) as exc:
            raise WitnessError(f"cannot list the witness s3://{self.bucket}/{prefix}: {exc}") from exc
        return sorted(out)

    def checkpoints(self) -> list[Checkpoint]:
        return [self._get(key, seq) for seq, key in self._keys(self.prefix + "/")]

    def latest(self) -> Checkpoint | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + "/", Delimiter="/"
            )
            buckets = sorted(
                (p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])), reverse=True
            )
        except (ClientError, BotoCoreError) as exc:
            raise WitnessError(f"cannot list the witness {self.describe()}: {exc}") from exc
        for bucket in buckets:
            keys = self._keys(bucket)
            if keys:
                seq, key = keys[-1]
                return self._get(key, seq)
        return None


def witness_from_url(spec: str) -> Witness:
    """``s3://bucket/prefix`` -> :class:`S3Witness`; ``file:///dir`` or a path -> :class:`LocalWitness`."""
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[len("s3://") :].partition("/")
        if not bucket:
            raise WitnessError(f"{ENV_WITNESS}={spec!r} names no bucket (s3://BUCKET/PREFIX)")
        return S3Witness(bucket, prefix or DEFAULT_S3_PREFIX)
    if spec.startswith("file://"):
        spec = spec[len("file://") :]
    return LocalWitness(Path(spec).expanduser())


def default_witness(ledger_url: str) -> Witness:
    """The witness of the ledger at ``ledger_url``.

    ``$AEGIS_LEDGER_WITNESS`` when set; in the prod profile the audit bucket
    (``s3://$AEGIS_AUDIT_BUCKET/ledger-witness/``); else a directory under
    ``AEGIS_HOME/witness/``: ``ledger/`` for the local ledger, ``url-<hash>/`` for
    any other URL, so two ledgers never share (and confuse) one witness.
    """
    spec = os.environ.get(ENV_WITNESS, "").strip()
    if spec:
        return witness_from_url(spec)
    home = paths()
    if current_profile() == "prod":
        bucket = os.environ.get(ENV_AUDIT_BUCKET, "").strip()
        if not bucket:
            raise WitnessError(
                f"the prod profile anchors the ledger in the audit bucket: set {ENV_AUDIT_BUCKET} "
                f"(or {ENV_WITNESS})"
            )
        return S3Witness(bucket, DEFAULT_S3_PREFIX)
    if ledger_url == home.ledger_url:
        return LocalWitness(home.witness / DEFAULT_LOCAL_NAME)
    from sqlalchemy import make_url

    safe = make_url(ledger_url).render_as_string(hide_password=True)
    return LocalWitness(home.witness / f"url-{hashlib.sha256(safe.encode()).hexdigest()[:16]}")
