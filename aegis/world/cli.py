"""``aegis world``: serve the bundled game world, run it offline, export its API document.

Heavy imports (numpy, the simulator, FastAPI, uvicorn) happen inside the
commands, so ``aegis world --help`` stays instant.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aegis.config import WORLD_PORT, AegisPaths, paths

if TYPE_CHECKING:
    import uvicorn

    from aegis.world.service import WorldService

HOST = "127.0.0.1"  # loopback by default: nothing off this machine can reach the control API
DEFAULT_OPENAPI_PATH = Path("docs/openapi.json")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# The live server's landing retention in game hours (aegis.world.service.DEFAULT_RETENTION_HOURS,
# repeated here so --help needs no heavy import; a test keeps the two equal).
SERVE_RETENTION_HOURS = 24 * 7


@click.group()
def world() -> None:
    """The bundled game world: a live server speaking the game backend contract, or a batch run."""


# Shared by `serve` and `run`: the world lands locally and a shipper delivers it (aegis.world.firehose).
SHIP_TO = click.option(
    "--ship-to",
    metavar="S3_URI",
    default=None,
    help="Also deliver landed batches to this S3 lake (s3://bucket), as Firehose would; the local "
    "landing is then a spool. AWS_ENDPOINT_URL reaches an S3-compatible store.",
)


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
@SHIP_TO
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
    ship_to: str | None,
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

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = paths()
    secret_files = ensure_service_tokens()
    retention = None if keep_all else retention_hours
    service = _open_service(p, speed, seed, players_per_shard, shards_per_region, not no_explore, retention)
    stopped = False
    try:
        base = _startup_banner(service, p, host, port, speed, players_per_shard, secret_files)
        service.start()
        shipping = _start_shipping(p, ship_to)
        config = uvicorn.Config(
            create_app(service, bind_host=host, allowed_hosts=list(allow_hosts)),
            host=host,
            port=port,
            log_level=log_level,
            access_log=log_level == "debug",
        )
        server = uvicorn.Server(config)
        _run_until_stop_signal(server)
        service.stop()
        stopped = True
        _stop_shipping(shipping)
        click.echo(
            f"stopped at game time {service.world.game_time.isoformat()} (tick {service.tick}); state committed"
        )
        if not server.started:
            raise click.ClickException(f"the server could not start on {base} (is the port in use?)")
    finally:
        if not stopped:
            service.stop()


def _open_service(
    p: AegisPaths,
    speed: float,
    seed: int,
    players_per_shard: int,
    shards_per_region: int,
    explore: bool,
    retention_hours: float | None,
) -> WorldService:
    """The world service over AEGIS_HOME's world (created on first use); a bad store is a CLI error."""
    from aegis.world.service import ServiceOptions, WorldService
    from aegis.world.store import StoreError

    options = ServiceOptions(
        speed=speed,
        seed=seed,
        players_per_shard=players_per_shard,
        shards_per_region=shards_per_region,
        explore=explore,
        retention_hours=retention_hours,
    )
    try:
        return WorldService(p, options)
    except StoreError as exc:
        raise click.ClickException(f"cannot open the world: {exc}") from exc


def _startup_banner(
    service: WorldService,
    p: AegisPaths,
    host: str,
    port: int,
    speed: float,
    players_per_shard: int,
    secret_files: dict[str, Path],
) -> str:
    """Print where everything is (and a note when the stored world's sizes win); return the base URL."""
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
    return base


def _run_until_stop_signal(server: uvicorn.Server) -> None:
    """Run ``server`` until SIGINT/SIGTERM; the process lives on after it (handlers restored)."""
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
@click.option(
    "--batch-minutes",
    type=click.FloatRange(min=0.0, min_open=True),
    default=5.0,
    show_default=True,
    help="Game minutes per landed batch file (a shard's window; Firehose's buffering interval).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (logs, CI).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@SHIP_TO
def run(
    hours: float,
    seed: int,
    players_per_shard: int,
    no_explore: bool,
    retention_hours: float | None,
    batch_minutes: float,
    no_progress: bool,
    as_json: bool,
    ship_to: str | None,
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
        batch_minutes=batch_minutes,
    )
    data = summary.model_dump(mode="json") if hasattr(summary, "model_dump") else _dataclass_dict(summary)
    if ship_to:
        shipped = _ship_once(p, ship_to)
        if shipped.failed:
            raise click.ClickException(
                f"shipping to {ship_to} stopped: {shipped.failed[0]} (rerun ships the rest)"
            )
        data["shipped_files"] = shipped.files
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    click.echo(f"simulated {hours:g} game hours into {p.landing_telemetry}")
    width = max(len(k) for k in data)
    for key, value in data.items():
        click.echo(f"  {key:<{width}}  {_fmt(value)}")


def _shipper(p: Any, uri: str) -> Any:
    from aegis.lake.store import LakeUnavailable, S3LakeStore
    from aegis.world.firehose import FirehoseShipper

    try:
        store = S3LakeStore.from_uri(uri)
        store.check()
    except (ValueError, LakeUnavailable) as exc:
        raise click.ClickException(f"--ship-to {uri}: {exc}") from exc
    return FirehoseShipper(p.landing, store)


def _ship_once(p: Any, uri: str) -> Any:
    """One shipping pass; a store failure (bucket gone, credentials refused) is a clear error."""
    from aegis.lake.store import LakeUnavailable

    try:
        return _shipper(p, uri).ship_once()
    except LakeUnavailable as exc:
        raise click.ClickException(
            f"shipping to {uri}: {exc} (the spool keeps every batch; rerun ships it)"
        ) from exc


def _start_shipping(p: Any, uri: str | None) -> tuple[threading.Event, threading.Thread] | None:
    """A thread shipping the spool to ``uri`` every few seconds (None without --ship-to)."""
    if not uri:
        return None
    shipper = _shipper(p, uri)
    stop = threading.Event()
    thread = threading.Thread(target=shipper.run, args=(stop,), name="firehose-shipper", daemon=True)
    thread.start()
    click.echo(f"  shipping  {p.landing} -> {uri} (every few seconds, as Firehose)")
    return stop, thread


def _stop_shipping(shipping: tuple[threading.Event, threading.Thread] | None) -> None:
    """Stop the shipping thread after its last pass (it runs after the final landing)."""
    if shipping is not None:
        shipping[0].set()
        shipping[1].join(timeout=120)


@world.command()
@click.option("--to", "to", metavar="S3_URI", required=True, help="The S3 lake (s3://bucket).")
def ship(to: str) -> None:
    """Deliver what this AEGIS_HOME's world landed (and has not shipped) to an S3 lake, once."""
    p = paths()
    stats = _ship_once(p, to)
    click.echo(f"shipped {stats.files} file(s), {stats.bytes:,} bytes to {to}")
    if stats.failed:
        raise click.ClickException(
            f"stopped at {stats.failed[0]}; the rest stays in {p.landing} (rerun ships it)"
        )


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
