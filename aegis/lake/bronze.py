"""Landing -> bronze + quarantine, batch by batch, counts conserved.

For every landed batch the ingest writes, atomically and keyed by batch id:

* ``bronze/date=YYYY-MM-DD/<batch-id>.parquet``: the valid, first-seen events,
  exactly SCHEMA_V1 plus ``batch_id`` and ``ingested_at``;
* ``quarantine/date=YYYY-MM-DD/<batch-id>.parquet``: rejected rows as text with
  ``rule`` and ``reason``; or, for a file no row of which can be read,
  ``quarantine/files/<batch-id>/<name>`` plus a line in ``files/manifest.jsonl``;
* a manifest entry with rows in / bronze / quarantined / duplicates.

Bronze holds each event id once.  A valid row whose id bronze already holds (or
an earlier row of the same group) is compared with that row on every SCHEMA_V1
field: the same content is a true duplicate (a batch landed twice, a replayed
tick), dropped and counted in ``duplicates``; different content is an id
collision (two producers gave one id to different events), quarantined row by
row with rule ``id_collision`` and a reason naming the holder and the differing
fields, never dropped.  Temporary files a killed ingest left in bronze,
quarantine or the manifest directory are swept at start, under the lock
(:func:`aegis.lake.landing.sweep_stale_tmp`).

Re-processing a batch replaces its own files and index entries, so it never
duplicates rows.  Each batch stands alone: a bad one is quarantined and the
others go on; that holds for the unexpected too: an error of any kind while
reading, conforming or validating one batch quarantines that file whole
("validator error: <type>: <message>"), and a grouped validation that raises is
redone batch by batch so only the culprit is set aside.  Timestamps are judged
"in the future" against :func:`aegis.lake.validate.ingest_clock` (the world's
landed game clock when there is one, else the wall clock).  Each file is opened, read and conformed on its own; consecutive
small batches are then validated as one table (verdicts split back per batch)
and de-duplicated in groups (one DuckDB probe per group of about a million
rows), which is what makes many small batches cheap.  Two worker threads load
and write while this thread de-duplicates and records, with about
PREFETCH_BYTES of landed files loaded ahead.  One ingest runs at a time (a file
lock); runs queue behind it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aegis.lake.event_index import INDEX_FILE, EventIndex
from aegis.lake.landing import LandedBatch, list_landed_in, sweep_stale_tmp
from aegis.lake.manifest import Manifest, ManifestEntry
from aegis.lake.store import Lake, LocalLakeStore, as_lake
from aegis.lake.validate import (
    DEFAULT_FUTURE_SKEW,
    WALL_CLOCK,
    Conformed,
    UnreadableBatch,
    Verdicts,
    conform,
    ingest_clock,
    quarantine_rows,
    read_batch,
    validate_many,
)
from aegis.telemetry import SCHEMA_V1, WORLD_CLOCK_FILE

# Valid rows de-duplicated together in one DuckDB probe.
GROUP_ROWS = 1_000_000
# Threads reading/validating and writing batches (pyarrow releases the GIL); sized for 2 cores.
WORKERS = 2
# Batches are loaded ahead of the one being committed until this many landed bytes are in
# flight (at least PREFETCH_MIN batches), so the workers never wait while the ingest
# thread de-duplicates a group: ~1 M events of the benchmark's batches, ~100 MB of Arrow.
PREFETCH_BYTES = 16 << 20
PREFETCH_MIN = 2
# Consecutive small batches are loaded by one task and validated as one table (per-batch
# verdicts are split back out) up to this many landed bytes: ~50 k events.
CHUNK_BYTES = 1 << 20
# How long a run waits for another ingest to finish before giving up.
LOCK_TIMEOUT_S = 600.0
LOCK_POLL_S = 0.2
BRONZE_COMPRESSION = "zstd"
BRONZE_COMPRESSION_LEVEL = 1  # bronze is rewritten rarely and read often: speed over the last few %
# Columns whose min/max statistics no reader can prune on (random ids; every kind, cause
# and currency occurs in every batch) and which cost ~10% of the write to compute.
NO_STATISTICS = frozenset({"event_id", "kind", "cause", "currency", "reason", "row_number"})
QUARANTINE_FILES_MANIFEST = "manifest.jsonl"
# Where an S3 lake keeps its event index between runs (a cache: synced with the manifest on open).
INDEX_KEY = f"ingest/{INDEX_FILE}"
DICTIONARY_COLUMNS = [
    "region",
    "shard_id",
    "kind",
    "cause",
    "currency",
    "schema_version",
    "config_version",
    "batch_id",
    "ingested_at",
    "source_file",
    "quarantined_at",
    "rule",
]

# The rule of a row whose event id another event already carries with different content.
ID_COLLISION = "id_collision"
_PLAIN_SCHEMA = pa.schema([f.with_nullable(True) for f in SCHEMA_V1])

BRONZE_SCHEMA = pa.schema(
    [
        *[f.with_nullable(True) for f in SCHEMA_V1],
        pa.field("batch_id", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


class IngestBusy(TimeoutError):
    """Another ingest held the lake for longer than we were willing to wait."""


@dataclass
class BatchResult:
    """What happened to one landed batch."""

    batch_id: str
    source_path: str
    status: str
    rows_in: int = 0
    bronze_rows: int = 0
    quarantined_rows: int = 0
    duplicate_rows: int = 0
    reason: str | None = None  # why the whole file was rejected
    notes: list[str] = field(default_factory=list)
    rules: Counter[str] = field(default_factory=Counter)  # quarantined rows per rule
    examples: dict[str, str] = field(default_factory=dict)  # one reason sentence per rule
    bronze_path: str | None = None
    quarantine_path: str | None = None

    @property
    def conserved(self) -> bool:
        return self.rows_in == self.bronze_rows + self.quarantined_rows + self.duplicate_rows


@dataclass
class IngestReport:
    """The outcome of one ingest call, for the asset's metadata and the CLI."""

    results: list[BatchResult]
    skipped: list[str]  # batches already processed (not re-done)
    seconds: float

    def total(self, attr: str) -> int:
        return sum(int(getattr(r, attr)) for r in self.results)

    @property
    def rows_in(self) -> int:
        return self.total("rows_in")

    @property
    def bronze_rows(self) -> int:
        return self.total("bronze_rows")

    @property
    def quarantined_rows(self) -> int:
        return self.total("quarantined_rows")

    @property
    def duplicate_rows(self) -> int:
        return self.total("duplicate_rows")

    @property
    def conserved(self) -> bool:
        """Every batch conserved (the totals are their sums, so they add up too)."""
        return all(r.conserved for r in self.results)

    @property
    def statuses(self) -> Counter[str]:
        return Counter(r.status for r in self.results)

    def by_rule(self) -> list[tuple[str, int, str]]:
        """(rule, rows, an example reason), most frequent first; whole files count as ``unreadable_file``."""
        counts: Counter[str] = Counter()
        examples: dict[str, str] = {}
        for r in self.results:
            counts.update(r.rules)
            for rule, text in r.examples.items():
                examples.setdefault(rule, text)
            if r.status == "rejected":
                counts["unreadable_file"] += max(r.quarantined_rows, 1)
                examples.setdefault("unreadable_file", r.reason or "")
        return [(rule, n, examples.get(rule, "")) for rule, n in counts.most_common()]


@dataclass
class _Prepared:
    batch: LandedBatch
    batch_id: str
    batch_no: int
    conformed: Conformed
    verdicts: Verdicts
    valid: pa.Table
    result: BatchResult


# ---------------------------------------------------------------------- helpers


@contextmanager
def ingest_lock(where: Lake | object, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """One ingest at a time per lake (runs may overlap in Dagster; files must not).

    Local lake: an exclusive ``flock`` on ``lake/ingest/.lock``.  A lake whose
    manifest is PostgreSQL (prod: run pods on several nodes): a session advisory
    lock in that database, released by PostgreSQL itself if the pod dies.
    """
    lake = as_lake(where)
    if lake.manifest_url.startswith("postgresql"):
        with _pg_lock(lake, timeout_s):
            yield
        return
    lock_path = lake.state_dir / ".lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    with open(lock_path, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IngestBusy(
                        f"another ingest has held {lock_path} for over {timeout_s:.0f} s"
                    ) from None
                time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# The advisory lock key of "the ingest of this lake": stable across processes and hosts.
def _lock_key(lake: Lake) -> int:
    digest = hashlib.sha256(f"aegis-ingest:{lake.store.uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _pg_lock(lake: Lake, timeout_s: float) -> Iterator[None]:
    import sqlalchemy as sa

    engine = Manifest(lake).engine
    key = _lock_key(lake)
    deadline = time.monotonic() + timeout_s
    with engine.connect() as con:
        while not con.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            con.rollback()
            if time.monotonic() > deadline:
                raise IngestBusy(
                    f"another ingest has held the lock of {lake.store.uri} for over {timeout_s:.0f} s"
                )
            time.sleep(LOCK_POLL_S)
        con.commit()
        try:
            yield
        finally:
            con.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            con.commit()


def _write_parquet(lake: Lake, table: pa.Table, rel: str) -> None:
    """Atomic write (:meth:`aegis.lake.store.LakeStore.write_parquet`) with bronze's options."""
    lake.store.write_parquet(
        rel,
        table,
        compression=BRONZE_COMPRESSION,
        compression_level=BRONZE_COMPRESSION_LEVEL,
        store_schema=False,  # plain Parquet types: constant columns stay strings for every reader
        use_dictionary=DICTIONARY_COLUMNS,  # high-cardinality columns gain nothing from trying
        write_statistics=[c for c in table.column_names if c not in NO_STATISTICS],
    )


def _constant(value: object, n: int, typ: pa.DataType) -> pa.Array:
    """A constant column without materializing ``n`` Python objects."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value], typ))


def _partition_date(batch: LandedBatch, table: pa.Table | None) -> str:
    if batch.date:
        return batch.date
    if table is not None and table.num_rows:
        first = pc.min(table.column("ts")).as_py()
        if first is not None:
            return f"{first:%Y-%m-%d}"
    return datetime.fromtimestamp(batch.mtime_ns / 1e9, UTC).strftime("%Y-%m-%d")


def pending_batches(where: Lake | object, manifest: Manifest | None = None) -> list[LandedBatch]:
    """Landed batches not yet finished, in landing order."""
    lake = as_lake(where)
    manifest = manifest or Manifest(lake)
    done = manifest.done_sources()
    return [b for b in list_landed_in(lake) if b.rel not in done]


# ------------------------------------------------------------------------ steps


def _quarantine_file(lake: Lake, batch: LandedBatch, batch_id: str, reason: str, now: datetime) -> str:
    """Copy an unreadable file whole and record its reason; return its key in the lake.

    A local lake lists it in ``quarantine/files/manifest.jsonl``; S3 cannot append,
    so there the reason is one object beside the file (``<name>.reason.json``).
    """
    target = f"quarantine/files/{batch_id}/{Path(batch.rel).name}"
    lake.store.copy(lake.landing_rel(batch.rel), target)
    line = {
        "batch_id": batch_id,
        "source_path": batch.rel,
        "quarantined_path": target,
        "size": batch.size,
        "reason": reason,
        "quarantined_at": now.isoformat(),
    }
    if isinstance(lake.store, LocalLakeStore):
        with open(lake.store.path("quarantine/files") / QUARANTINE_FILES_MANIFEST, "a") as fh:
            fh.write(json.dumps(line) + "\n")
    else:
        lake.store.write_bytes(f"{target}.reason.json", json.dumps(line).encode())
    return target


@dataclass
class _Loaded:
    """A batch read, conformed and validated (worker-thread work: pyarrow releases the GIL)."""

    conformed: Conformed | None = None
    verdicts: Verdicts | None = None
    valid: pa.Table | None = None
    rows: int = 0
    error: str | None = None
    vanished: bool = False  # the landed object was gone when the worker came to read it


def footer_rows(path: Path) -> int:
    """Rows a Parquet file declares in its footer; 0 when even the footer cannot be read."""
    try:
        return int(pq.read_metadata(path).num_rows)
    except Exception:  # any unreadable file: it holds no rows anyone can count
        return 0


def validator_error(exc: BaseException) -> str:
    """The reason a batch is quarantined whole when reading/conforming/validating it failed unexpectedly."""
    detail = " ".join(str(exc).split()) or "(no message)"
    return f"validator error: {type(exc).__name__}: {detail}"


def _judge(x: _Loaded, verdicts: Verdicts) -> None:
    assert x.conformed is not None
    x.verdicts = verdicts
    x.valid = x.conformed.table.filter(verdicts.valid) if verdicts.n_bad else x.conformed.table


def _fail(x: _Loaded, exc: BaseException) -> None:
    x.conformed = x.verdicts = x.valid = None
    x.error = validator_error(exc)


def _stage(lake: Lake, batch: LandedBatch) -> Path:
    """The batch as a local file: itself in a local lake; fetched into the state directory from S3.

    A storage failure here (an unreachable bucket) is raised, never taken for a bad
    batch: the run fails, the batch stays unfinished in the manifest, the rerun redoes it.
    """
    if lake.is_remote:
        return lake.store.fetch(lake.landing_rel(batch.rel), batch.path)
    return batch.path


def _unstage(lake: Lake, batch: LandedBatch) -> None:
    if lake.is_remote:
        batch.path.unlink(missing_ok=True)


def _load(
    lake: Lake,
    batches: list[LandedBatch],
    now: datetime,
    future_skew: timedelta,
    clock_name: str = WALL_CLOCK,
) -> list[_Loaded]:
    """Read and conform each batch on its own (one bad file never touches another), validate together.

    Every failure stays with its batch: an unexpected exception while reading or
    conforming a file makes that file rejected (``error``); one while validating
    the group makes each batch be validated alone, so only the culprit is.
    """
    loaded: list[_Loaded] = []
    for batch in batches:
        table: pa.Table | None = None
        try:
            path = _stage(lake, batch)
        except FileNotFoundError:  # deleted from the landing since it was listed (retention)
            loaded.append(_Loaded(vanished=True))
            continue
        try:
            table = read_batch(path)
            loaded.append(_Loaded(conform(table), rows=table.num_rows))
        except UnreadableBatch as exc:
            rows = table.num_rows if table is not None else footer_rows(path)
            loaded.append(_Loaded(rows=rows, error=exc.reason))
        except Exception as exc:
            rows = table.num_rows if table is not None else footer_rows(path)
            loaded.append(_Loaded(rows=rows, error=validator_error(exc)))
    readable = [x for x in loaded if x.conformed is not None]
    conformed = [x.conformed for x in readable if x.conformed is not None]
    try:
        for x, verdicts in zip(readable, validate_many(conformed, now, future_skew, clock_name), strict=True):
            _judge(x, verdicts)
    except Exception:
        for x in readable:  # one batch broke the group: judge each alone
            try:
                assert x.conformed is not None
                (verdicts,) = validate_many([x.conformed], now, future_skew, clock_name)
                _judge(x, verdicts)
            except Exception as exc:
                _fail(x, exc)
    return loaded


def _chunks(registered: list[tuple[LandedBatch, str, int, str | None]]) -> list[list[int]]:
    """Positions of the batches to load, in order, grouped into load tasks of about CHUNK_BYTES."""
    chunks: list[list[int]] = []
    size = 0
    for i, (batch, _id, _no, clash) in enumerate(registered):
        if clash is not None:
            continue
        if not chunks or size + batch.size > CHUNK_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += batch.size
    return chunks


def _register_all(
    manifest: Manifest, todo: list[LandedBatch], run_id: str | None
) -> list[tuple[LandedBatch, str, int, str | None]]:
    """Give each batch its manifest number (one transaction); a clash of batch ids yields a distinct id
    and a reason: the same id from another file keeps both files, never under one id."""
    numbers = manifest.register_many([(b.batch_id, b.rel, b.size, run_id) for b in todo])
    out: list[tuple[LandedBatch, str, int, str | None]] = []
    for batch, (batch_no, first_source) in zip(todo, numbers, strict=True):
        if first_source is not None and first_source != batch.rel:
            clash = f"batch id {batch.batch_id} was already used by {first_source}; batch ids must be unique"
            batch_id = f"{batch.batch_id}~{hashlib.sha1(batch.rel.encode()).hexdigest()[:10]}"
            batch_no, _ = manifest.register(batch_id, batch.rel, batch.size, run_id)
            out.append((batch, batch_id, batch_no, clash))
        else:
            out.append((batch, batch.batch_id, batch_no, None))
    return out


def _prepared(batch: LandedBatch, batch_id: str, batch_no: int, loaded: _Loaded) -> _Prepared:
    assert loaded.conformed is not None and loaded.verdicts is not None and loaded.valid is not None
    verdicts = loaded.verdicts
    result = BatchResult(
        batch_id=batch_id,
        source_path=batch.rel,
        status="ok",
        rows_in=loaded.rows,
        quarantined_rows=verdicts.n_bad,
        notes=list(loaded.conformed.notes),
    )
    if verdicts.n_bad:
        rules = verdicts.rules.to_pylist()
        result.rules = Counter(rules)
        # one example sentence per rule: the first row that broke it
        for rule in result.rules:
            first = rules.index(rule)
            result.examples[rule] = verdicts.reasons[first].as_py()
    return _Prepared(batch, batch_id, batch_no, loaded.conformed, verdicts, loaded.valid, result)


def _entry(
    batch_no: int, batch: LandedBatch, r: BatchResult, run_id: str | None, now: datetime
) -> ManifestEntry:
    return ManifestEntry(
        batch_no=batch_no,
        batch_id=r.batch_id,
        source_path=batch.rel,
        source_size=batch.size,
        status=r.status,
        rows_in=r.rows_in,
        bronze_rows=r.bronze_rows,
        quarantined_rows=r.quarantined_rows,
        duplicate_rows=r.duplicate_rows,
        reason=r.reason,
        notes="; ".join(r.notes) or None,
        bronze_path=r.bronze_path,
        quarantine_path=r.quarantine_path,
        run_id=run_id,
        processed_at=now.isoformat(),
    )


def _first_seen(ids: pa.ChunkedArray, hashes: np.ndarray) -> np.ndarray:
    """For every position, the position of the first row of the group with its event id (itself if first).

    Exact, not by hash: only rows sharing a hash with another row are compared by id.
    """
    n = len(hashes)
    first = np.arange(n, dtype=np.int64)
    ordered = np.sort(hashes)  # a radix sort: far cheaper than hashing the hashes again
    if n < 2 or not (ordered[1:] == ordered[:-1]).any():  # distinct hashes: distinct ids
        return first
    order = np.argsort(hashes, kind="stable")
    same = hashes[order][1:] == hashes[order][:-1]
    shared = np.zeros(n, dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    cand = np.sort(order[shared])  # rows whose hash another row has too
    cand_ids = ids.take(pa.array(cand))
    t = pa.table({"event_id": cand_ids, "pos": pa.array(cand)})
    g = t.group_by("event_id", use_threads=False).aggregate([("pos", "min")])
    k = _flat(pc.index_in(cand_ids, value_set=_flat(g.column("event_id")))).to_numpy(zero_copy_only=False)
    first[cand] = g.column("pos_min").to_numpy()[k]
    return first


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _plain(table: pa.Table) -> pa.Table:
    """The SCHEMA_V1 columns with plain (not dictionary) types, for comparing rows across files."""
    return table.select(list(SCHEMA_V1.names)).cast(_PLAIN_SCHEMA)


def _same_rows(a: pa.Table, b: pa.Table) -> tuple[np.ndarray, list[np.ndarray]]:
    """Row-aligned comparison of two plain tables: all-equal per row, and per column a "differs" mask."""
    diffs = []
    for name in SCHEMA_V1.names:
        x, y = a.column(name), b.column(name)
        same = pc.or_(pc.fill_null(pc.equal(x, y), False), pc.and_(pc.is_null(x), pc.is_null(y))).to_numpy(
            zero_copy_only=False
        )
        diffs.append(~same)
    equal = ~np.logical_or.reduce(diffs) if diffs else np.ones(a.num_rows, dtype=bool)
    return equal, diffs


class _IdJudge:
    """Sorts a group's repeated event ids into true duplicates and collisions (:func:`_judge_ids`)."""

    def __init__(self, group: list[_Prepared]) -> None:
        self.group = group
        self.offsets = np.cumsum([0] + [p.valid.num_rows for p in group])
        self.dup = np.zeros(int(self.offsets[-1]), dtype=bool)
        self.positions: list[np.ndarray] = []
        self.reasons: list[pa.Array] = []

    def compare(self, pos: np.ndarray, mine: pa.Table, reference: pa.Table, where: str | list[str]) -> None:
        """Rows ``mine`` (group positions ``pos``) against the rows holding their ids, aligned."""
        equal, diffs = _same_rows(mine, reference)
        self.dup[pos[equal]] = True
        bad = ~equal
        if bad.any():
            self.positions.append(pos[bad])
            self.reasons.append(
                _collision_reasons(
                    _flat(mine.column("event_id")).filter(pa.array(bad)),
                    [d[bad] for d in diffs],
                    where if isinstance(where, str) else [w for w, b in zip(where, bad, strict=True) if b],
                )
            )

    def against_bronze(self, held: pa.Table, batch_id: str, candidates: np.ndarray) -> np.ndarray:
        """Judge the candidate positions (ascending) whose ids the bronze rows ``held`` carry.

        Batch by batch of the group, so rows are taken from one file at a time,
        and not at all when a whole batch lines up with the bronze file (the same
        batch landed twice). Returns the positions bronze holds.
        """
        held_ids = _flat(held.column("event_id"))
        found = []
        for b in np.unique(np.searchsorted(self.offsets, candidates, side="right") - 1):
            lo, hi = np.searchsorted(candidates, [self.offsets[b], self.offsets[b + 1]])
            valid = self.group[b].valid
            local = candidates[lo:hi] - self.offsets[b]
            at = _flat(pc.index_in(_flat(valid.column("event_id")).take(pa.array(local)), value_set=held_ids))
            hit = pc.is_valid(at).to_numpy(zero_copy_only=False)
            if not hit.any():  # hash collisions only
                continue
            local, at_np = local[hit], _flat(pc.filter(at, pa.array(hit))).to_numpy()
            whole = len(local) == valid.num_rows == held.num_rows and (at_np == local).all()
            mine = _plain(valid) if whole else _plain(valid.take(pa.array(local)))
            reference = held if whole else held.take(pa.array(at_np))
            pos = local + self.offsets[b]
            self.compare(pos, mine, reference, f"held in bronze by batch {batch_id}")
            found.append(pos)
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def rows(self, positions: np.ndarray) -> pa.Table:
        """Rows at group ``positions`` as one plain table, in that order (the rare within-group case)."""
        batch_of = np.searchsorted(self.offsets, positions, side="right") - 1
        parts, order = [], []
        for b in np.unique(batch_of):
            mine = np.flatnonzero(batch_of == b)
            parts.append(_plain(self.group[b].valid.take(pa.array(positions[mine] - self.offsets[b]))))
            order.append(mine)
        if not parts:
            return _PLAIN_SCHEMA.empty_table()
        back = np.empty(len(positions), dtype=np.int64)
        back[np.concatenate(order)] = np.arange(len(positions))
        return pa.concat_tables(parts).take(pa.array(back))


def _collision_reasons(ids: pa.Array, diffs: list[np.ndarray], where: str | list[str]) -> pa.Array:
    """One sentence per colliding row: whose id it reused, and which fields differ."""
    none = pa.scalar(None, pa.string())
    pieces = [pc.if_else(pa.array(d), name, none) for name, d in zip(SCHEMA_V1.names, diffs, strict=True)]
    fields = pc.binary_join_element_wise(*pieces, ", ", null_handling="skip")
    return pc.binary_join_element_wise(
        "event_id ",
        pc.cast(ids, pa.string()),
        " is already used by a different event (",
        where if isinstance(where, str) else pa.array(where, pa.string()),
        "); differing field(s): ",
        fields,
        ". Two producers gave one id to different events (e.g. two worlds without distinct "
        "instance ids): quarantined, not dropped",
        "",
    )


def _judge_ids(
    lake: Lake,
    manifest: Manifest,
    index: EventIndex,
    group: list[_Prepared],
    ids: pa.ChunkedArray,
    hashes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Duplicates and id collisions among a group's valid rows: (duplicate mask, collision positions, reasons).

    A row whose id bronze already holds is compared with that bronze row (index
    hits are only candidates, 64-bit hashes: each is confirmed by id against the
    named batch's bronze file, read once); else a row whose id an earlier row of
    the group carries is compared with that row. Same content (every SCHEMA_V1
    field) is a true duplicate: dropped and counted. Different content is a
    collision: quarantined with its reason, never dropped.
    """
    judge = _IdJudge(group)
    n = len(hashes)
    held: list[np.ndarray] = []
    pos, batch_nos = index.lookup(hashes)
    if len(pos):
        files = manifest.bronze_paths(np.unique(batch_nos).tolist())
        for batch_no in np.unique(batch_nos):
            rel = files.get(int(batch_no))
            if rel is None:
                continue
            table = _plain(lake.store.read_parquet(rel, columns=list(SCHEMA_V1.names)))
            # bronze files are named <batch id>.parquet
            held.append(judge.against_bronze(table, Path(rel).stem, np.sort(pos[batch_nos == batch_no])))
    first = _first_seen(ids, hashes)
    within = np.flatnonzero(first != np.arange(n))
    if held and len(within):
        within = within[~np.isin(within, np.concatenate(held))]  # bronze is the reference for those
    if len(within):
        firsts = first[within]
        batch_of = np.searchsorted(judge.offsets, firsts, side="right") - 1
        where = [
            f"row {int(f - judge.offsets[b])} of the valid rows of batch {group[b].batch_id}, earlier in this ingest"
            for f, b in zip(firsts, batch_of, strict=True)
        ]
        judge.compare(within, judge.rows(within), judge.rows(firsts), where)
    if not judge.positions:
        return judge.dup, np.zeros(0, np.int64), pa.array([], pa.string())
    positions = np.concatenate(judge.positions)
    reasons = pa.concat_arrays([_flat(r).cast(pa.string()) for r in judge.reasons])
    order = np.argsort(positions, kind="stable")
    return judge.dup, positions[order], reasons.take(pa.array(order))


def _quarantine_collisions(p: _Prepared, local: np.ndarray, reasons: pa.Array) -> None:
    """Add colliding valid rows (``local``: positions among ``p.valid``) to the batch's rejected rows."""
    valid_rows = np.flatnonzero(p.verdicts.valid.to_numpy(zero_copy_only=False))
    rows = valid_rows[local].astype(np.int64)
    v = p.verdicts
    all_rows = np.concatenate([v.bad_rows.to_numpy(), rows])
    order = np.argsort(all_rows, kind="stable")
    rules = pa.concat_arrays([v.rules.cast(pa.string()), pa.array([ID_COLLISION] * len(rows), pa.string())])
    texts = pa.concat_arrays([v.reasons.cast(pa.string()), reasons])
    valid = v.valid.to_numpy(zero_copy_only=False).copy()
    valid[rows] = False
    p.verdicts = Verdicts(
        valid=pa.array(valid),
        bad_rows=pa.array(all_rows[order], pa.int64()),
        rules=rules.take(pa.array(order)),
        reasons=texts.take(pa.array(order)),
    )
    r = p.result
    r.quarantined_rows += len(rows)
    r.rules[ID_COLLISION] += len(rows)
    r.examples.setdefault(ID_COLLISION, reasons[0].as_py())


def _batch_keys(p: _Prepared | None, batch: LandedBatch, batch_id: str) -> tuple[str, str]:
    """The bronze and quarantine keys of a batch (partitioned by the date of its events)."""
    table = None if p is None else (p.valid if p.valid.num_rows else p.conformed.table)
    date = _partition_date(batch, table)
    return f"bronze/date={date}/{batch_id}.parquet", f"quarantine/date={date}/{batch_id}.parquet"


def _write_batch_files(lake: Lake, p: _Prepared, bronze: pa.Table, ingested_at: datetime) -> None:
    """Replace the batch's bronze and quarantine files (or remove stale ones when it has none)."""
    r = p.result
    bronze_key, quarantine_key = _batch_keys(p, p.batch, p.batch_id)
    ts_type = BRONZE_SCHEMA.field("ingested_at").type
    if r.bronze_rows:
        columns = [*bronze.columns, _constant(p.batch_id, r.bronze_rows, pa.string())]
        columns.append(_constant(ingested_at, r.bronze_rows, ts_type))
        _write_parquet(lake, pa.Table.from_arrays(columns, names=BRONZE_SCHEMA.names), bronze_key)
        r.bronze_path = bronze_key
    else:
        lake.store.delete(bronze_key)
    if r.quarantined_rows:
        q = quarantine_rows(p.conformed, p.verdicts)
        q = q.append_column("batch_id", _constant(p.batch_id, q.num_rows, pa.string()))
        q = q.append_column("source_file", _constant(p.batch.rel, q.num_rows, pa.string()))
        q = q.append_column("quarantined_at", _constant(ingested_at, q.num_rows, ts_type))
        _write_parquet(lake, q, quarantine_key)
        r.quarantine_path = quarantine_key
    else:
        lake.store.delete(quarantine_key)


def _settle(
    p: _Prepared,
    dup: np.ndarray,
    dropped: np.ndarray,
    collisions: np.ndarray,
    reasons: pa.Array,
    offset: int,
    hashes: np.ndarray,
) -> tuple[pa.Table, np.ndarray]:
    """One batch's share of a group's verdicts: its bronze rows and their hashes (status set)."""
    n = p.valid.num_rows
    batch_out = dropped[offset : offset + n]
    lo, hi = np.searchsorted(collisions, [offset, offset + n])
    if hi > lo:
        _quarantine_collisions(p, collisions[lo:hi] - offset, reasons.slice(lo, hi - lo))
    r = p.result
    r.duplicate_rows = int(dup[offset : offset + n].sum())
    kept = r.duplicate_rows or hi > lo
    bronze = p.valid.filter(pa.array(~batch_out)) if kept else p.valid
    batch_h = hashes[offset : offset + n]
    r.bronze_rows = bronze.num_rows
    if r.rows_in == 0:
        r.status = "empty"
    elif r.quarantined_rows or r.duplicate_rows:
        r.status = "partial"
    return bronze, (batch_h[~batch_out] if kept else batch_h)


# -------------------------------------------------------------------- one run


@dataclass
class _Ingest:
    """One ingest run under the lock: the lake, its manifest and event index, and what it decided."""

    lake: Lake
    manifest: Manifest
    index: EventIndex
    pool: ThreadPoolExecutor
    ingested_at: datetime  # when things happened (files, records), not what ts may be
    run_id: str | None
    say: Callable[[str], None]
    results: list[BatchResult] = field(default_factory=list)

    def reject(self, batch: LandedBatch, batch_id: str, batch_no: int, reason: str, rows: int) -> None:
        """Quarantine a batch whole (its file kept as it landed) and record it."""
        # A batch rejected now may have had bronze/quarantine files from an earlier, different copy.
        for key in _batch_keys(None, batch, batch_id):
            self.lake.store.delete(key)
        qpath = _quarantine_file(self.lake, batch, batch_id, reason, self.ingested_at)
        result = BatchResult(
            batch_id=batch_id,
            source_path=batch.rel,
            status="rejected",
            rows_in=rows,
            quarantined_rows=rows,
            reason=reason,
            quarantine_path=qpath,
        )
        self.manifest.record(_entry(batch_no, batch, result, self.run_id, self.ingested_at))
        _unstage(self.lake, batch)
        self.results.append(result)

    def vanished(self, batch: LandedBatch, batch_no: int) -> None:
        """A batch deleted from the landing after it was listed: forgotten, not left half-done."""
        self.manifest.forget_unfinished(batch_no)
        self.say(f"{batch.rel}: removed from the landing before it could be read; not ingested")

    def commit(self, group: list[_Prepared]) -> None:
        """De-duplicate a group of validated batches, write their files, index and record them."""
        if not group:
            return
        self.index.forget([p.batch_no for p in group])
        chunks = [c for p in group for c in p.valid.column("event_id").chunks]
        ids = pa.chunked_array(chunks, pa.string())
        hashes = self.index.hashes(ids) if len(ids) else np.zeros(0, np.uint64)
        dup, collisions, reasons = _judge_ids(self.lake, self.manifest, self.index, group, ids, hashes)
        dropped = dup.copy()
        dropped[collisions] = True  # neither in bronze nor indexed: quarantined below
        add_h: list[np.ndarray] = []
        add_b: list[np.ndarray] = []
        writes = []
        offset = 0
        for p in group:
            bronze, kept_h = _settle(p, dup, dropped, collisions, reasons, offset, hashes)
            offset += p.valid.num_rows
            if bronze.num_rows:
                add_h.append(kept_h)
                add_b.append(np.full(bronze.num_rows, p.batch_no, dtype=np.int32))
            writes.append(self.pool.submit(_write_batch_files, self.lake, p, bronze, self.ingested_at))
        for w in writes:
            w.result()  # re-raises a failed write before anything is indexed or recorded
        if add_h:
            self.index.add(np.concatenate(add_h), np.concatenate(add_b))
        entries = [_entry(p.batch_no, p.batch, p.result, self.run_id, self.ingested_at) for p in group]
        self.manifest.record_many(entries)  # the group's batches are done together, or none is
        for p, entry in zip(group, entries, strict=True):
            if self.lake.is_remote:  # the index is a cache there: remember which version it holds
                self.index.mark_synced(p.batch_no, entry.processed_at)
            _unstage(self.lake, p.batch)
            self.results.append(p.result)

    def run(
        self,
        registered: list[tuple[LandedBatch, str, int, str | None]],
        judge_at: datetime,
        future_skew: timedelta,
        clock_name: str,
        group_rows: int,
    ) -> None:
        """Load ahead on the workers, take batches in order, commit in groups of ``group_rows``."""
        chunks = _chunks(registered)
        chunk_of = {i: (c, k) for c, members in enumerate(chunks) for k, i in enumerate(members)}
        futures: dict[int, Future[list[_Loaded]]] = {}
        submitted = 0  # chunks submitted
        in_flight = 0  # landed bytes submitted and not yet taken
        group: list[_Prepared] = []
        rows = 0
        for i, (batch, batch_id, batch_no, clash) in enumerate(registered):
            current = chunk_of[i][0] if i in chunk_of else submitted
            while submitted < len(chunks) and (  # keep the workers busy, memory bounded
                submitted <= current + PREFETCH_MIN or in_flight < PREFETCH_BYTES
            ):
                ahead = [registered[j][0] for j in chunks[submitted]]
                futures[submitted] = self.pool.submit(
                    _load, self.lake, ahead, judge_at, future_skew, clock_name
                )
                in_flight += sum(b.size for b in ahead)
                submitted += 1
            if clash is not None:  # the file is kept whole: count what it holds
                try:
                    self.reject(batch, batch_id, batch_no, clash, footer_rows(_stage(self.lake, batch)))
                except FileNotFoundError:
                    self.vanished(batch, batch_no)
                continue
            c, k = chunk_of[i]
            loaded = futures[c].result()[k]
            in_flight -= batch.size
            if k == len(chunks[c]) - 1:
                del futures[c]
            if loaded.vanished:
                self.vanished(batch, batch_no)
                continue
            if loaded.error is not None:
                self.reject(batch, batch_id, batch_no, loaded.error, loaded.rows)
                self.say(f"{batch.rel}: rejected whole: {loaded.error}")
                continue
            group.append(_prepared(batch, batch_id, batch_no, loaded))
            rows += loaded.rows
            if rows >= group_rows:
                self.commit(group)
                group, rows = [], 0
        self.commit(group)


def _todo(
    lake: Lake, manifest: Manifest, batches: list[LandedBatch] | None, reprocess: bool
) -> tuple[list[LandedBatch], list[str]]:
    """The batches to ingest, and the ids of those given but already finished."""
    if batches is None:
        return pending_batches(lake, manifest), []
    if reprocess:
        return sorted(batches), []
    done = manifest.done_sources()
    return [b for b in sorted(batches) if b.rel not in done], [b.batch_id for b in batches if b.rel in done]


def _clock(lake: Lake, now: datetime | None) -> tuple[datetime, str]:
    """:func:`aegis.lake.validate.ingest_clock` of the lake (an S3 world clock is read into the state dir)."""
    if not lake.is_remote or now is not None:
        root = (
            lake.store.path(lake.landing_prefix) if isinstance(lake.store, LocalLakeStore) else lake.state_dir
        )
        return ingest_clock(root, now)
    staged = lake.state_dir / "clock"
    (staged / WORLD_CLOCK_FILE).unlink(missing_ok=True)
    try:
        lake.store.fetch(lake.landing_rel(WORLD_CLOCK_FILE), staged / WORLD_CLOCK_FILE)
    except FileNotFoundError:
        staged.mkdir(parents=True, exist_ok=True)  # no world clock: the wall clock judges
    return ingest_clock(staged, None)


def _open_index(lake: Lake, manifest: Manifest, say: Callable[[str], None]) -> EventIndex:
    """The event index, brought up to date with the manifest where it is only a cache (S3 lakes)."""
    path = lake.state_dir / INDEX_FILE
    if lake.is_remote and not path.exists():
        try:  # a fresh pod: start from the index the last ingest left in the lake, then sync
            lake.store.fetch(INDEX_KEY, path)
        except FileNotFoundError:
            pass
    index = EventIndex(path)
    if lake.is_remote:
        changed = index.sync(
            manifest.bronze_versions(), lambda rel: lake.store.read_parquet(rel, ["event_id"])
        )
        if changed:
            say(f"event index brought up to date with the manifest ({changed} batch(es) re-read from bronze)")
    elif index.stale:
        say("event index was built by another DuckDB version; rebuilding it from bronze")
        entries = [e for e in manifest.entries() if e.bronze_path]
        index.rebuild({e.batch_no: lake.store.uri_of(e.bronze_path) for e in entries if e.bronze_path})
    return index


# --------------------------------------------------------------------- the API


def ingest_batches(
    where: Lake | object,
    batches: list[LandedBatch] | None = None,
    *,
    reprocess: bool = False,
    now: datetime | None = None,
    future_skew: timedelta = DEFAULT_FUTURE_SKEW,
    run_id: str | None = None,
    group_rows: int = GROUP_ROWS,
    log: Callable[[str], None] | None = None,
) -> IngestReport:
    """Ingest ``batches`` (default: every pending one) into bronze; see the module docstring.

    ``where`` is a :class:`~aegis.lake.store.Lake` or an :class:`~aegis.config.AegisPaths`
    (its local lake).  Batches already finished are skipped unless ``reprocess``; a
    re-processed batch replaces its own bronze and quarantine files.
    """
    started = time.perf_counter()
    lake = as_lake(where).ensure()
    lake.store.check()
    say = log or (lambda _msg: None)
    with ingest_lock(lake):
        manifest = Manifest(lake)
        if isinstance(lake.store, LocalLakeStore):
            dirs = (lake.store.path("bronze"), lake.store.path("quarantine"), manifest.dir)
            swept = [t for d in dirs for t in sweep_stale_tmp(d)]
            if swept:
                say(f"removed {len(swept)} stale temporary file(s) of killed writers from the lake")
        else:  # a killed run's staged copies: the lock is ours, nothing else uses them
            shutil.rmtree(lake.state_dir / "staging", ignore_errors=True)
        todo, skipped = _todo(lake, manifest, batches, reprocess)
        judge_at, clock_name = _clock(lake, now)
        with (
            _open_index(lake, manifest, say) as index,
            ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ingest") as pool,
        ):
            run = _Ingest(
                lake, manifest, index, pool, (now or datetime.now(UTC)).astimezone(UTC), run_id, say
            )
            registered = _register_all(manifest, todo, run_id)
            run.run(registered, judge_at, future_skew, clock_name, group_rows)
        manifest.export()
        if lake.is_remote:  # the next pod starts from this index instead of re-reading bronze
            lake.store.write_bytes(INDEX_KEY, (lake.state_dir / INDEX_FILE).read_bytes())
    report = IngestReport(results=run.results, skipped=skipped, seconds=time.perf_counter() - started)
    if not report.conserved:  # record() already refuses a non-conserving batch; this guards the results
        raise AssertionError("ingest counts are not conserved; see the manifest")
    return report
