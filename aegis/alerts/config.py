"""Prometheus and Alertmanager for the local stack: their configuration and command lines.

``aegis up`` writes, under ``AEGIS_HOME/alerting``:

* ``prometheus.yml``: scrape the world server's ``/metrics`` and the alert
  receiver's ``/metrics`` every couple of seconds, both with the ``read``
  service token (``authorization.credentials_file``: Prometheus re-reads the
  file, so a rotated token needs no restart); load the generated rules
  (``aegis-rules.yml``, see :mod:`aegis.alerts.rules`); send alerts to the local
  Alertmanager.
* ``alertmanager.yml``: one route to the receiver's webhook
  (``/v1/alerts/alertmanager``) with the ``alerts`` service token, grouping
  tuned for fast local reaction (``group_wait`` 1 s, ``group_interval`` 5 s) and
  resolved notifications on; SLO *tickets* (``page="false"``) go nowhere.

Both binaries come from Debian (``apt-get install prometheus
prometheus-alertmanager``).  When they are missing the stack still runs, the
receiver included, and :func:`alerting_children` says so and what to install.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml  # type: ignore[import-untyped]

from aegis.alerts.rules import RECEIVER_JOB, WORLD_JOB, RulesError, load_slo_spec, write_rules
from aegis.config import ALERTMANAGER_PORT, ALERTS_PORT, PROMETHEUS_PORT, AegisPaths

if TYPE_CHECKING:
    from aegis.stack import Child

PROMETHEUS_FILE = "prometheus.yml"
ALERTMANAGER_FILE = "alertmanager.yml"
PROMETHEUS_DATA = "prometheus-data"
ALERTMANAGER_DATA = "alertmanager-data"
PROMETHEUS_BINARIES = ("prometheus",)
ALERTMANAGER_BINARIES = ("prometheus-alertmanager", "alertmanager")  # Debian's name first
PROMTOOL = "promtool"
AMTOOL = "amtool"
INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"
RETENTION = "4d"  # the longest burn window (3d) plus a day
GROUP_WAIT = "1s"
GROUP_INTERVAL = "5s"
REPEAT_INTERVAL = "1h"
RESOLVE_TIMEOUT = "1m"
WEBHOOK_PATH = "/v1/alerts/alertmanager"
READ_TOKEN = "read.token"
ALERTS_TOKEN = "alerts.token"
NULL_RECEIVER = "null"
AEGIS_RECEIVER = "aegis"


def find_binary(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def prometheus_binary() -> str | None:
    return find_binary(PROMETHEUS_BINARIES)


def alertmanager_binary() -> str | None:
    return find_binary(ALERTMANAGER_BINARIES)


@dataclass(frozen=True)
class AlertingPorts:
    world: int
    receiver: int = ALERTS_PORT
    prometheus: int = PROMETHEUS_PORT
    alertmanager: int = ALERTMANAGER_PORT
    host: str = "127.0.0.1"


def prometheus_config(p: AegisPaths, ports: AlertingPorts, rules_file: Path) -> dict[str, Any]:
    spec = load_slo_spec()
    read_token = str(p.secrets / READ_TOKEN)

    def job(name: str, port: int) -> dict[str, Any]:
        return {
            "job_name": name,
            "metrics_path": "/metrics",
            "scrape_interval": spec.scrape_interval,
            "scrape_timeout": spec.scrape_interval,
            "authorization": {"type": "Bearer", "credentials_file": read_token},
            "static_configs": [{"targets": [f"{ports.host}:{port}"]}],
        }

    return {
        "global": {
            "scrape_interval": spec.scrape_interval,
            "evaluation_interval": spec.evaluation_interval,
            "external_labels": {"aegis_home": str(p.home)},
        },
        "rule_files": [str(rules_file)],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"{ports.host}:{ports.alertmanager}"]}]}]
        },
        "scrape_configs": [job(WORLD_JOB, ports.world), job(RECEIVER_JOB, ports.receiver)],
    }


def alertmanager_config(p: AegisPaths, ports: AlertingPorts) -> dict[str, Any]:
    return {
        "global": {"resolve_timeout": RESOLVE_TIMEOUT},
        "route": {
            "receiver": AEGIS_RECEIVER,
            "group_by": ["alertname", "shard", "sli"],
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
            "routes": [{"receiver": NULL_RECEIVER, "matchers": ['page="false"']}],
        },
        "receivers": [
            {
                "name": AEGIS_RECEIVER,
                "webhook_configs": [
                    {
                        "url": f"http://{ports.host}:{ports.receiver}{WEBHOOK_PATH}",
                        "send_resolved": True,
                        "max_alerts": 0,
                        "http_config": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials_file": str(p.secrets / ALERTS_TOKEN),
                            }
                        },
                    }
                ],
            },
            {"name": NULL_RECEIVER},
        ],
    }


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        "# Generated by aegis (aegis.alerts.config). Do not edit.\n" + yaml.safe_dump(doc, sort_keys=False)
    )
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class AlertingFiles:
    rules: Path
    prometheus: Path
    alertmanager: Path


def write_configs(p: AegisPaths, ports: AlertingPorts, out_dir: Path | None = None) -> AlertingFiles:
    """Write the rules, ``prometheus.yml`` and ``alertmanager.yml`` (default: ``AEGIS_HOME/alerting``)."""
    out = out_dir or p.alerting
    rules = write_rules(out)
    return AlertingFiles(
        rules=rules,
        prometheus=_write(out / PROMETHEUS_FILE, prometheus_config(p, ports, rules)),
        alertmanager=_write(out / ALERTMANAGER_FILE, alertmanager_config(p, ports)),
    )


def prometheus_argv(binary: str, files: AlertingFiles, data_dir: Path, ports: AlertingPorts) -> list[str]:
    return [
        binary,
        f"--config.file={files.prometheus}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={RETENTION}",
        f"--web.listen-address={ports.host}:{ports.prometheus}",
        "--log.level=warn",
    ]


def alertmanager_argv(binary: str, files: AlertingFiles, data_dir: Path, ports: AlertingPorts) -> list[str]:
    return [
        binary,
        f"--config.file={files.alertmanager}",
        f"--storage.path={data_dir}",
        f"--web.listen-address={ports.host}:{ports.alertmanager}",
        "--cluster.listen-address=",  # one local instance: no gossip port
        "--log.level=warn",
    ]


def receiver_argv(ports: AlertingPorts) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aegis.cli",
        "alerts",
        "serve",
        "--host",
        ports.host,
        "--port",
        str(ports.receiver),
    ]


@dataclass(frozen=True)
class Service:
    """A process of the alerting stack: what ``aegis up`` turns into a child."""

    name: str
    argv: list[str]
    url: str
    ready_path: str


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def alerting_services(p: AegisPaths, ports: AlertingPorts) -> tuple[list[Service], list[str]]:
    """The receiver, Prometheus and Alertmanager to start, and what to tell the user.

    A missing binary or a port already taken skips that service with a message,
    never the whole stack: alerting degrades, the game and the pipelines run.
    """
    notes: list[str] = []
    files = write_configs(p, ports)
    services: list[Service] = []
    base = f"http://{ports.host}"
    candidates: list[tuple[str, int, list[str] | None, str]] = [
        ("alerts", ports.receiver, receiver_argv(ports), "/v1/health"),
    ]
    prom = prometheus_binary()
    am = alertmanager_binary()
    candidates.append(
        (
            "prometheus",
            ports.prometheus,
            prometheus_argv(prom, files, p.alerting / PROMETHEUS_DATA, ports) if prom else None,
            "/-/ready",
        )
    )
    candidates.append(
        (
            "alertmanager",
            ports.alertmanager,
            alertmanager_argv(am, files, p.alerting / ALERTMANAGER_DATA, ports) if am else None,
            "/-/ready",
        )
    )
    missing = [name for name, _port, argv, _ready in candidates if argv is None]
    if missing:
        notes.append(
            f"alerting runs without {' and '.join(missing)} (not installed): the receiver takes "
            f"Alertmanager/CloudWatch alerts and the SLO marts still raise alerts, but nothing scrapes "
            f"the world. Install with: {INSTALL_HINT}"
        )
    for name, port, argv, ready in candidates:
        if argv is None:
            continue
        if not port_free(ports.host, port):
            notes.append(f"{name}: port {port} is already in use; not started (set AEGIS_*_PORT to move it)")
            continue
        services.append(Service(name, argv, f"{base}:{port}", ready))
    return services, notes


def check_configs(files: AlertingFiles) -> list[tuple[str, int, str]]:
    """Validate with ``promtool check rules|config`` and ``amtool check-config`` when present.

    Returns ``(command, exit code, output)`` per check run; a missing tool is
    reported as exit code 127.
    """
    import subprocess

    checks: list[list[str]] = []
    promtool = shutil.which(PROMTOOL)
    amtool = shutil.which(AMTOOL)
    if promtool:
        checks.append([promtool, "check", "rules", str(files.rules)])
        checks.append([promtool, "check", "config", "--syntax-only", str(files.prometheus)])
    if amtool:
        checks.append([amtool, "check-config", str(files.alertmanager)])
    out: list[tuple[str, int, str]] = []
    for argv in checks:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        out.append((" ".join(argv), done.returncode, (done.stdout + done.stderr).strip()))
    if not promtool:
        out.append((PROMTOOL, 127, f"promtool not found; install with: {INSTALL_HINT}"))
    if not amtool:
        out.append((AMTOOL, 127, f"amtool not found; install with: {INSTALL_HINT}"))
    return out


def alerting_children(p: AegisPaths, world_port: int) -> list[Child]:
    """``aegis up``'s alerting children; prints why any of them is not started."""
    import click

    from aegis.stack import Child

    ports = AlertingPorts(world=world_port)
    try:
        services, notes = alerting_services(p, ports)
    except RulesError as exc:  # a broken SLO declaration must not stop the game: receiver only
        url = f"http://{ports.host}:{ports.receiver}"
        services = [Service("alerts", receiver_argv(ports), url, "/v1/health")]
        notes = [f"alerting runs without Prometheus and Alertmanager: {exc}"]
    for note in notes:
        click.echo(note, err=True)
    return [Child(s.name, s.argv, s.url, s.ready_path) for s in services]
