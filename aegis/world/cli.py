"""``aegis world``: serve the bundled game world, run it offline, export its API document.

Heavy imports (numpy, the simulator, FastAPI, uvicorn) happen inside the
commands, so ``aegis world --help`` stays instant.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import click

from aegis.config import WORLD_PORT, paths

HOST = "127.0.0.1"  # loopback by default: nothing off this machine can reach the control API
DEFAULT_OPENAPI_PATH = Path("docs/openapi.json")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The live server's landing retention in game hours (aegis.world.service.DEFAULT_RETENTION_HOURS,
# repeated here so --help needs no heavy import; a test keeps the two equal).
SERVE_RETENTION_HOURS = 24 * 7


@click.group()
def world() -> None:
    """The bundled game world: a live server speaking the game backend contract, or a batch run."""


@world.command()
@click.option(
    "--host",
    default=HOST,
    show_default=True,
    help="Bind address. Loopback by default; another address exposes the API to the network "
    "(every call but /v1/health still needs a token; see docs/security.md).",
)
@click.option(
    "--allow-host",
    "allow_hosts",
    multiple=True,
    help="Extra Host header name this server answers to (repeatable; e.g. its DNS name). "
    "Requests for any other host are refused (DNS rebinding).",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=WORLD_PORT, show_default=True, help="Port to listen on."
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.0),
    default=60.0,
    show_default=True,
    help="Game seconds per wall-clock second (0 pauses the clock).",
)
@click.option(
    "--seed", type=int, default=7, show_default=True, help="World seed (only when creating a new world)."
)
@click.option(
    "--players-per-shard",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="New worlds only.",
)
@click.option(
    "--shards-per-region", type=click.IntRange(min=1), default=3, show_default=True, help="New worlds only."
)
@click.option("--no-explore", is_flag=True, help="Do not vary control shards' parameters over time.")
@click.option(
    "--retention-hours",
    type=click.FloatRange(min=0.0, min_open=True),
    default=SERVE_RETENTION_HOURS,
    show_default=True,
    help="Delete landed telemetry batches this many GAME hours older than a shard's newest "
    "(at --speed 60, 168 game h is under 3 wall h); batches the lake has not ingested yet are kept "
    "regardless.",
)
@click.option(
    "--keep-all", is_flag=True, help="No retention: keep every landed batch (disk grows without bound)."
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True
)
def serve(
    host: str,
    allow_hosts: tuple[str, ...],
    port: int,
    speed: float,
    seed: int,
    players_per_shard: int,
    shards_per_region: int,
    no_explore: bool,
    retention_hours: float,
    keep_all: bool,
    log_level: str,
) -> None:
    """Run the world server in the foreground until Ctrl-C or SIGTERM.

    The world lives in AEGIS_HOME/world/world.db: a restart continues where the
    last run stopped (seed and sizes then come from the stored world).
    Landed telemetry older than --retention-hours of game time is deleted once
    the lake has ingested it (never before); --keep-all keeps everything.
    Every endpoint but /v1/health needs a bearer token (docs/security.md); the
    platform's own tokens are minted into AEGIS_HOME/secrets on start.
    """
    import uvicorn

    from aegis.security.secrets import ensure_service_tokens
    from aegis.world.server import create_app
    from aegis.world.service import ServiceOptions, WorldService
    from aegis.world.store import StoreError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = paths()
    secret_files = ensure_service_tokens()
    options = ServiceOptions(
        speed=speed,
        seed=seed,
        players_per_shard=players_per_shard,
        shards_per_region=shards_per_region,
        explore=not no_explore,
        retention_hours=None if keep_all else retention_hours,
    )
    try:
        service = WorldService(p, options)
    except StoreError as exc:
        raise click.ClickException(f"cannot open the world: {exc}") from exc
    stopped = False
    try:
        health = service.health()
        stored = service.store.get_meta("players_per_shard")
        if stored is not None and int(stored) != players_per_shard:
            click.echo(
                f"note: continuing the stored world ({stored} players per shard); "
                f"--players-per-shard/--seed apply to new worlds only",
                err=True,
            )
        shown_host = f"[{host}]" if ":" in host else host
        base = f"http://{shown_host}:{port}"
        click.echo(
            f"Aegis world server: {len(service.world.shards)} shards, game time {health.game_time.isoformat()}"
        )
        click.echo(f"  state     {p.world_db}")
        click.echo(f"  landing   {p.landing_telemetry}")
        click.echo(f"  shards    {base}/v1/shards")
        click.echo(f"  health    {base}/v1/health")
        click.echo(f"  metrics   {base}/metrics")
        click.echo(f"  tokens    {secret_files['control'].parent}  (bearer tokens; docs/security.md)")
        click.echo(f"  API docs  {base}/docs  (contract: docs/game-backend-api.md)")
        click.echo(f"  speed     {speed:g} game s / wall s; Ctrl-C stops cleanly")
        service.start()
        config = uvicorn.Config(
            create_app(service, bind_host=host, allowed_hosts=list(allow_hosts)),
            host=host,
            port=port,
            log_level=log_level,
            access_log=log_level == "debug",
        )
        server = uvicorn.Server(config)
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the
        # handler that was installed before it: make that one a no-op note, so the process
        # lives on to land buffered telemetry and commit the last tick.
        received: list[int] = []
        previous = {sig: signal.signal(sig, lambda s, _f: received.append(s)) for sig in STOP_SIGNALS}
        try:
            server.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        service.stop()
        stopped = True
        click.echo(
            f"stopped at game time {service.world.game_time.isoformat()} (tick {service.tick}); state committed"
        )
        if not server.started:
            raise click.ClickException(f"the server could not start on {base} (is the port in use?)")
    finally:
        if not stopped:
            service.stop()


@world.command()
@click.option(
    "--hours", type=click.FloatRange(min=0.0, min_open=True), required=True, help="Game hours to simulate."
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--players-per-shard", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--no-explore", is_flag=True, help="Keep every shard's parameters fixed.")
@click.option(
    "--retention-hours",
    type=click.FloatRange(min=0.0, min_open=True),
    default=None,
    help="Delete landed batches this many game hours older than a shard's newest, except those "
    "the lake has not ingested yet. Default: keep everything the run lands.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (logs, CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(
    hours: float,
    seed: int,
    players_per_shard: int,
    no_explore: bool,
    retention_hours: float | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Simulate HOURS of game time as fast as possible and land the telemetry in the lake.

    Everything the run lands is kept unless --retention-hours is given, so a long
    run followed by an ingest loses nothing.
    """
    from aegis.world.runner import run_world

    p = paths().ensure()
    summary = run_world(
        p,
        hours,
        seed=seed,
        players_per_shard=players_per_shard,
        explore=not no_explore,
        progress=not no_progress,
        retention_hours=retention_hours,
    )
    data = summary.model_dump(mode="json") if hasattr(summary, "model_dump") else _dataclass_dict(summary)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"simulated {hours:g} game hours into {p.landing_telemetry}")
    width = max(len(k) for k in data)
    for key, value in data.items():
        click.echo(f"  {key:<{width}}  {_fmt(value)}")


def _dataclass_dict(obj: object) -> dict[str, object]:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(vars(obj))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(map(str, sorted(value) if isinstance(value, set | frozenset) else value))
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


@world.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_OPENAPI_PATH,
    show_default=True,
    help="Where to write the document ('-' for stdout).",
)
@click.option("--check", is_flag=True, help="Fail if the file differs from the generated document.")
def openapi(out: Path, check: bool) -> None:
    """Export the OpenAPI document of the game backend contract."""
    from aegis.world.server import openapi_text

    text = openapi_text()
    if str(out) == "-":
        click.echo(text, nl=False)
        return
    if check:
        current = out.read_text() if out.exists() else ""
        if current != text:
            raise click.ClickException(f"{out} is out of date: run 'aegis world openapi --out {out}'")
        click.echo(f"{out} is current")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    click.echo(f"wrote {out}")
