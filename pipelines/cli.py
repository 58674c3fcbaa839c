"""``aegis materialize GROUP``: materialize an asset group and everything it needs, in-process.

Headless runs for people and CI: the same definitions and resources as the
code location (current profile), the same instance as ``aegis up`` (runs show
in the UI), a summary on stdout, and a non-zero exit when anything failed.
"""

import sys
from typing import Any

import click

SUMMARY_KEYS = (
    "rows_in",
    "bronze_rows",
    "quarantined_rows",
    "duplicate_rows",
    "batches_processed",
    "row_count",
    "rows",
)


def _instance() -> Any:
    import os

    from dagster import DagsterInstance

    from aegis.config import paths
    from aegis.stack import write_dagster_yaml

    if os.environ.get("DAGSTER_HOME"):
        return DagsterInstance.get()
    home = paths().ensure().dagster_home
    write_dagster_yaml(home)
    return DagsterInstance.from_config(str(home))


def groups_of(defs: Any) -> dict[str, list[str]]:
    """Group name -> materializable asset keys (as user strings)."""
    out: dict[str, list[str]] = {}
    graph = defs.resolve_asset_graph()
    for key in sorted(graph.materializable_asset_keys):
        group = graph.get(key).group_name or "default"
        out.setdefault(group, []).append(key.to_user_string())
    return out


@click.command()
@click.argument("group", required=False)
@click.option("--list", "list_groups", is_flag=True, help="List the asset groups and their assets.")
def materialize(group: str | None, list_groups: bool) -> None:
    """Materialize asset group GROUP and its upstream assets (current AEGIS_PROFILE)."""
    import dagster as dg

    from pipelines.definitions import defs

    groups = groups_of(defs)
    if list_groups:
        for name, keys in groups.items():
            click.echo(f"{name} ({len(keys)} assets)")
            for key in keys:
                click.echo(f"  {key}")
        return
    if not group:
        raise click.UsageError("name a GROUP (see --list)")
    if group not in groups:
        raise click.UsageError(f"unknown group {group!r}; known: {', '.join(groups)}")
    selection = dg.AssetSelection.groups(group).upstream().materializable()
    assets = [*defs.assets, *(defs.asset_checks or [])]
    instance = _instance()
    click.echo(f"materializing group {group!r} and its upstream assets ...")
    result = dg.materialize(
        assets, selection=selection, resources=defs.resources, instance=instance, raise_on_error=False
    )
    _summarize(result)
    if not result.success:
        failed = [e for e in result.all_events if e.is_failure]
        for event in failed:
            click.echo(f"FAILED {event.step_key}: {event.message}", err=True)
        click.echo(f"run {result.run_id} failed", err=True)
        sys.exit(1)
    click.echo(f"run {result.run_id} succeeded")


def _summarize(result: Any) -> None:
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        shown = {k: v.value for k, v in mat.metadata.items() if k in SUMMARY_KEYS}
        extra = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in shown.items())
        click.echo(f"  materialized {mat.asset_key.to_user_string()}" + (f" ({extra})" if extra else ""))
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            ev = event.event_specific_data
            status = "passed" if ev.passed else "FAILED"
            click.echo(f"  check {ev.asset_key.to_user_string()}:{ev.check_name} {status}")
