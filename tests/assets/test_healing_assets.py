"""The healing sensor, job and incidents asset through Dagster (in-process instance, real stores,
a real world server for the healing run)."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from aegis.alerts.inbox import AlertInbox
from aegis.config import AegisPaths
from aegis.domain import Alert, Fault, FaultKind
from aegis.healing.models import Incident, IncidentStatus
from aegis.healing.store import IncidentStore
from aegis.world.client import GameBackendClient
from assets.healing import GROUP_ASSET, healing_alert_sensor, healing_job, incidents
from assets.resources.game import GameBackendResource
from assets.resources.healing import HealingResource
from tests.support import WorldServer

SHARD = "eu-west-1"


@pytest.fixture
def world(aegis_home: AegisPaths) -> Iterator[WorldServer]:
    srv = WorldServer(aegis_home.home, speed="600").start()
    try:
        yield srv
    finally:
        srv.stop()


def _alert(name: str, shard: str, n: int = 0) -> Alert:
    return Alert(source="alertmanager", name=name, target=shard, labels={"shard": shard, "n": str(n)})


@pytest.fixture(autouse=True)
def _no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests feed the inbox themselves: the sensor's Alertmanager stand-in stays off."""
    monkeypatch.setenv("AEGIS_HEALING_PROBE", "off")


def _ctx(instance: dg.DagsterInstance, url: str = "http://127.0.0.1:9") -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        instance=instance,
        resources={"game": GameBackendResource(base_url=url), "healing": HealingResource()},
    )


def test_sensor_launches_one_run_per_incident(aegis_home: AegisPaths) -> None:
    inbox = AlertInbox()
    inbox.put([_alert("ShardDown", SHARD, n) for n in range(50)] + [_alert("TickLatencyHigh", "us-east-1")])
    with dg.instance_for_test() as instance:
        result = healing_alert_sensor(_ctx(instance))
        keys = sorted(r.run_key for r in result.run_requests)
        stored = {i.id: i for i in IncidentStore().incidents()}
        assert keys == sorted(stored)  # one run per incident, keyed by its id
        assert {(i.target, i.kind, i.alert_count) for i in stored.values()} == {
            (SHARD, "shard_down", 50),
            ("us-east-1", "latency", 1),
        }
        for r in result.run_requests:
            assert r.run_config["ops"]["heal_incident"]["config"]["incident_id"] == r.run_key
            assert r.tags["aegis/incident"] == r.run_key
        again = healing_alert_sensor(_ctx(instance))
        assert again.run_requests == [] and again.skip_reason


def test_healing_job_heals_and_materializes_the_timeline(world: WorldServer) -> None:
    with GameBackendClient(world.url, token=world.token("faults")) as c:
        c.inject_fault(Fault(kind=FaultKind.SHARD_CRASH, shard_id=SHARD, duration_minutes=24 * 60))
    AlertInbox().put([_alert("ShardDown", SHARD)])
    with dg.instance_for_test() as instance:
        request = healing_alert_sensor(_ctx(instance)).run_requests[0]
        result = healing_job.execute_in_process(
            run_config=request.run_config,
            resources={
                "game": GameBackendResource(base_url=world.url, token=world.token("control")),
                "healing": HealingResource(),
            },
            instance=instance,
        )
        assert result.success
        mats = [
            e.event_specific_data.materialization
            for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"
        ]
        assert [m.asset_key for m in mats] == [GROUP_ASSET]
        meta = mats[0].metadata
        assert "| id | target |" in meta["incidents"].value and request.run_key in meta["incidents"].value
        assert meta["timeline"].value.startswith("![timeline](data:image/png;base64,")
        assert meta["resolved_count"].value == 1
    inc = IncidentStore().get(request.run_key)
    assert inc.status == IncidentStatus.RESOLVED


def test_incidents_asset_materializes(aegis_home: AegisPaths) -> None:
    result = dg.materialize([incidents], resources={"healing": HealingResource()})
    assert result.success
    meta = result.asset_materializations_for_node("incidents")[0].metadata
    assert meta["open_count"].value == 0


def test_incidents_are_read_from_the_healing_resource_home(aegis_home: AegisPaths, tmp_path) -> None:
    """AEGIS_HOME has no incident; the configured resource's home has one, and gets the timeline."""
    other = AegisPaths.from_env(tmp_path / "other").ensure()
    resource = HealingResource(home=str(other.home))
    resource.store().save(Incident(target=SHARD, kind="shard_down", alerts=["ShardDown"], alert_count=1))
    result = dg.materialize([incidents], resources={"healing": resource})
    meta = result.asset_materializations_for_node("incidents")[0].metadata
    assert meta["open_count"].value == 1
    assert meta["timeline_png"].value == str(other.home / "healing" / "timeline.png")
    assert (other.home / "healing" / "timeline.png").stat().st_size > 0
    assert IncidentStore().incidents() == []  # the environment's home was not touched


def test_probe_switch_follows_the_resource_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from aegis.alerts.config import alertmanager_binary

    monkeypatch.setenv("AEGIS_HEALING_PROBE", "on")
    assert HealingResource().probe_enabled()
    assert not HealingResource(probe="off").probe_enabled()  # the profile's choice wins
    monkeypatch.setenv("AEGIS_HEALING_PROBE", "off")
    assert not HealingResource().probe_enabled()
    assert HealingResource(probe="on").probe_enabled()
    monkeypatch.setenv("AEGIS_HEALING_PROBE", "auto")
    assert HealingResource().probe_enabled() == (alertmanager_binary() is None)


def test_sensor_probe_reports_a_crash_without_alertmanager(
    world: WorldServer, aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Alertmanager: the sensor's own probe posts ShardDown to the receiver, then opens the incident."""
    import time

    import aegis.config
    from assets import healing as healing_assets
    from tests.aegis.alerts.alerting_support import start_receiver, stop_receiver

    receiver = start_receiver(aegis_home)
    monkeypatch.setattr(aegis.config, "ALERTS_PORT", int(receiver.url.rsplit(":", 1)[1]))
    monkeypatch.setenv("AEGIS_HEALING_PROBE", "on")
    monkeypatch.setattr(healing_assets, "_PROBES", {})
    try:
        with GameBackendClient(world.url, token=world.token("faults")) as c:
            c.inject_fault(Fault(kind=FaultKind.SHARD_CRASH, shard_id=SHARD, duration_minutes=24 * 60))
        with dg.instance_for_test() as instance:
            deadline = time.monotonic() + 30
            launched: list = []
            while not launched:
                assert time.monotonic() < deadline, "the sensor's probe never reported the crash"
                launched = healing_alert_sensor(_ctx(instance, world.url)).run_requests
                time.sleep(0.5)
        assert [e.alert.name for e in receiver.inbox.firing(SHARD)] == ["ShardDown"]
        inc = IncidentStore().get(launched[0].run_key)
        assert (inc.target, inc.kind) == (SHARD, "shard_down")
    finally:
        stop_receiver(receiver)


def test_the_sensor_drains_the_prod_alarm_queue_into_the_inbox_and_opens_the_incident(
    aegis_home: AegisPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prod: CloudWatch -> SNS -> SQS; the same sensor drains the queue (moto server over HTTP)
    before it reads the inbox, deletes only what it committed, and launches the healing run."""
    import json

    import boto3

    from tests.moto_support import moto_environment

    with moto_environment(monkeypatch, "eu-west-1"):
        sqs = boto3.client("sqs", region_name="eu-west-1")
        queue = sqs.create_queue(QueueName="aegis-alerts")["QueueUrl"]
        alarm = {
            "AlarmName": "aegis-prod-ShardDown-eu-west-1",
            "AlarmArn": "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:aegis-prod-ShardDown-eu-west-1",
            "NewStateValue": "ALARM",
            "NewStateReason": "Threshold Crossed",
            "StateChangeTime": "2026-12-06T01:00:00.000+0000",
            "Trigger": {
                "MetricName": "ShardDown",
                "Namespace": "Aegis/World",
                "Dimensions": [{"name": "shard", "value": SHARD}],
            },
        }
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(alarm))
        healing = HealingResource(alert_queue_url=queue, region="eu-west-1")
        with dg.instance_for_test() as instance:
            ctx = dg.build_sensor_context(
                instance=instance,
                resources={"game": GameBackendResource(base_url="http://127.0.0.1:9"), "healing": healing},
            )
            result = healing_alert_sensor(ctx)
        attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"])
        assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"  # committed, then deleted
    inbox = AlertInbox()
    try:
        firing = inbox.firing()
    finally:
        inbox.close()
    assert [e.alert.source for e in firing] == ["cloudwatch"]
    assert len(result.run_requests) == 1, result.skip_reason
