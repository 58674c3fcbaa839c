"""One DuckDB warehouse file, many processes: a shared/exclusive lock beside it.

DuckDB lets one process write a database file or many processes read it, never both
at once: a reader that opens the file while dbt builds fails, and a dbt build fails
when a reader (a sensor polling ``fct_shard_kpis`` every few seconds, a training run)
holds the file as it starts. Seen on a fresh ``aegis up`` as red warehouse runs and
failed training runs. So every Aegis reader takes a shared ``flock`` on
``<warehouse>.lock`` for the life of its connection, and the dbt build takes it
exclusively for the build: they queue instead of failing. A reader that cannot get
in within its wait gets :class:`WarehouseBusy` (a sensor skips its tick; a run waits
longer). Programs outside Aegis (a notebook, the DuckDB CLI) do not take the lock;
readers still retry DuckDB's own lock error until their wait runs out.

Prod (runs are pods, each with its own disk): the build publishes the finished file to
the platform bucket (:func:`publish`, one PutObject: a reader never gets half a file),
and every reader pulls the newest published copy before it opens its local one
(:func:`pull`, a conditional GET on the object's ETag, the file swapped in by rename, so
a connection already open keeps reading the copy it opened). Where the copy lives:
:func:`published_key` (``s3://<platform bucket>/warehouse/warehouse.duckdb``).
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import duckdb

log = logging.getLogger(__name__)

POLL_S = 0.1
# Waits: a sensor tick must not hang; a run can wait out a warehouse build (minutes at most).
SENSOR_WAIT_S = 3.0
RUN_WAIT_S = 600.0


class WarehouseBusy(duckdb.IOException):
    """The warehouse stayed locked for longer than the caller would wait.

    A ``duckdb.IOException``, like DuckDB's own lock error, so a reader's existing
    handling of an unreadable warehouse covers it."""


def lock_path(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".lock")


@contextmanager
def warehouse_lock(warehouse: Path, *, exclusive: bool, wait_s: float) -> Iterator[None]:
    """Hold the warehouse's lock: shared for readers, exclusive for the build; WarehouseBusy past ``wait_s``.

    One process must not ask for a shared lock while it holds the exclusive one (flock
    locks belong to open files, so it would wait on itself): release the build's first.
    """
    path = lock_path(Path(warehouse))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    what = "a reader holds it" if exclusive else "a build is writing it"
                    raise WarehouseBusy(
                        f"warehouse {warehouse} stayed locked for {wait_s:.0f} s ({what}); try again"
                    ) from None
                time.sleep(POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class LockedConnection:
    """A DuckDB connection that holds the warehouse's shared lock until it is closed."""

    def __init__(self, con: duckdb.DuckDBPyConnection, stack: ExitStack) -> None:
        self._con, self._stack = con, stack

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def close(self) -> None:
        try:
            self._con.close()
        finally:
            self._stack.close()

    def __enter__(self) -> LockedConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


PUBLISHED_KEY = "warehouse/warehouse.duckdb"


def published_key(environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """(bucket, key) of the published warehouse in the prod profile; None locally."""
    from aegis.config import current_profile

    env = os.environ if environ is None else environ
    if current_profile() != "prod":
        return None
    bucket = env.get("AEGIS_PLATFORM_BUCKET", "").strip()
    if not bucket:
        raise RuntimeError(
            "the prod profile publishes the warehouse to AEGIS_PLATFORM_BUCKET, which is not set"
        )
    return bucket, PUBLISHED_KEY


def _etag_path(warehouse: Path) -> Path:
    return warehouse.with_name(warehouse.name + ".etag")


def _describe(exc: BaseException) -> str:
    error = getattr(exc, "response", {}).get("Error", {}) if hasattr(exc, "response") else {}
    return f"{error.get('Code')}: {error.get('Message')}" if error else f"{type(exc).__name__}: {exc}"


def _store(bucket: str) -> Any:
    """The platform bucket's store, one per process (and endpoint): its boto3 client costs
    ~0.1-0.2 s to build, and every reader's connect asks it for a conditional GET."""
    from aegis.lake.store import endpoint_url

    return _store_at(bucket, endpoint_url())


@functools.lru_cache(maxsize=4)
def _store_at(bucket: str, _endpoint: str | None) -> Any:
    from aegis.lake.store import S3LakeStore

    return S3LakeStore(bucket)


def publish(warehouse: Path) -> str | None:
    """Upload a finished build (prod, one PutObject); return its ETag. Locally: nothing to do (None)."""
    where = published_key()
    if where is None:
        return None
    from aegis.lake.store import LakeUnavailable

    try:
        etag = _store(where[0]).write_bytes(where[1], Path(warehouse).read_bytes())
    except LakeUnavailable as exc:
        raise WarehouseBusy(f"publishing the warehouse failed: {exc}") from exc
    _etag_path(Path(warehouse)).write_text(etag)  # the ETag of what we put, not of a later head
    return etag


_PULL_LOCK = threading.Lock()  # threads of one process (sensors of a code server); flock: processes


def pull(warehouse: Path) -> bool:
    """Bring the local copy up to the published one (prod); True when a newer copy came down.

    A conditional GET on the ETag of the copy held; the new file is downloaded under a
    unique temporary name and renamed into place (open readers keep the copy they
    opened), its ETag written under the same lock. A failure is :class:`WarehouseBusy`
    (a ``duckdb.IOException``, which readers already treat as "unavailable now").
    """
    where = published_key()
    if where is None:
        return False
    warehouse = Path(warehouse)
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    tag_file = _etag_path(warehouse)
    with _PULL_LOCK, open(warehouse.with_name(warehouse.name + ".pull.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        held = tag_file.read_text().strip() if tag_file.exists() and warehouse.exists() else ""
        try:
            obj = _store(where[0]).client.get_object(
                Bucket=where[0], Key=where[1], **({"IfNoneMatch": held} if held else {})
            )
            data = obj["Body"].read()
        except Exception as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("304", "NotModified"):
                return False
            if code in ("NoSuchKey", "404"):
                return False  # nothing published yet: a missing local copy says "never built"
            raise WarehouseBusy(
                f"cannot pull the published warehouse s3://{where[0]}/{where[1]}: {_describe(exc)}"
            ) from exc
        fd, tmp = tempfile.mkstemp(prefix=f".{warehouse.name}.", suffix=".tmp", dir=warehouse.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, warehouse)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        tag_file.write_text(str(obj["ETag"]))
        return True


def available(warehouse: Path) -> bool:
    """Whether a warehouse file is there to read (prod: after pulling the newest published copy).

    For readers that say "never built" instead of connecting: a pull that fails leaves
    the local copy (if any) to answer, and :func:`connect` reports the failure.
    """
    try:
        pull(Path(warehouse))
    except WarehouseBusy as exc:
        log.warning("%s", exc)
    return Path(warehouse).is_file()


def connect(warehouse: Path, wait_s: float = RUN_WAIT_S) -> LockedConnection:
    """A read-only connection (UTC) under the shared lock; ``close()`` (or ``with``) releases both.

    In prod the newest published copy is pulled first (:func:`pull`). Raises
    FileNotFoundError when there is no warehouse yet, WarehouseBusy past ``wait_s``.
    """
    warehouse = Path(warehouse)
    pull(warehouse)
    if not warehouse.exists():
        raise FileNotFoundError(f"warehouse {warehouse} does not exist: run the dbt assets first")
    deadline = time.monotonic() + wait_s
    stack = ExitStack()
    stack.enter_context(warehouse_lock(warehouse, exclusive=False, wait_s=wait_s))
    try:
        while True:
            try:
                con = duckdb.connect(str(warehouse), read_only=True)
                break
            except duckdb.IOException as exc:  # a writer outside Aegis ("Could not set lock on file")
                if "lock" not in str(exc).lower():
                    raise  # not a lock: a damaged or foreign file is an answer now, not after the wait
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        f"warehouse {warehouse} stayed locked by another writer: {exc}"
                    ) from exc
                time.sleep(POLL_S * 5)
        con.execute("set TimeZone = 'UTC'")
    except BaseException:
        stack.close()
        raise
    return LockedConnection(con, stack)
