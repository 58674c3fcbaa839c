"""Reflection records (root-cause classes) and the reality delta (error, coverage, interval scale)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from aegis.changes.store import CanarySpecRecord, ChangeSetRecord
from aegis.domain import AutonomousChangeSet, ParamChange, PromotionState, ReflectionRecord
from aegis.reflection import delta as rd
from aegis.reflection.records import build_reflection, reflection_summary, relative_predictions, root_cause

S = PromotionState
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _rec(state: PromotionState, reason: str) -> ChangeSetRecord:
    cs = AutonomousChangeSet(
        id="cs-r", target="eu-west-1", diff={"sink_multiplier": ParamChange(before=1.0, after=1.1)}
    )
    return ChangeSetRecord(cs, state, None, None, None, None, None, reason, T0, T0)


def _spec(
    judgement: dict | None, predicted: list[dict] | None = None, rollout: dict | None = None
) -> CanarySpecRecord:
    return CanarySpecRecord(
        "cs-r", "eu-west-1", ["eu-west-2"], T0, 12, {"hypothesis": "h", "predicted_relative": predicted or []},
        judgement, T0, rollout, T0,
    )  # fmt: skip


REGRESSED = [{"name": "abandon_rate", "effect": 0.2, "interval": [0.1, 0.3], "status": "regressed"}]


@pytest.mark.parametrize(
    ("state", "reason", "predicted", "rollout", "expected"),
    [
        (S.PROMOTED, "canary promoted", None, {"status": "done"}, None),
        (S.PROMOTED, "canary promoted", None, {"status": "stopped"}, "rollout_failed"),
        (S.REJECTED, "denied by security.rate_limit: too many", None, None, "policy_denied"),
        (S.REJECTED, "simulation gate failed: abandon_rate", None, None, "simulation_failed"),
        (S.REJECTED, "the config of x (version 3) changed since the proposal: y", None, None, "stale_config"),
        (S.ROLLED_BACK, "integrity check failed after apply: lost 40 (rollback mode snapshot)", None, None, "integrity_failure"),
        (S.ROLLED_BACK, "canary verdict inconclusive: budget", None, None, "inconclusive"),
        (S.ROLLED_BACK, "canary verdict rollback: harm", [{"kpi": "abandon_rate", "mean": 0.0, "lo": -0.05, "hi": 0.05}], None, "model_error"),
        (S.ROLLED_BACK, "canary verdict rollback: harm", [{"kpi": "abandon_rate", "mean": 0.2, "lo": 0.05, "hi": 0.35}], None, "guardrail_regression"),
        (S.ROLLED_BACK, "canary verdict rollback: harm", None, None, "guardrail_regression"),
        (S.ROLLED_BACK, "manual rollback (rollback mode snapshot)", None, None, "operator"),
    ],
)  # fmt: skip
def test_reflection_root_cause_classes(state, reason, predicted, rollout, expected) -> None:
    spec = _spec({"verdict": "rollback", "metrics": REGRESSED, "reason": "harm"}, predicted, rollout)
    refl = build_reflection(_rec(state, reason), spec, [])
    assert refl.root_cause == expected
    assert refl.hypothesis == "h" and refl.why.startswith(reason)
    text = reflection_summary(refl)
    assert text.startswith("Reflection on cs-r: it ended") and text.endswith(".")
    if expected:
        assert expected.replace("_", " ") in text


def test_reflection_root_cause_without_metrics() -> None:
    assert root_cause(
        _rec(S.ROLLED_BACK, "canary verdict rollback: x"), "canary verdict rollback: x", {}, {}, [], None
    ) == ("guardrail_regression")


def test_reflection_relative_predictions_use_the_canarys_own_level() -> None:
    kpis = pd.DataFrame(
        {
            "shard_id": ["a"] * 3 + ["b"] * 3,
            "bucket_start": list(pd.date_range(T0, periods=3, freq="5min")) * 2,
            "abandon_rate": [0.4, 0.5, 0.6, 0.1, 0.1, 0.1],
            "inflation": [0.0] * 6,
        }
    )
    predicted = [
        {"kpi": "abandon_rate", "mean": -0.05, "lo": -0.1, "hi": 0.0},
        {"kpi": "inflation", "mean": 0.01, "lo": 0.0, "hi": 0.02},  # no judge metric: left out
    ]
    out = relative_predictions(predicted, kpis, "a")
    assert out == [
        {"kpi": "abandon_rate", "mean": pytest.approx(-0.1), "lo": pytest.approx(-0.2), "hi": 0.0, "from_kpi": "abandon_rate", "level": pytest.approx(0.5)}
    ]  # fmt: skip
    assert relative_predictions(predicted, pd.DataFrame(), "a") == []


def _refl(i: int, observed: float, mean: float = 0.0, half: float = 0.1) -> ReflectionRecord:
    return ReflectionRecord(
        changeset_id=f"cs-{i}", outcome=S.PROMOTED, created_at=T0 + timedelta(hours=i),
        expected={"abandon_rate": mean}, expected_intervals={"abandon_rate": (mean - half, mean + half)},
        observed={"abandon_rate": observed},
    )  # fmt: skip


def test_reality_delta_calibrated_model_keeps_its_intervals(tmp_path) -> None:
    rng = np.random.default_rng(1)
    # errors within the interval 9 times in 10: honest 90% intervals
    obs = [0.05 * (rng.random() - 0.5) for _ in range(18)] + [0.15, -0.15]
    pairs = rd.pairs_from([_refl(i, o) for i, o in enumerate(obs)])
    result = rd.score(pairs)
    assert result.pairs == 20 and result.coverage == pytest.approx(0.9)
    assert not result.miscalibrated and not result.retrain and result.interval_scale == 1.0
    assert result.mae == pytest.approx(np.mean(np.abs(obs)))


def test_reality_delta_widens_miscalibrated_intervals_and_writes_the_file(tmp_path) -> None:
    # observed effects twice as far as the intervals allow, half of the time
    obs = [0.2 if i % 2 else 0.05 for i in range(10)]
    pairs = rd.pairs_from([_refl(i, o) for i, o in enumerate(obs)])
    result = rd.score(pairs, previous_scale=1.0)
    assert result.coverage == pytest.approx(0.5) and result.miscalibrated
    assert result.interval_scale == pytest.approx(2.0)
    # with the widened intervals, 90% of the observations would have been covered
    covered = np.mean([abs(p.error) <= result.interval_scale * (p.hi - p.mean) + 1e-12 for p in pairs])
    assert covered >= 0.9
    path = rd.write_calibration(tmp_path, result)
    assert path == tmp_path / "proposals" / "calibration.json"
    doc = json.loads(path.read_text())
    assert doc["interval_scale"] == pytest.approx(2.0) and datetime.fromisoformat(doc["updated_at"])
    assert rd.read_scale(tmp_path) == pytest.approx(2.0)
    # far off: retraining is asked for, the scale is capped
    far = rd.score(rd.pairs_from([_refl(i, 5.0) for i in range(10)]), previous_scale=2.0)
    assert far.retrain and far.interval_scale == rd.MAX_SCALE
    assert rd.delta_chart(pairs)[:8] == b"\x89PNG\r\n\x1a\n"


def test_reality_delta_with_too_few_pairs_changes_nothing(tmp_path) -> None:
    assert rd.score([]).reason.startswith("no canary")
    few = rd.score(rd.pairs_from([_refl(0, 1.0)]), previous_scale=1.5)
    assert few.interval_scale == 1.5 and not few.miscalibrated
    assert rd.read_scale(tmp_path) == 1.0  # no file yet
    (tmp_path / "proposals").mkdir()
    (tmp_path / "proposals" / "calibration.json").write_text("{not json")
    assert rd.read_scale(tmp_path) == 1.0
