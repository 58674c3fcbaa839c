"""What has landed: the batch files shards (or Firehose) wrote under ``landing/telemetry``.

Files appear by rename, so a listed ``*.parquet`` is complete; temporary files
(``.name.tmp``) and dotfiles are never listed.  The batch id is the file's stem.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
