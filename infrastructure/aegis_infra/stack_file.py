"""A stack file's config as the Pulumi CLI hands it to the program, for tools that run without the CLI.

The CLI reads ``Pulumi.yaml`` (project config defaults) and ``Pulumi.<stack>.yaml``
and passes every value to the language host as a *string*: scalars as their
text, lists and maps as JSON text. The Python language host puts that map,
``{"project:key": "string"}``, in the ``PULUMI_CONFIG`` environment variable (and
the secret keys in ``PULUMI_CONFIG_SECRET_KEYS``), where ``pulumi.Config`` reads
it. :func:`cli_config` produces the same map, so the program's own path
(``aegis_infra.config.load_settings``) can be exercised, and the cost estimate
printed, from a stack file alone. It is never a second way to read settings:
everything still goes through ``pulumi.Config``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

INFRA_DIR = Path(__file__).resolve().parents[1]
PROJECT_FILE = INFRA_DIR / "Pulumi.yaml"


class StackFileError(ValueError):
    """The stack file is missing or holds something the CLI would not hand over as plain config."""


def stack_file(stack: str) -> Path:
    path = INFRA_DIR / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name for p in INFRA_DIR.glob("Pulumi.*.yaml") if p.name != "Pulumi.yaml")
        raise StackFileError(f"no stack file {path.name} in {INFRA_DIR} (known: {', '.join(known)})")
    return path


def _as_cli_string(key: str, value: Any) -> str:
    """The string the CLI passes for one value: text for a scalar, JSON for a structure."""
    if isinstance(value, dict) and "secure" in value:
        raise StackFileError(f"{key}: a secret (secure:) needs the Pulumi CLI to decrypt it")
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    # json.dumps gives the CLI's text for booleans and numbers too (true, 1500, 0.5).
    return json.dumps(value, separators=(",", ":"))


def cli_config(stack: str) -> dict[str, str]:
    """``{"namespace:key": string}`` for ``stack``: project defaults, then the stack file's values."""
    project = yaml.safe_load(PROJECT_FILE.read_text()) or {}
    out: dict[str, str] = {}
    for key, spec in (project.get("config") or {}).items():
        if isinstance(spec, dict) and "value" in spec:
            out[key] = _as_cli_string(key, spec["value"])
    raw = yaml.safe_load(stack_file(stack).read_text()) or {}
    for key, value in (raw.get("config") or {}).items():
        out[key] = _as_cli_string(key, value)
    return out


def language_host_env(stack: str, secret_keys: list[str] | None = None) -> dict[str, str]:
    """The environment variables the Python language host sets for the program's config."""
    return {
        "PULUMI_CONFIG": json.dumps(cli_config(stack)),
        "PULUMI_CONFIG_SECRET_KEYS": json.dumps(secret_keys or []),
    }
