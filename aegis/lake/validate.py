"""Validate one landed telemetry batch against schema v1, vectorized.

Three layers, each answering a different question:

1. :func:`read_batch` - can the file be read at all?  A 0-byte file, a file that
   is not Parquet or a truncated one cannot; it raises :class:`UnreadableBatch`
   and the whole file goes to ``quarantine/files``.
2. :func:`conform` - can its columns be brought to SCHEMA_V1?  The choices, per
   case, and why:

   * a missing column that the schema marks non-nullable (``event_id``, ``ts``,
     ``kind``, ...) makes every row meaningless: the whole file is quarantined;
   * a missing nullable column (``zone``, ``amount``, ...) is filled with nulls:
     rows of kinds that do not need it are still good, and rows that need it are
     rejected by the per-kind rule with a reason that names the field;
   * an extra column is dropped and noted: producers add columns before the
     schema catches up (forward compatibility), and bronze holds exactly
     SCHEMA_V1, so nothing downstream can start depending on an unvetted column;
   * a column of another type is converted when the conversion is lossless
     (int32 -> int64, strings holding numbers, ...); values that cannot be
     converted reject only their own rows ("amount: 'lots' is not a valid
     int64"); a type with no sensible conversion at all (a list where a number
     belongs) quarantines the file.
3. :func:`validate` - is each row a possible event?  Kind enum, required fields
   per kind, value ranges, string lengths, currencies, session-end causes and
   timestamp sanity, one entry each in the table :data:`RULES` (in precedence
   order).  The result names, for every rejected row, the first rule it broke as
   a short code (for counting) and a sentence (for people).

   "In the future" means later than the ingest clock plus ``future_skew``, and
   which clock depends on who stamps ``ts`` (:func:`ingest_clock`): the bundled
   world stamps accelerated GAME time (60x under ``aegis up``, from 2026-01-02), so
   when it lands its clock beside the batches (``landing/telemetry/_world_clock.json``:
   its newest landed game time plus one tick) that clock is the bound; otherwise
   (a studio backend in production stamps real time) the wall clock is.  Judging
   game time by the wall clock would quarantine every event once game time
   passed the machine's clock.

Everything is pyarrow.compute over whole columns; messages are built only for the
rejected rows, so a clean batch pays for the masks and nothing else.  The
low-cardinality string columns (:data:`DICTIONARY_COLUMNS`) are read as
dictionary arrays: decoding, every per-value rule and the bronze write then work
on a dozen distinct values instead of a million strings, which is the largest
single saving of the ingest (see ``benchmarks/telemetry.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from string import Formatter
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aegis.telemetry import (
    COMMON_REQUIRED,
    CURRENCIES,
    KINDS,
    MAX_STRING_LENGTH,
    REQUIRED_BY_KIND,
    SCHEMA_V1,
    SCHEMA_VERSION,
    SESSION_END_CAUSES,
    VALUE_RANGES,
    WORLD_EPOCH,
    read_world_clock,
)

# How far ahead of the ingest clock an event may claim to be (shard clock skew).
DEFAULT_FUTURE_SKEW = timedelta(minutes=5)
WALL_CLOCK = "the wall clock"
WORLD_CLOCK = "the world's landed game clock"
# Strings accepted as numbers when a producer wrote a numeric column as text.
INT_PATTERN = r"^\s*[+-]?\d{1,18}\s*$"
FLOAT_PATTERN = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
# Columns without which no row means anything: their absence quarantines the file.
STRUCTURAL_COLUMNS: tuple[str, ...] = tuple(f.name for f in SCHEMA_V1 if not f.nullable)
REQUIRED_ALWAYS: tuple[str, ...] = tuple(dict.fromkeys((*STRUCTURAL_COLUMNS, *COMMON_REQUIRED)))
STRING_TYPES = (pa.string(), pa.large_string())
# String columns with a handful of distinct values: read (and kept to bronze) dictionary-encoded.
DICTIONARY_COLUMNS: tuple[str, ...] = ("region", "shard_id", "kind", "cause", "currency")


def ingest_clock(landing_root: Path, now: datetime | None = None) -> tuple[datetime, str]:
    """The instant no event may be later than (before the skew allowance), and which clock it is.

    An explicit ``now`` wins (tests, re-judging at a chosen time); else the
    world clock landed beside the batches (game time plus one tick); else the
    wall clock.  A damaged world clock file raises ``ValueError`` saying so.
    """
    if now is not None:
        return now.astimezone(UTC), "the given clock"
    clock = read_world_clock(landing_root)
    if clock is not None:
        return clock.bound, WORLD_CLOCK
    return datetime.now(UTC), WALL_CLOCK


class UnreadableBatch(Exception):
    """No row of the batch can be rescued; the file is quarantined whole with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Check:
    """One rule over a whole batch.

    ``mask`` is True where a row breaks the rule (never null); ``message`` builds
    the sentence for the rows given by index, and is only called for rows that
    break this rule first.
    """

    rule: str
    mask: pa.Array
    message: Callable[[pa.Array], pa.Array]


@dataclass
class Conformed:
    """A batch brought to SCHEMA_V1, plus what it cost."""

    table: pa.Table  # SCHEMA_V1 names, order and types; strings may be dictionary-encoded strings
    original: pa.Table  # the schema columns as read, for quarantining rows as they were
    checks: list[Check] = field(default_factory=list)  # rows whose values could not be converted
    notes: list[str] = field(default_factory=list)  # schema drift a person should know about


@dataclass(frozen=True)
class Verdicts:
    """Which rows are valid, and for the others the first rule broken and why."""

    valid: pa.Array  # boolean, one per row
    bad_rows: pa.Array  # int64 row numbers, ascending
    rules: pa.Array  # string, aligned with bad_rows
    reasons: pa.Array  # string, aligned with bad_rows

    @property
    def n_bad(self) -> int:
        return len(self.bad_rows)

    def slice(self, offset: int, length: int) -> Verdicts:
        """The verdicts of rows ``offset .. offset + length``, renumbered from 0 (for split batches)."""
        rows = self.bad_rows.to_numpy()
        lo, hi = np.searchsorted(rows, [offset, offset + length])
        return Verdicts(
            valid=self.valid.slice(offset, length),
            bad_rows=pa.array(rows[lo:hi] - offset, pa.int64()),
            rules=self.rules.slice(lo, hi - lo),
            reasons=self.reasons.slice(lo, hi - lo),
        )


# ---------------------------------------------------------------------- reading


def read_batch(path: Path) -> pa.Table:
    """Read a landed file, or raise :class:`UnreadableBatch` saying why it cannot be."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableBatch(f"the file cannot be opened ({exc.strerror or exc})") from exc
    if size == 0:
        raise UnreadableBatch("the file is empty (0 bytes), so it holds no Parquet data at all")
    try:
        with pq.ParquetFile(path) as pf:
            as_dict = _dictionary_columns(pf.schema_arrow)
            if not as_dict:
                # One thread per file: the ingest already reads files in parallel.
                table = pf.read(use_threads=False)
        if as_dict:
            # Reuse the footer just parsed; only the decoding of those columns changes.
            with pq.ParquetFile(path, metadata=pf.metadata, read_dictionary=as_dict) as pf:
                table = pf.read(use_threads=False)
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnreadableBatch(
            f"the file is not readable Parquet (truncated, corrupt or another format): {detail}"
        ) from exc
    names = table.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UnreadableBatch(f"the file has duplicated column name(s) {', '.join(dupes)}")
    return table


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """The DICTIONARY_COLUMNS present once each as strings (a duplicated name is left for the caller to reject)."""
    names = schema.names
    return [
        name
        for name in DICTIONARY_COLUMNS
        if names.count(name) == 1 and schema.field(name).type in STRING_TYPES
    ]


def _is_string_like(t: pa.DataType) -> bool:
    return t in STRING_TYPES or (pa.types.is_dictionary(t) and t.value_type in STRING_TYPES)


def _same_type(name: str, actual: pa.DataType, target: pa.DataType) -> bool:
    """``actual`` holds ``target`` values as they are: equal, or (for DICTIONARY_COLUMNS) a dictionary of them."""
    if actual == target:
        return True
    return name in DICTIONARY_COLUMNS and pa.types.is_dictionary(actual) and actual.value_type == target


def _per_value(col: pa.ChunkedArray, fn: Callable[[pa.Array], pa.Array]) -> pa.ChunkedArray:
    """An element-wise ``fn`` of a column; for a dictionary column it runs once per distinct value."""
    if not pa.types.is_dictionary(col.type):
        return fn(col)
    if col.num_chunks == 0:
        empty = fn(pa.array([], col.type.value_type))
        return pa.chunked_array([], empty.type)
    return pa.chunked_array([fn(c.dictionary).take(c.indices) for c in col.chunks])


# ------------------------------------------------------------------- conforming


def _lit(value: str, n: int) -> pa.Array:
    return pa.array([value] * n, pa.string()) if n else pa.array([], pa.string())


def _as_text(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A column as strings for messages and quarantine; unconvertible types become their repr."""
    try:
        return pc.cast(arr, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.array([None if v is None else repr(v) for v in arr.to_pylist()], pa.string())


def _convert(name: str, col: pa.ChunkedArray, target: pa.DataType) -> tuple[pa.ChunkedArray, pa.Array | None]:
    """Convert ``col`` to ``target``; return it and a mask of rows whose value was lost.

    Raises :class:`UnreadableBatch` when the type has no row-by-row conversion.
    """
    if pa.types.is_dictionary(col.type):  # e.g. a categorical column: convert its values
        col = col.cast(col.type.value_type)
        if col.type == target:
            return col, None
    try:
        return pc.cast(col, target, safe=True), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    src = col.type
    if src in STRING_TYPES and (pa.types.is_integer(target) or pa.types.is_floating(target)):
        pattern = INT_PATTERN if pa.types.is_integer(target) else FLOAT_PATTERN
        ok = pc.fill_null(pc.match_substring_regex(col, pattern), False)
        trimmed = pc.utf8_trim_whitespace(pc.if_else(ok, col, pa.scalar(None, src)))
        wide = pc.cast(trimmed, pa.int64() if pa.types.is_integer(target) else pa.float64())
        return _narrow(wide, target, ok, col)
    if src in STRING_TYPES and pa.types.is_timestamp(target):
        # ISO-8601 text; rows that do not parse are lost one by one.
        parsed = pc.strptime(col, format="%Y-%m-%dT%H:%M:%S%z", unit="us", error_is_null=True)
        parsed2 = pc.strptime(col, format="%Y-%m-%d %H:%M:%S%z", unit="us", error_is_null=True)
        merged = pc.coalesce(parsed, parsed2)
        out = pc.cast(merged, target)
        lost = pc.and_(pc.is_valid(col), pc.is_null(out))
        return out, pc.fill_null(lost, False)
    if (pa.types.is_integer(src) or pa.types.is_floating(src)) and (
        pa.types.is_integer(target) or pa.types.is_floating(target)
    ):
        return _narrow(col, target, pc.is_valid(col), col)
    raise UnreadableBatch(
        f"column {name} has type {src} but schema v1 says {target}, and no conversion exists"
    )


def _narrow(
    wide: pa.ChunkedArray, target: pa.DataType, ok: pa.ChunkedArray, original: pa.ChunkedArray
) -> tuple[pa.ChunkedArray, pa.Array]:
    """Keep values that fit ``target`` exactly; the rest become null and are flagged."""
    fits = pc.fill_null(ok, False)
    if pa.types.is_integer(target):
        for in_range in _int_range_masks(wide, target):
            fits = pc.and_(fits, pc.fill_null(in_range, False))
        if pa.types.is_floating(wide.type):
            fits = pc.and_(fits, pc.fill_null(pc.equal(pc.floor(wide), wide), False))
    kept = pc.if_else(fits, wide, pa.scalar(None, wide.type))
    out = pc.cast(kept, target, safe=False)
    lost = pc.and_(pc.is_valid(original), pc.invert(fits))
    return out, pc.fill_null(lost, False)


def _int_range_masks(wide: pa.ChunkedArray, target: pa.DataType) -> list[pa.ChunkedArray]:
    """Masks true where ``wide``'s values lie within ``target``'s integer range.

    Every comparison is made in ``wide``'s own type, with bounds it can hold: a
    bound Arrow had to cast would fail for the whole column (the int64 minimum is
    not an exact float64 for Arrow's check; a uint64 above the int64 maximum cannot
    become int64), and one bad value must reject its row, never the file. A float
    fits when ``-2**(b-1) <= v < 2**(b-1)`` (powers of two: exact floats); NaN and
    infinities compare false, so they never fit. A bound outside ``wide``'s own
    range needs no comparison at all.
    """
    lo, hi = _int_bounds(target)
    if wide.type == pa.float16():  # its range cannot hold the bounds; float32 holds its values
        wide = pc.cast(wide, pa.float32())
    src = wide.type
    if pa.types.is_floating(src):
        return [
            pc.greater_equal(wide, pa.scalar(float(lo), src)),
            pc.less(wide, pa.scalar(float(hi + 1), src)),
        ]
    if not pa.types.is_integer(src):  # pragma: no cover - callers pass numbers only
        raise TypeError(f"cannot range-check {src} as an integer")
    src_lo, src_hi = _int_bounds(src)
    masks = []
    if lo > src_lo:
        masks.append(pc.greater_equal(wide, pa.scalar(lo, src)))
    if hi < src_hi:
        masks.append(pc.less_equal(wide, pa.scalar(hi, src)))
    return masks


def _int_bounds(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    if pa.types.is_signed_integer(t):
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def conform(table: pa.Table) -> Conformed:
    """Bring a readable batch to exactly SCHEMA_V1 (see the module docstring for the rules)."""
    names = set(table.column_names)
    missing = [c for c in SCHEMA_V1.names if c not in names]
    structural = [c for c in missing if c in STRUCTURAL_COLUMNS]
    if structural:
        raise UnreadableBatch(
            f"the file lacks column(s) {', '.join(structural)} that every event needs; "
            "no row can be rescued without them"
        )
    notes: list[str] = []
    extra = [c for c in table.column_names if c not in SCHEMA_V1.names]
    if extra:
        notes.append(f"extra column(s) dropped (not in schema v1): {', '.join(extra)}")
    if missing:
        notes.append(f"column(s) absent and treated as null: {', '.join(missing)}")
    n = table.num_rows
    columns: list[pa.ChunkedArray] = []
    originals: list[pa.ChunkedArray] = []
    checks: list[Check] = []
    for f in SCHEMA_V1:
        if f.name not in names:
            col = pa.chunked_array([pa.nulls(n, f.type)], f.type)
            columns.append(col)
            originals.append(col)
            continue
        col = table.column(f.name)
        originals.append(col)
        if _same_type(f.name, col.type, f.type):
            columns.append(col)
            continue
        if pa.types.is_null(col.type):
            columns.append(pa.chunked_array([pa.nulls(n, f.type)], f.type))
            continue
        converted, lost = _convert(f.name, col, f.type)
        columns.append(converted)
        notes.append(f"column {f.name} converted from {col.type} to {f.type}")
        if lost is not None and pc.any(lost).as_py():
            checks.append(_conversion_check(f.name, f.type, lost, col))
    # Nullability is a rule checked row by row, not a property the file must declare.
    schema = pa.schema([pa.field(f.name, c.type) for f, c in zip(SCHEMA_V1, columns, strict=True)])
    conformed = pa.Table.from_arrays(columns, schema=schema)
    original = pa.Table.from_arrays(originals, names=list(SCHEMA_V1.names))
    return Conformed(table=conformed, original=original, checks=checks, notes=notes)


def _conversion_check(name: str, target: pa.DataType, lost: pa.Array, col: pa.ChunkedArray) -> Check:
    def message(idx: pa.Array) -> pa.Array:
        values = _as_text(col.take(idx))
        return pc.binary_join_element_wise(
            f"{name}: '", values, f"' is not a valid {target} (the column should hold {target})", ""
        )

    return Check("bad_type", _flat(lost), message)


# ------------------------------------------------------------------- validation


def _flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _false_if_null(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return _flat(pc.fill_null(arr, False))


def _quote(values: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise("'", values, "'", "")


def _list(values: Sequence[str]) -> str:
    return ", ".join(values)


def _fmt(v: float) -> str:
    return f"{int(v)}" if float(v).is_integer() else f"{v:g}"


def _min_max(col: pa.ChunkedArray) -> tuple[Any, Any]:  # values of the column's own type
    mm = pc.min_max(col)
    return mm["min"].as_py(), mm["max"].as_py()


def _byte_lengths(col: pa.ChunkedArray) -> np.ndarray:
    """Byte length of every value (0 for most nulls) from the offsets, without touching the data.

    For a dictionary column these are the lengths of its distinct values: bounds
    on the rows' lengths, which is all the callers ask (could any be empty/too long?).
    """
    parts = []
    for chunk in col.chunks:
        if pa.types.is_dictionary(chunk.type):
            chunk = chunk.dictionary
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(
            chunk.buffers()[1], dtype=np.int64 if chunk.type == pa.large_string() else np.int32
        )[chunk.offset : chunk.offset + len(chunk) + 1]
        parts.append(np.diff(offsets))
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


# ------------------------------------------------------------------------ rules
#
# Every rule of schema v1 is one row of RULES: the code a rejected row carries,
# what the rule checks, the sentence a person reads (a template) and a small
# function that finds the rows breaking it.  RULES is in precedence order: a row
# breaking several rules is reported under the first.  A rule's function first
# asks a whole-column question that is cheap (null counts, min/max, distinct
# values) and returns None when no row can break the rule; only otherwise does it
# compute the per-row mask.  A clean batch costs a handful of passes.
#
# A reason template's {fields} are filled two ways: the ones the function's
# ``values`` returns are per row (arrays over the rejected rows only), the rest
# are per rule (``fills``, e.g. the column and its limit).

_Text: TypeAlias = pa.Array | pa.ChunkedArray  # per-row text
_TS_TYPE = SCHEMA_V1.field("ts").type
# kind index -> bits of the fields it needs (the last slot, an unknown or null kind, needs nothing)
_KIND_FIELDS: tuple[str, ...] = tuple(sorted({f for fields in REQUIRED_BY_KIND.values() for f in fields}))
_NEED_BITS: np.ndarray = np.array(
    [sum(1 << b for b, f in enumerate(_KIND_FIELDS) if f in REQUIRED_BY_KIND[k]) for k in KINDS] + [0],
    dtype=np.uint16,
)
_KIND_NAMES = pa.array(KINDS, pa.string())
_KIND_NEEDS = pa.array([_list(REQUIRED_BY_KIND[k]) for k in KINDS], pa.string())


class _Batch:
    """One table being judged, with the whole-column facts several rules share, found once."""

    def __init__(self, table: pa.Table, now: datetime, future_skew: timedelta, clock_name: str) -> None:
        self.table = table
        self.n = table.num_rows
        self.now = now
        self.future_skew = future_skew
        self.clock_name = clock_name
        self.latest = now.astimezone(UTC) + future_skew  # the latest ts allowed
        # Each row's position in KINDS, null for an unknown or null kind; and the same with
        # len(KINDS) for those, as numpy (it indexes _NEED_BITS).
        self.kind_index = _flat(pc.index_in(table.column("kind"), value_set=pa.array(KINDS)))
        self.kind_ix: np.ndarray = pc.fill_null(self.kind_index, len(KINDS)).to_numpy(zero_copy_only=False)
        self.ts_min_max: tuple[Any, Any] = _min_max(table.column("ts"))


@dataclass(frozen=True)
class Found:
    """Rows that break a rule: ``mask`` (never null) and the template's fills."""

    mask: pa.Array
    # The per-row fills, for the rows given by index (called only for rows this rule rejects).
    values: Callable[[pa.Array], dict[str, _Text]]
    fills: dict[str, str] = field(default_factory=dict)  # the per-rule fills


@dataclass(frozen=True)
class Rule:
    """One rule of schema v1; see RULES."""

    name: str  # the short code a rejected row carries (several rules may share one)
    checks: str  # what the rule checks, for people reading the table
    reason: str  # the sentence a rejected row carries, a template (see above)
    find: Callable[[_Batch], Found | None]  # None: no row of the batch breaks the rule

    def check(self, batch: _Batch) -> Check | None:
        found = self.find(batch)
        if found is None:
            return None
        return Check(self.name, found.mask, partial(_render, self.reason, found))


def _render(template: str, found: Found, idx: pa.Array) -> pa.Array:
    """The reason of each row in ``idx``: ``template`` with its fills, per rule and per row."""
    per_row = found.values(idx)
    pieces: list[str | _Text] = []
    text = ""
    for literal, name, _spec, _conversion in Formatter().parse(template):
        text += literal
        if name is None:
            continue
        if name in per_row:
            pieces += [text, per_row[name]] if text else [per_row[name]]
            text = ""
        else:
            text += found.fills[name]
    if not pieces:  # a template without a per-row field
        return _lit(text, len(idx))
    return pc.binary_join_element_wise(*pieces, *([text] if text else []), "")


def _names_where(masks: dict[str, pa.Array]) -> pa.Array:
    """For each row, the names whose (aligned) mask is true there, comma-separated."""
    none = pa.scalar(None, pa.string())
    pieces = [pc.if_else(m, name, none) for name, m in masks.items()]
    return pc.binary_join_element_wise(*pieces, ", ", null_handling="skip")


def _missing_everywhere(b: _Batch) -> Found | None:
    missing: dict[str, pa.Array] = {}
    for name in REQUIRED_ALWAYS:
        col = b.table.column(name)
        empty_possible = _is_string_like(col.type) and len(col) > 0 and _byte_lengths(col).min(initial=1) == 0
        if col.null_count == 0 and not empty_possible:
            continue
        miss = pc.is_null(col)
        if empty_possible:
            miss = pc.or_(miss, pc.fill_null(pc.equal(_per_value(col, pc.utf8_length), 0), False))
        missing[name] = _flat(miss)
    if not missing:
        return None
    return Found(
        _or_all(list(missing.values())),
        lambda idx: {"fields": _names_where({n: m.take(idx) for n, m in missing.items()})},
    )


def _wrong_schema_version(b: _Batch) -> Found | None:
    version = b.table.column("schema_version")
    if _min_max(version) == (SCHEMA_VERSION, SCHEMA_VERSION) or version.null_count == b.n:
        return None
    return Found(
        _false_if_null(pc.not_equal(version, SCHEMA_VERSION)),
        lambda idx: {"value": _as_text(version.take(idx))},
        {"expected": str(SCHEMA_VERSION)},
    )


def _unknown_kind(b: _Batch) -> Found | None:
    kind = b.table.column("kind")
    if b.kind_index.null_count <= kind.null_count:
        return None
    return Found(
        _false_if_null(pc.and_(pc.is_valid(kind), pc.is_null(b.kind_index))),
        lambda idx: {"value": _as_text(kind.take(idx))},
        {"kinds": _list(KINDS)},
    )


def _missing_for_kind(b: _Batch) -> Found | None:
    # One bit per field; a row lacks a needed field when the bits its kind needs
    # and the bits of its null fields overlap.
    null_bits = np.zeros(b.n, dtype=np.uint16)
    for bit, name in enumerate(_KIND_FIELDS):
        col = b.table.column(name)
        if col.null_count:
            null_bits |= pc.is_null(col).to_numpy(zero_copy_only=False).astype(np.uint16) << bit
    lacking = _NEED_BITS[b.kind_ix] & null_bits
    if not lacking.any():
        return None

    def values(idx: pa.Array) -> dict[str, _Text]:
        rows = idx.to_numpy()
        bits = lacking[rows]
        kinds = pa.array(b.kind_ix[rows])  # a known kind: an unknown or null one needs nothing
        masks = {name: pa.array((bits >> bit) & 1 == 1) for bit, name in enumerate(_KIND_FIELDS)}
        return {
            "kind": _KIND_NAMES.take(kinds),
            "needs": _KIND_NEEDS.take(kinds),
            "fields": _names_where(masks),
        }

    return Found(pa.array(lacking != 0), values)


def _oversized(name: str, limit: int) -> Callable[[_Batch], Found | None]:
    def find(b: _Batch) -> Found | None:
        col = b.table.column(name)
        # Bytes >= characters: when no value has more bytes than the limit allows
        # characters, no value is too long, and the characters need not be counted.
        if col.null_count == b.n or _byte_lengths(col).max(initial=0) <= limit:
            return None
        length = _per_value(col, pc.utf8_length)
        return Found(
            _false_if_null(pc.greater(length, limit)),
            lambda idx: {"length": _as_text(length.take(idx))},
            {"column": name, "limit": str(limit)},
        )

    return find


def _out_of_range(name: str, lo: float, hi: float) -> Callable[[_Batch], Found | None]:
    def find(b: _Batch) -> Found | None:
        col = b.table.column(name)
        if col.null_count == b.n:
            return None
        floating = pa.types.is_floating(col.type)
        cmin, cmax = _min_max(col)
        has_nan = floating and pc.any(pc.is_nan(col)).as_py()
        if not has_nan and cmin is not None and lo <= cmin and cmax <= hi:
            return None
        low = pa.scalar(lo if floating else int(lo), col.type)
        high = pa.scalar(hi if floating else int(hi), col.type)
        outside = pc.or_(pc.less(col, low), pc.greater(col, high))
        if floating:  # NaN compares false both ways: reject it explicitly
            outside = pc.or_(outside, pc.is_nan(col))
        return Found(
            _false_if_null(outside),
            lambda idx: {"value": _as_text(col.take(idx))},
            {"column": name, "lo": _fmt(lo), "hi": _fmt(hi)},
        )

    return find


def _unknown_currency(b: _Batch) -> Found | None:
    currency = b.table.column("currency")
    seen = {v for v in pc.unique(currency).to_pylist() if v is not None}
    if not seen - set(CURRENCIES):
        return None
    known = pc.is_in(currency, value_set=pa.array(CURRENCIES))
    return Found(
        _false_if_null(pc.and_(pc.is_valid(currency), pc.invert(known))),
        lambda idx: {"value": _as_text(currency.take(idx))},
        {"currencies": _list(CURRENCIES)},
    )


def _unknown_cause(b: _Batch) -> Found | None:
    cause = b.table.column("cause")
    is_end = pa.array(b.kind_ix == KINDS.index("session_end"))
    end_causes = {v for v in pc.unique(pc.filter(cause, is_end)).to_pylist() if v is not None}
    if not end_causes - set(SESSION_END_CAUSES):
        return None
    known = pc.is_in(cause, value_set=pa.array(SESSION_END_CAUSES))
    return Found(
        _false_if_null(pc.and_(pc.and_(is_end, pc.is_valid(cause)), pc.invert(known))),
        lambda idx: {"value": _as_text(cause.take(idx))},
        {"causes": _list(SESSION_END_CAUSES)},
    )


def _ts_before_epoch(b: _Batch) -> Found | None:
    tmin = b.ts_min_max[0]
    if tmin is None or tmin >= WORLD_EPOCH:
        return None
    ts = b.table.column("ts")
    return Found(
        _false_if_null(pc.less(ts, pa.scalar(WORLD_EPOCH, _TS_TYPE))),
        lambda idx: {"value": _as_text(ts.take(idx))},
        {"epoch": WORLD_EPOCH.isoformat()},
    )


def _ts_in_future(b: _Batch) -> Found | None:
    tmax, latest = b.ts_min_max[1], b.latest
    if tmax is None or tmax <= latest:
        return None
    ts = b.table.column("ts")
    return Found(
        _false_if_null(pc.greater(ts, pa.scalar(latest, _TS_TYPE))),
        lambda idx: {"value": _as_text(ts.take(idx))},
        {
            "latest": latest.isoformat(timespec="seconds"),
            "clock": b.clock_name,
            "now": b.now.astimezone(UTC).isoformat(timespec="seconds"),
            "skew_s": str(int(b.future_skew.total_seconds())),
        },
    )


# The rules of schema v1, in precedence order (conversion failures from conform come before all).
RULES: tuple[Rule, ...] = (
    Rule(
        "missing_field",
        "the fields every event carries (REQUIRED_ALWAYS) are present: not null, not an empty string",
        "required field(s) missing on every event: {fields}",
        _missing_everywhere,
    ),
    Rule(
        "schema_version",
        "schema_version is the version this validator knows",
        "schema_version is {value}, expected {expected}",
        _wrong_schema_version,
    ),
    Rule(
        "unknown_kind",
        "kind is one of KINDS",
        "kind '{value}' is not a known event kind (expected one of: {kinds})",
        _unknown_kind,
    ),
    Rule(
        "missing_field",
        "the fields the row's kind needs (REQUIRED_BY_KIND) are not null",
        "{kind} requires {needs}; missing: {fields}",
        _missing_for_kind,
    ),
    *(
        Rule(
            "oversized_string",
            f"{name} has at most {limit} characters (MAX_STRING_LENGTH)",
            "{column} is {length} characters long; at most {limit} are allowed",
            _oversized(name, limit),
        )
        for name, limit in MAX_STRING_LENGTH.items()
    ),
    *(
        Rule(
            "out_of_range",
            f"{name} lies within {_fmt(lo)}..{_fmt(hi)} (VALUE_RANGES; NaN never does)",
            "{column} {value} is outside the allowed range {lo}..{hi}",
            _out_of_range(name, lo, hi),
        )
        for name, (lo, hi) in VALUE_RANGES.items()
    ),
    Rule(
        "unknown_currency",
        "currency, when given, is one of CURRENCIES",
        "currency '{value}' is not a known currency (expected one of: {currencies})",
        _unknown_currency,
    ),
    Rule(
        "unknown_cause",
        "a session_end's cause, when given, is one of SESSION_END_CAUSES",
        "session_end cause '{value}' is not a known cause (expected one of: {causes})",
        _unknown_cause,
    ),
    Rule(
        "ts_before_epoch",
        "ts is not before WORLD_EPOCH",
        "ts {value} is before the world began ({epoch})",
        _ts_before_epoch,
    ),
    Rule(
        "ts_in_future",
        "ts is not later than the ingest clock plus the skew allowance",
        "ts {value} is in the future (later than {latest}: {clock} {now} plus the skew allowance of {skew_s} s)",
        _ts_in_future,
    ),
)


def _checks(
    table: pa.Table, now: datetime, future_skew: timedelta, clock_name: str = WALL_CLOCK
) -> list[Check]:
    """The RULES that some row of ``table`` breaks, as checks, in precedence order."""
    batch = _Batch(table, now, future_skew, clock_name)
    return [check for rule in RULES if (check := rule.check(batch)) is not None]


def _or_all(masks: list[pa.Array]) -> pa.Array:
    out = masks[0]
    for m in masks[1:]:
        out = pc.or_(out, m)
    return _flat(out)


def validate(
    conformed: Conformed,
    now: datetime | None = None,
    future_skew: timedelta = DEFAULT_FUTURE_SKEW,
    clock_name: str = WALL_CLOCK,
) -> Verdicts:
    """Judge every row of a conformed batch; the first rule a row breaks is its reason.

    ``now`` bounds ``ts`` (plus ``future_skew``); ``clock_name`` says which clock it
    is in the reasons (see :func:`ingest_clock`).
    """
    table = conformed.table
    n = table.num_rows
    if n == 0:
        empty_s = pa.array([], pa.string())
        return Verdicts(pa.array([], pa.bool_()), pa.array([], pa.int64()), empty_s, empty_s)
    checks = [*conformed.checks, *_checks(table, now or datetime.now(UTC), future_skew, clock_name)]
    if not checks:
        empty_s = pa.array([], pa.string())
        return Verdicts(pa.array(np.ones(n, dtype=bool)), pa.array([], pa.int64()), empty_s, empty_s)
    bad = _or_all([c.mask for c in checks])
    assigned = pa.array(np.zeros(n, dtype=bool))
    # Seeded empty: a rule whose cheap test said "maybe" (bytes, not characters, over a
    # limit; an unused empty dictionary value) may end up rejecting no row at all.
    rows_parts: list[pa.Array] = [pa.array([], pa.int64())]
    rule_parts: list[pa.Array] = [pa.array([], pa.string())]
    reason_parts: list[pa.Array] = [pa.array([], pa.string())]
    for check in checks:
        first = pc.and_(check.mask, pc.invert(assigned))
        idx = pc.indices_nonzero(first)
        if len(idx) == 0:
            continue
        assigned = pc.or_(assigned, first)
        rows_parts.append(idx.cast(pa.int64()))
        rule_parts.append(_lit(check.rule, len(idx)))
        reason_parts.append(_flat(check.message(idx)).cast(pa.string()))
    rows = pa.concat_arrays(rows_parts)
    order = pc.sort_indices(rows)
    return Verdicts(
        valid=pc.invert(bad),
        bad_rows=rows.take(order),
        rules=pa.concat_arrays(rule_parts).take(order),
        reasons=pa.concat_arrays(reason_parts).take(order),
    )


def validate_many(
    batches: Sequence[Conformed],
    now: datetime | None = None,
    future_skew: timedelta = DEFAULT_FUTURE_SKEW,
    clock_name: str = WALL_CLOCK,
) -> list[Verdicts]:
    """:func:`validate` for many batches at once, with exactly the verdicts each would get alone.

    Every rule is row by row, so consecutive batches of one schema (and without
    conversion checks, whose masks are per batch) are judged as one table and the
    verdicts split back: a small batch then costs its rows, not the few dozen
    whole-column passes validation makes (most of its time at a few thousand rows).
    """
    clock = now or datetime.now(UTC)
    out: list[Verdicts] = []
    run: list[Conformed] = []

    def flush() -> None:
        if len(run) == 1:
            out.append(validate(run[0], clock, future_skew, clock_name))
        elif run:
            table = pa.concat_tables([c.table for c in run])
            joined = Conformed(table=table, original=table)  # validate reads only the table
            verdicts = validate(joined, clock, future_skew, clock_name)
            offset = 0
            for c in run:
                out.append(verdicts.slice(offset, c.table.num_rows))
                offset += c.table.num_rows
        run.clear()

    for conformed in batches:
        if conformed.checks:  # conversion masks belong to one batch: judge it alone
            flush()
            out.append(validate(conformed, clock, future_skew, clock_name))
            continue
        if run and conformed.table.schema != run[0].table.schema:
            flush()
        run.append(conformed)
    flush()
    return out


def quarantine_rows(conformed: Conformed, verdicts: Verdicts) -> pa.Table:
    """The rejected rows as they were read (every schema column as text) with rule and reason."""
    if verdicts.n_bad == 0:
        return quarantine_schema().empty_table()
    taken = conformed.original.take(verdicts.bad_rows)
    arrays = [_flat(_as_text(taken.column(name))) for name in SCHEMA_V1.names]
    arrays += [verdicts.bad_rows, verdicts.rules, verdicts.reasons]
    return pa.Table.from_arrays(arrays, names=[*SCHEMA_V1.names, "row_number", "rule", "reason"])


def quarantine_schema() -> pa.Schema:
    """Rejected rows keep every schema column as text: no value is lost to a failed cast."""
    fields = [pa.field(name, pa.string()) for name in SCHEMA_V1.names]
    fields += [
        pa.field("row_number", pa.int64()),
        pa.field("rule", pa.string()),
        pa.field("reason", pa.string()),
    ]
    return pa.schema(fields)
