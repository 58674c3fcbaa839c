"""One strict loader for every policy input: ``aegis policy check`` exits 2 with a readable message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from aegis.cli import cli
from aegis.config import AegisPaths
from aegis.policy import PolicyEngine, PolicyError
from aegis.policy.engine import default_policies_dir
from aegis.policy.strict_json import MAX_BYTES, MAX_DEPTH, StrictJsonError, load_strict, loads_strict

EXAMPLE = default_policies_dir() / "examples" / "deny-deletes-active-inventory.json"
TEXT = EXAMPLE.read_text()


def _hidden_deletions() -> bytes:
    """The issue's case: 312 deletions declared, then hidden behind a second key that says 0."""
    doc = json.loads(TEXT)
    op = doc["changeset"]["operations"][0]
    assert op["deletes_active_inventory"] > 0
    text = json.dumps(doc, indent=2)
    line = f'"deletes_active_inventory": {op["deletes_active_inventory"]}'
    assert line in text
    return text.replace(line, f'{line},\n        "deletes_active_inventory": 0').encode()


CASES: dict[str, tuple[bytes, str]] = {
    "NaN": (TEXT.replace('"canary_players_share": 0.05', '"canary_players_share": NaN').encode(), "NaN"),
    "Infinity": (TEXT.replace('"spent_usd": 120.0', '"spent_usd": Infinity').encode(), "Infinity"),
    "-Infinity": (TEXT.replace('"spent_usd": 120.0', '"spent_usd": -Infinity').encode(), "-Infinity"),
    "overflow to infinity": (
        TEXT.replace('"spent_usd": 120.0', '"spent_usd": 1e999').encode(),
        "out of range",
    ),
    "duplicate key": (_hidden_deletions(), "duplicate key 'deletes_active_inventory'"),
    "deep nesting": (
        TEXT.replace('"rationale": ', '"rationale": ' + "[" * 5000 + "]" * 5000 + ', "x": ').encode(),
        "nests 5",
    ),
    "invalid UTF-8": (
        TEXT.replace("inventory", "invent\udcffory", 1).encode("utf-8", "surrogateescape"),
        "UTF-8",
    ),
    "byte-order mark": (b"\xef\xbb\xbf" + TEXT.encode(), "byte-order mark"),
    "oversized": (
        TEXT.replace('"rationale": ', '"rationale": "' + "x" * MAX_BYTES + '", "y": ').encode(),
        "bytes",
    ),
    "huge integer": (
        TEXT.replace('"changes_in_last_hour": 1', '"changes_in_last_hour": ' + "9" * 5000).encode(),
        "digits",
    ),
    "truncated": (TEXT[: len(TEXT) // 2].encode(), "not valid JSON"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_policy_check_refuses_with_exit_2(aegis_home: AegisPaths, tmp_path: Path, name: str) -> None:
    raw, words = CASES[name]
    path = tmp_path / "input.json"
    path.write_bytes(raw)
    result = CliRunner().invoke(cli, ["policy", "check", str(path)])
    assert result.exit_code == 2, (name, result.output)
    assert words in result.stderr and str(path) in result.stderr, result.stderr
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert result.stdout == ""  # no Decision
    assert not aegis_home.ledger.exists()  # nothing recorded


def test_the_hidden_deletions_are_denied_once_the_duplicate_is_removed(
    aegis_home: AegisPaths, tmp_path: Path
) -> None:
    """Python's json would have let the 0 win: the file would have looked harmless."""
    assert json.loads(_hidden_deletions())["changeset"]["operations"][0]["deletes_active_inventory"] == 0
    with pytest.raises(StrictJsonError, match="values 312 and 0"):
        loads_strict(_hidden_deletions())


def test_strict_loader_accepts_ordinary_json(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text('{"a": [1, 2.5, -0.0, "x[{"], "b": {"c": null, "d": true}, "e": "\\u00e9\\"]"}')
    assert load_strict(path) == {"a": [1, 2.5, -0.0, "x[{"], "b": {"c": None, "d": True}, "e": 'é"]'}
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert loads_strict(nested) is not None
    with pytest.raises(StrictJsonError, match=f"nests {MAX_DEPTH + 1} levels"):
        loads_strict("[" + nested + "]")
    with pytest.raises(StrictJsonError, match="cannot read"):
        load_strict(tmp_path / "missing.json")


def test_policy_data_is_read_strictly(tmp_path: Path) -> None:
    import shutil

    target = tmp_path / "policies"
    shutil.copytree(default_policies_dir(), target, ignore=shutil.ignore_patterns("__pycache__", "examples"))
    text = (target / "data.json").read_text()
    marker = '"max_deleted_active_inventory": 0'
    assert marker in text
    (target / "data.json").write_text(
        text.replace(marker, marker.replace("0", "1000000") + ",\n        " + marker)
    )
    with pytest.raises(PolicyError, match="duplicate key 'max_deleted_active_inventory'"):
        PolicyEngine(target)
