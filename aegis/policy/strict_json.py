"""One strict JSON loader for every policy input file (changesets, contexts, policy data).

Python's ``json`` is lenient in ways that hide what a file says: it accepts
``NaN`` and ``Infinity``, lets the last of two equal keys win silently (a
changeset that declared ``"deletes_active_inventory": 312`` and later ``0`` was
judged as deleting nothing), turns ``1e999`` into infinity, recurses until the
interpreter gives up on deep nesting, and reads whatever size it is handed.
:func:`loads_strict` refuses each of these with a message that says what and
where; :class:`StrictJsonError` is a ValueError, so a CLI can turn it into
exit 2 and never a traceback.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

MAX_BYTES = 1024 * 1024  # a changeset with its context is a few KiB; policy data tens of KiB
MAX_DEPTH = 32  # the deepest legitimate input (context.integrity...) is under 8 levels
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class StrictJsonError(ValueError):
    """The input is not strict JSON; the message names the file and the problem."""


def load_strict(path: Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Read and parse ``path`` strictly (see the module docstring)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise StrictJsonError(
                f"{path} is {size} bytes; policy input files may be at most {max_bytes} bytes"
            )
        with path.open("rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise StrictJsonError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return loads_strict(raw, str(path), max_bytes=max_bytes, max_depth=max_depth)


def loads_strict(
    raw: bytes | str, where: str = "input", *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse ``raw`` (UTF-8 bytes or text) strictly; raise StrictJsonError naming ``where``."""
    if isinstance(raw, bytes):
        if len(raw) > max_bytes:
            raise StrictJsonError(f"{where} is larger than {max_bytes} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StrictJsonError(
                f"{where} is not valid UTF-8: byte 0x{raw[exc.start]:02x} at offset {exc.start} ({exc.reason})"
            ) from None
    else:
        text = raw
        if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            raise StrictJsonError(f"{where} is larger than {max_bytes} bytes")
    if text.startswith("\ufeff"):
        raise StrictJsonError(f"{where} starts with a byte-order mark; save it as plain UTF-8")
    depth = nesting_depth(text)
    if depth > max_depth:
        raise StrictJsonError(f"{where} nests {depth} levels deep; at most {max_depth} are allowed")
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_object,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except StrictJsonError as exc:
        raise StrictJsonError(f"{where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise StrictJsonError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise StrictJsonError(f"{where} is not acceptable JSON: {exc}") from None


def nesting_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in ``text``, brackets inside strings ignored (no recursion)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJsonError(
                f"duplicate key {key!r} (values {_short(out[key])} and {_short(value)}): "
                "a JSON object may name each key once"
            )
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not a number JSON allows (no NaN or Infinity)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError(f"the number {text[:40]} is out of range (it would be infinite)")
    return value


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
