"""What `aegis up` starts for alerting: the receiver always; Prometheus and Alertmanager when
installed (otherwise it says what to install); a taken port skips that service with a message;
a broken SLO declaration leaves the receiver running."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from aegis.alerts.config import (
    INSTALL_HINT,
    AlertingPorts,
    alerting_children,
    alerting_services,
    alertmanager_binary,
    prometheus_binary,
)
from aegis.config import AegisPaths
from tests.support import free_port


def _ports() -> AlertingPorts:
    return AlertingPorts(
        world=free_port(), receiver=free_port(), prometheus=free_port(), alertmanager=free_port()
    )


def test_without_the_binaries_only_the_receiver_starts_and_it_says_what_to_install(
    aegis_home: AegisPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    services, notes = alerting_services(aegis_home, _ports())
    assert [s.name for s in services] == ["alerts"]
    assert len(notes) == 1 and "prometheus and alertmanager" in notes[0] and INSTALL_HINT in notes[0]
    # the configuration is written all the same, ready for when they are installed
    assert (aegis_home.alerting / "aegis-rules.yml").is_file()
    assert (aegis_home.alerting / "prometheus.yml").is_file()


def test_with_the_binaries_all_three_start_and_a_taken_port_is_skipped(aegis_home: AegisPaths) -> None:
    if not (prometheus_binary() and alertmanager_binary()):
        pytest.skip("apt-get install prometheus prometheus-alertmanager")
    ports = _ports()
    services, notes = alerting_services(aegis_home, ports)
    assert [s.name for s in services] == ["alerts", "prometheus", "alertmanager"] and notes == []
    prom = services[1]
    assert f"--web.listen-address=127.0.0.1:{ports.prometheus}" in prom.argv and prom.ready_path == "/-/ready"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports.prometheus))
        busy.listen()
        services, notes = alerting_services(aegis_home, ports)
    assert [s.name for s in services] == ["alerts", "alertmanager"]
    assert notes == [
        f"prometheus: port {ports.prometheus} is already in use; not started (set AEGIS_*_PORT to move it)"
    ]


def test_a_broken_slo_declaration_keeps_the_receiver(
    aegis_home: AegisPaths,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    data = json.loads((Path(__file__).parents[3] / "policies" / "data.json").read_text())
    data["aegis"]["config"]["slos"]["burn_alerts"] = []
    (policies / "data.json").write_text(json.dumps(data))
    monkeypatch.setenv("AEGIS_POLICIES", str(policies))
    children = alerting_children(aegis_home, free_port())
    assert [c.name for c in children] == ["alerts"]
    assert "aegis.config.slos" in capsys.readouterr().err
