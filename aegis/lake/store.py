"""Where the lake's files live: a local directory (``local``) or an S3 bucket (``prod``).

The lake is a tree of keys relative to its root: ``landing/telemetry/...`` (what
shards or Firehose landed), ``bronze/date=.../<batch>.parquet``,
``quarantine/...``, ``ingest/manifest.parquet``.  The ingest and its readers
speak those relative keys; a :class:`LakeStore` maps them onto storage.

Atomicity, the one promise every writer here keeps (no reader ever sees a
partial object):

* local: write a ``.<name>.<pid>.tmp`` beside the target and rename it
  (:func:`aegis.telemetry.write_atomic`); a killed writer's temporary is swept
  later (:func:`aegis.lake.landing.sweep_stale_tmp`);
* S3: the object is serialized in memory and sent with ONE ``PutObject``
  (with its MD5): S3 makes an object visible only once the whole body arrived
  and matched, so a failed or killed upload leaves nothing, never a prefix of a
  file.  Server-side ``CopyObject`` is atomic the same way.

Every AWS client of the profile honours the standard ``AWS_ENDPOINT_URL``
(``AWS_ENDPOINT_URL_S3`` first): boto3 reads it itself, and the Arrow filesystem
DuckDB reads through (:func:`arrow_s3`) is given it explicitly, since Arrow does
not look at it.  That is how an S3-compatible store or an emulator is reached.

DuckDB readers (dbt, the Great Expectations suites) read ``s3://`` paths through
an fsspec wrapper of Arrow's S3 filesystem registered on their connection
(:func:`register_duckdb`): DuckDB's ``httpfs`` extension would have to be
downloaded at run time, which locked-down clusters (and this project's CI)
cannot do.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from aegis.telemetry import write_atomic, write_bytes_atomic

S3_SCHEMES = ("s3", "s3a")


class LakeUnavailable(RuntimeError):
    """The lake's storage cannot be reached (a missing bucket, refused credentials, no network)."""


@dataclass(frozen=True)
class StoredFile:
    """One object of the lake: its key relative to the lake root, size and modification time."""

    rel: str
    size: int
    mtime_ns: int


def endpoint_url(environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """The S3 endpoint the standard variables name (``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``)."""
    env = os.environ if environ is None else environ
    return (env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or "").strip() or None


def s3_client(region: str | None = None) -> Any:
    """A boto3 S3 client (boto3 itself honours ``AWS_ENDPOINT_URL``/``AWS_ENDPOINT_URL_S3``)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        region_name=region or None,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16),
    )


def arrow_s3(region: str | None = None) -> Any:
    """Arrow's S3 filesystem, pointed at the endpoint the standard variables name."""
    import pyarrow.fs as pafs

    kwargs: dict[str, Any] = {"region": region or os.environ.get("AWS_REGION") or "us-east-1"}
    endpoint = endpoint_url()
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or endpoint
        kwargs["scheme"] = parsed.scheme or "https"
        kwargs["force_virtual_addressing"] = False
    return pafs.S3FileSystem(**kwargs)


def register_duckdb(con: Any, region: str | None = None) -> None:
    """Let a DuckDB connection read ``s3://`` paths (through Arrow's S3 filesystem via fsspec)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    class _S3(ArrowFSWrapper):  # type: ignore[misc]
        protocol = S3_SCHEMES
        root_marker = ""

    con.register_filesystem(_S3(arrow_s3(region)))


def _parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()


class LakeStore:
    """The lake's files, keyed by paths relative to its root (see the module docstring)."""

    uri: str
    is_remote: bool

    def list_files(self, prefix: str, suffix: str = ".parquet") -> list[StoredFile]:
        raise NotImplementedError

    def read_bytes(self, rel: str) -> bytes:
        raise NotImplementedError

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        raise NotImplementedError

    def write_parquet(self, rel: str, table: pa.Table, **options: Any) -> None:
        raise NotImplementedError

    def write_bytes(self, rel: str, data: bytes) -> str | None:
        """Write ``rel`` whole (atomically); the new object's ETag where the store has one."""
        raise NotImplementedError

    def copy(self, src_rel: str, dst_rel: str) -> None:
        raise NotImplementedError

    def delete(self, rel: str) -> None:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def fetch(self, rel: str, dest: Path) -> Path:
        """A local file with the object's bytes (the file itself for a local lake)."""
        raise NotImplementedError

    def any(self, prefix: str, suffix: str = ".parquet") -> bool:
        """Whether at least one ``*suffix`` file lies under ``prefix``."""
        raise NotImplementedError

    def parquet_rows(self, rel: str) -> int:
        """Rows a Parquet file's footer declares."""
        return int(pq.ParquetFile(pa.BufferReader(self.read_bytes(rel))).metadata.num_rows)

    def uri_of(self, rel: str) -> str:
        """What a DuckDB reader opens for ``rel`` (globs allowed)."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise :class:`LakeUnavailable` when the storage cannot be reached."""


class LocalLakeStore(LakeStore):
    """A directory; writes by temporary file and rename."""

    is_remote = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def list_files(self, prefix: str, suffix: str = ".parquet") -> list[StoredFile]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        out = []
        for path in base.rglob(f"*{suffix}"):
            if any(part.startswith(".") for part in path.relative_to(base).parts):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append(StoredFile(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime_ns))
        return sorted(out, key=lambda f: (f.mtime_ns, f.rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.path(rel), columns=columns)

    def write_parquet(self, rel: str, table: pa.Table, **options: Any) -> None:
        compression = options.pop("compression", "zstd")
        write_atomic(table, self.path(rel), compression=compression, **options)

    def write_bytes(self, rel: str, data: bytes) -> None:
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(data, target)

    def copy(self, src_rel: str, dst_rel: str) -> None:
        target = self.path(dst_rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # sweep_stale_tmp reads the pid
        try:
            shutil.copyfile(self.path(src_rel), tmp)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def delete(self, rel: str) -> None:
        self.path(rel).unlink(missing_ok=True)

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def fetch(self, rel: str, dest: Path) -> Path:
        return self.path(rel)

    def parquet_rows(self, rel: str) -> int:
        return int(pq.ParquetFile(self.path(rel)).metadata.num_rows)

    def any(self, prefix: str, suffix: str = ".parquet") -> bool:
        base = self.root / prefix
        return base.is_dir() and next(base.rglob(f"*{suffix}"), None) is not None

    def uri_of(self, rel: str) -> str:
        return str(self.root / rel)


class S3LakeStore(LakeStore):
    """An S3 bucket (and optional key prefix); one ``PutObject`` per write."""

    is_remote = True

    def __init__(self, bucket: str, prefix: str = "", region: str | None = None) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"not an S3 bucket name: {bucket!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region = region
        self.uri = f"s3://{bucket}" + (f"/{self.prefix}" if self.prefix else "")

    @classmethod
    def from_uri(cls, uri: str, region: str | None = None) -> S3LakeStore:
        parsed = urlparse(uri)
        if parsed.scheme not in S3_SCHEMES:
            raise ValueError(f"not an s3:// URI: {uri!r}")
        return cls(parsed.netloc, parsed.path, region)

    @cached_property
    def client(self) -> Any:
        return s3_client(self.region)

    def key(self, rel: str) -> str:
        rel = rel.lstrip("/")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _rel(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    def _fail(self, what: str, exc: Exception) -> LakeUnavailable:
        return LakeUnavailable(f"{what} in the lake {self.uri} failed: {type(exc).__name__}: {exc}")

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise self._fail("reaching the bucket", exc) from exc

    def list_files(self, prefix: str, suffix: str = ".parquet") -> list[StoredFile]:
        base = self.key(prefix.rstrip("/") + "/")
        out = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            ):
                for obj in page.get("Contents", ()):
                    key = obj["Key"]
                    name = key.rsplit("/", 1)[-1]
                    if not key.endswith(suffix) or name.startswith("."):
                        continue
                    modified = obj["LastModified"].astimezone(UTC)
                    out.append(StoredFile(self._rel(key), int(obj["Size"]), _ns(modified)))
        except Exception as exc:
            raise self._fail(f"listing {prefix}", exc) from exc
        return sorted(out, key=lambda f: (f.mtime_ns, f.rel))

    def read_bytes(self, rel: str) -> bytes:
        try:
            return bytes(self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read())
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"{self.uri}/{rel}") from None
        except Exception as exc:
            raise self._fail(f"reading {rel}", exc) from exc

    @cached_property
    def arrow_fs(self) -> Any:
        return arrow_s3(self.region)

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        if columns is not None and len(columns) <= 2:
            # a column or two (the event index's ids): ranged GETs of just those column chunks
            try:
                return pq.read_table(
                    f"{self.bucket}/{self.key(rel)}", filesystem=self.arrow_fs, columns=columns
                )
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise self._fail(f"reading {rel}", exc) from exc
        return pq.read_table(pa.BufferReader(self.read_bytes(rel)), columns=columns)

    def write_bytes(self, rel: str, data: bytes) -> str:
        """One PutObject with the body's MD5; returns the new object's ETag."""
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        try:
            reply = self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data, ContentMD5=md5)
        except Exception as exc:
            raise self._fail(f"writing {rel}", exc) from exc
        return str(reply["ETag"])

    def write_parquet(self, rel: str, table: pa.Table, **options: Any) -> None:
        options.setdefault("compression", "zstd")
        self.write_bytes(rel, _parquet_bytes(table, **options))

    def copy(self, src_rel: str, dst_rel: str) -> None:
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self.key(dst_rel),
                CopySource={"Bucket": self.bucket, "Key": self.key(src_rel)},
            )
        except Exception as exc:
            raise self._fail(f"copying {src_rel} to {dst_rel}", exc) from exc

    def delete(self, rel: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))
        except Exception as exc:
            raise self._fail(f"deleting {rel}", exc) from exc

    def exists(self, rel: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
            return True
        except Exception as exc:
            if getattr(exc, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail(f"looking up {rel}", exc) from exc

    def fetch(self, rel: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self.read_bytes(rel), dest)
        return dest

    def uri_of(self, rel: str) -> str:
        return f"{self.uri}/{rel.lstrip('/')}"

    def any(self, prefix: str, suffix: str = ".parquet") -> bool:
        base = self.key(prefix.rstrip("/") + "/")
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            ):
                if any(o["Key"].endswith(suffix) for o in page.get("Contents", ())):
                    return True
        except Exception as exc:
            raise self._fail(f"listing {prefix}", exc) from exc
        return False


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000) * 1000


def lake_store(uri: str, region: str | None = None) -> LakeStore:
    """The store for a lake root: ``s3://bucket[/prefix]`` or a local directory."""
    if urlparse(uri).scheme in S3_SCHEMES:
        return S3LakeStore.from_uri(uri, region)
    return LocalLakeStore(Path(uri))


# ---------------------------------------------------------------------------- the lake

LANDING_TELEMETRY = "landing/telemetry"
MANIFEST_DB = "manifest.db"


@dataclass(frozen=True)
class Lake:
    """A lake: its files (``store``), its manifest database and the ingest's local working state.

    Local profile: everything under ``AEGIS_HOME/lake`` (the manifest is SQLite in
    ``lake/ingest``, beside the event index and the ingest lock file).  Prod: the files
    in S3, the manifest in the platform's PostgreSQL (one writer at a time through an
    advisory lock there), and ``state_dir`` a scratch directory of the run's pod holding
    the event index (a cache rebuilt from the manifest and bronze, see
    :mod:`aegis.lake.event_index`) and the batches being validated.
    """

    store: LakeStore
    state_dir: Path
    manifest_url: str = field(repr=False)  # may hold a database password
    landing_prefix: str = LANDING_TELEMETRY

    @classmethod
    def local(cls, paths: Any) -> Lake:
        """The lake of an ``AEGIS_HOME`` (:class:`aegis.config.AegisPaths`)."""
        state = paths.lake / "ingest"
        return cls(LocalLakeStore(paths.lake), state, f"sqlite:///{state / MANIFEST_DB}")

    @classmethod
    def s3(
        cls,
        uri: str,
        *,
        state_dir: Path,
        manifest_url: str,
        region: str | None = None,
        landing_prefix: str = LANDING_TELEMETRY,
    ) -> Lake:
        return cls(
            S3LakeStore.from_uri(uri, region), Path(state_dir), manifest_url, landing_prefix.strip("/")
        )

    @property
    def is_remote(self) -> bool:
        return self.store.is_remote

    def landing_rel(self, rel_to_landing: str) -> str:
        """A landed batch's key relative to the lake root."""
        return f"{self.landing_prefix}/{rel_to_landing}"

    def ensure(self) -> Lake:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(self.store, LocalLakeStore):
            for sub in ("bronze", "quarantine/files", self.landing_prefix):
                (self.store.root / sub).mkdir(parents=True, exist_ok=True)
        return self


def as_lake(where: Any) -> Lake:
    """A :class:`Lake` from a Lake or an :class:`aegis.config.AegisPaths` (the local lake)."""
    return where if isinstance(where, Lake) else Lake.local(where)
