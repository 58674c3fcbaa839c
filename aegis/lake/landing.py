"""What has landed: the batch files shards (or Firehose) wrote under ``landing/telemetry``.

Files appear by rename, so a listed ``*.parquet`` is complete; temporary files
(``.name.<pid>.tmp``) and dotfiles are never listed.  The batch id is the file's stem.
Temporary files a killed writer left behind are swept by :func:`sweep_stale_tmp`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BATCH_SUFFIX = ".parquet"


@dataclass(frozen=True, order=True)
class LandedBatch:
    """One landed file; ordering is landing order (mtime, then path)."""

    mtime_ns: int
    rel: str  # path relative to the landing root, POSIX separators
    batch_id: str
    path: Path
    size: int

    @property
    def partition(self) -> dict[str, str]:
        """The ``key=value`` directories above the file (date, hour, shard)."""
        parts = {}
        for piece in self.rel.split("/")[:-1]:
            key, sep, value = piece.partition("=")
            if sep:
                parts[key] = value
        return parts

    @property
    def date(self) -> str | None:
        return self.partition.get("date")

    @property
    def shard_id(self) -> str | None:
        return self.partition.get("shard")


def _landed(path: Path, rel: str, st: os.stat_result) -> LandedBatch:
    """The batch at ``path`` (``rel`` to the landing root); its id is the name without BATCH_SUFFIX."""
    return LandedBatch(
        mtime_ns=st.st_mtime_ns,
        rel=rel,
        batch_id=path.name.removesuffix(BATCH_SUFFIX),
        path=path,
        size=st.st_size,
    )


def _walk(root: Path) -> Iterator[os.DirEntry[str]]:
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except FileNotFoundError:  # a directory removed while we looked
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_file(follow_symlinks=False) and entry.name.endswith(BATCH_SUFFIX):
                yield entry


def list_landed(root: Path, newer_than_ns: int | None = None) -> list[LandedBatch]:
    """Every landed batch under ``root`` (optionally only those modified after a time), in landing order."""
    if not root.exists():
        return []
    out: list[LandedBatch] = []
    for entry in _walk(root):
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if newer_than_ns is not None and st.st_mtime_ns <= newer_than_ns:
            continue
        path = Path(entry.path)
        out.append(_landed(path, path.relative_to(root).as_posix(), st))
    out.sort()
    return out


def list_landed_in(lake: Any, newer_than_ns: int | None = None) -> list[LandedBatch]:
    """:func:`list_landed` of a :class:`~aegis.lake.store.Lake`: its directory, or its S3 landing prefix.

    An S3 object appears whole (Firehose and :class:`~aegis.lake.store.S3LakeStore`
    write with one ``PutObject``), so every listed ``*.parquet`` key is complete.  Its
    ``path`` is where the ingest stages it locally (under the lake's state directory).
    """
    from aegis.lake.store import LocalLakeStore

    if isinstance(lake.store, LocalLakeStore):
        return list_landed(lake.store.path(lake.landing_prefix), newer_than_ns)
    staging = lake.state_dir / "staging"
    cut = len(lake.landing_prefix) + 1
    out = []
    for f in lake.store.list_files(lake.landing_prefix):
        if newer_than_ns is not None and f.mtime_ns <= newer_than_ns:
            continue
        rel = f.rel[cut:]
        name = rel.rsplit("/", 1)[-1]
        # Staged under a digest of the key, never the key itself: a key is data (anyone who
        # may write the landing prefix chooses it), and "//x" or ".." must not pick a path.
        staged = staging / f"{hashlib.sha256(rel.encode()).hexdigest()[:32]}{BATCH_SUFFIX}"
        out.append(LandedBatch(f.mtime_ns, rel, name.removesuffix(BATCH_SUFFIX), staged, f.size))
    out.sort()
    return out


def resolve_in(lake: Any, rels: list[str]) -> tuple[list[LandedBatch], list[str]]:
    """:func:`resolve` for a :class:`~aegis.lake.store.Lake` (one listing of an S3 landing prefix)."""
    from aegis.lake.store import LocalLakeStore

    if isinstance(lake.store, LocalLakeStore):
        return resolve(lake.store.path(lake.landing_prefix), rels)
    for rel in rels:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"batch path {rel!r} is outside the landing area {lake.store.uri}")
    landed = {b.rel: b for b in list_landed_in(lake)}
    found = sorted(landed[r] for r in rels if r in landed)
    return found, [r for r in rels if r not in landed]


def resolve(root: Path, rels: list[str]) -> tuple[list[LandedBatch], list[str]]:
    """Landed batches for paths relative to ``root``, and the paths no longer there.

    Landing retention may delete a batch between the sensor seeing it and the run
    reading it; that is reported, not fatal.  A path outside the landing area is
    an error.
    """
    base = root.resolve()
    found: list[LandedBatch] = []
    gone: list[str] = []
    for rel in rels:
        path = (base / rel).resolve()
        if base not in path.parents:
            raise ValueError(f"batch path {rel!r} is outside the landing area {root}")
        try:
            st = path.stat()
        except FileNotFoundError:
            gone.append(rel)
            continue
        found.append(_landed(path, path.relative_to(base).as_posix(), st))
    found.sort()
    return found, gone


# ------------------------------------------------------------- stale temporaries
# Every atomic writer of the project (aegis.telemetry.write_atomic / write_bytes_atomic,
# the quarantine's file copy) writes ``.<name>.<pid>.tmp`` and renames it into place, and
# removes it on any error it survives. Only a killed process (``kill -9``, a power cut)
# leaves one behind. Writers sweep their own trees when they start.
TMP_SUFFIX = ".tmp"
# A temporary file younger than this is never touched: an atomic write of a batch or a
# bronze file takes seconds at most, and the age covers a writer this machine cannot see
# (another PID namespace sharing the directory).
STALE_TMP_MIN_AGE_S = 300.0
_TMP_PID = re.compile(r"\.(\d+)\.tmp$")


def is_tmp_name(name: str) -> bool:
    """A temporary file of the project's atomic writers: ``.<name>[.<pid>].tmp``.

    Only those: another program's temporaries (DuckDB's spill files, say) are
    never ours to judge.
    """
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def tmp_owner(name: str) -> int | None:
    """The process id a temporary file's name carries (``.<name>.<pid>.tmp``), if any."""
    m = _TMP_PID.search(name)
    pid = int(m.group(1)) if m else 0
    return pid if pid > 0 else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 probes without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OverflowError, ValueError):
        return False
    return True


def stale_tmp(path: Path, st: os.stat_result, now: float, min_age_s: float) -> bool:
    """True when no live writer can own ``path``: older than ``min_age_s`` AND its writer
    (the pid in its name) is not running; a name without a pid needs only the age. A file
    of a running pid is kept whatever its age (pids are reused: keeping is the safe error)."""
    if now - st.st_mtime < min_age_s:
        return False
    pid = tmp_owner(path.name)
    return pid is None or not pid_alive(pid)


def sweep_stale_tmp(
    root: Path, min_age_s: float = STALE_TMP_MIN_AGE_S, now: float | None = None
) -> list[Path]:
    """Delete the stale temporary files (:func:`stale_tmp`) anywhere under ``root``; return them.

    Writers call it when they start (the landing writer on the landing area, the
    ingest on bronze, quarantine and the manifest directory), so what a ``kill -9``
    left behind neither accumulates nor is mistaken for data (readers list only
    ``*.parquet``). A file that vanishes meanwhile (another sweeper) is skipped.
    """
    if not root.is_dir():
        return []
    clock = time.time() if now is None else now
    removed: list[Path] = []
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
                continue
            if not (is_tmp_name(entry.name) and entry.is_file(follow_symlinks=False)):
                continue
            path = Path(entry.path)
            try:
                if stale_tmp(path, entry.stat(follow_symlinks=False), clock, min_age_s):
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
    return removed
