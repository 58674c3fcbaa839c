"""The ``aegis`` command line.

Subcommands are loaded lazily (``LAZY_COMMANDS``): ``aegis info`` must not pay
for importing torch, Dagster or Pulumi. Each area owns its commands in its own
module as a ``click`` command or group.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from aegis.config import paths

# name -> "module:attribute" of a click.Command
LAZY_COMMANDS: dict[str, str] = {
    "world": "aegis.world.cli:world",
    "policy": "aegis.policy.cli:policy",
    "audit": "aegis.ledger.cli:audit",
    "changeset": "aegis.changes.cli:changeset",
    "model": "aegis.worldmodel.cli:model",
    # Dagster lives in pipelines/, never imported by aegis/ itself: loaded only when asked for.
    "materialize": "pipelines.cli:materialize",
    "up": "aegis.stack:up",
    "token": "aegis.security.cli:token",
    "canary": "aegis.canary.cli:canary",
    "alerts": "aegis.alerts.cli:alerts",
    "incidents": "aegis.healing.cli:incidents",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when named (``lazy``: name -> "module:attr").

    Areas reuse it for their own groups (``aegis canary``: ``judge`` without the
    Dagster-side ``status``), so a command pays only for the imports it needs.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = LAZY_COMMANDS if lazy is None else lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attr = self.lazy[cmd_name].split(":")
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:  # an area not installed in this build
                raise click.ClickException(f"'{cmd_name}' is unavailable: {exc}") from exc
            command = getattr(module, attr)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aegis")
def cli() -> None:
    """Aegis: autonomous live operations for online games."""


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(as_json: bool) -> None:
    """Where this Aegis keeps its state: paths and URIs."""
    data = paths().info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        click.echo(f"{key:<{width}}  {value}")


@cli.command()
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Write one <Type>.json per type here."
)
@click.argument("names", nargs=-1)
def schema(out: Path | None, names: tuple[str, ...]) -> None:
    """Export the JSON Schemas of the core types (all, or the NAMES given)."""
    from aegis.domain import json_schemas

    schemas: dict[str, Any] = json_schemas()
    unknown = sorted(set(names) - set(schemas))
    if unknown:
        raise click.UsageError(f"unknown type(s) {', '.join(unknown)}; known: {', '.join(sorted(schemas))}")
    selected = {k: v for k, v in schemas.items() if not names or k in names}
    if out is None:
        click.echo(json.dumps(selected, indent=2))
        return
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in selected.items():
        (out / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    click.echo(f"wrote {len(selected)} schema(s) to {out}")


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="aegis", standalone_mode=True)
    except KeyboardInterrupt:  # pragma: no cover - interactive
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
