"""The series the generated rules read are the ones their exporters really expose (names, labels,
the latency bucket bound), read from the world's own metrics registry, the auth module and the
receiver: a renamed metric fails here instead of silencing an alert."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from aegis.alerts import rules
from aegis.security.auth import REFUSAL_METRIC
from aegis.world.metrics import WorldMetrics


def _world_samples() -> dict[str, list[dict[str, str]]]:
    m = WorldMetrics()
    m.shard_up.labels(shard="eu-1").set(1)
    m.players_online.labels(shard="eu-1").set(10)
    m.speed.set(60)
    m.shard_tick_ms.labels(shard="eu-1").observe(42.0)
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(dict(sample.labels))
    return out


def test_the_world_exports_what_the_rules_read() -> None:
    samples = _world_samples()
    assert samples[rules.SHARD_UP] == [{"shard": "eu-1"}]
    assert samples[rules.PLAYERS_ONLINE] == [{"shard": "eu-1"}]
    assert rules.WORLD_SPEED in samples
    buckets = {s["le"] for s in samples[f"{rules.TICK_HISTOGRAM}_bucket"]}
    threshold = rules.load_slo_spec().objective("latency").threshold_ms
    assert threshold is not None and rules._le(threshold) in buckets
    assert f"{rules.TICK_HISTOGRAM}_count" in samples
    assert REFUSAL_METRIC == rules.REFUSED_REQUESTS


def test_the_world_exports_currency_created() -> None:
    families = {f.name: f for f in text_string_to_metric_families(WorldMetrics().render().decode())}
    family = families[rules.CURRENCY_CREATED.removesuffix("_total")]  # declared, even before a sample
    assert family.type == "counter"
