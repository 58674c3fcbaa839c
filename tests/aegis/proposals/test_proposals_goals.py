"""The goal file: the shipped one is valid; mistakes read as what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aegis.proposals.goals import GoalFileError, default_goals_path, load_goals, parse_goals, priority_weight

GOOD = {
    "guardrails": {"tick_p95_ms": [0, 500]},
    "goals": [
        {
            "id": "late",
            "name": "Late abandonment",
            "kpi": "abandons_late",
            "direction": "minimize",
            "priority": 1,
        }
    ],
}


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "goals.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_the_shipped_goal_file_is_valid_and_found_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AEGIS_GOALS", raising=False)
    assert default_goals_path().name == "goals.json"
    book = load_goals()
    assert {g.kpi for g in book.goals} >= {"abandons_late", "deaths_late", "inflation"}
    late = book.goal("late-quest-abandonment")
    assert late.priority == 1 and book.guardrails_for(late)["abandon_rate"] == (0, 0.6)
    assert book.guardrails_for(late)["tick_p95_ms"] == (0, 500)  # shared guardrail


def test_env_points_at_another_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, GOOD)
    monkeypatch.setenv("AEGIS_GOALS", str(path))
    assert [g.id for g in load_goals().goals] == ["late"]


def test_priority_1_weighs_most() -> None:
    assert [priority_weight(p) for p in range(1, 6)] == [5, 4, 3, 2, 1]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["goals"][0].update(kpi="abandon_late"),
            "goals[0] (id 'late'): kpi 'abandon_late' is not a KPI column of fct_shard_kpis; did you mean 'abandons_late'?",
        ),
        (lambda d: d["goals"][0].pop("id"), "goals[0] has no 'id'"),
        (lambda d: d["goals"].append(dict(d["goals"][0])), "goals[1] (id 'late'): the id is used twice"),
        (
            lambda d: d["guardrails"].update(churn_rate=[0.1, 0.0]),
            "guardrails: guardrail 'churn_rate' has low 0.1 above high 0.0",
        ),
        (lambda d: d["guardrails"].update(tick_p95ms=[0, 1]), "did you mean 'tick_p95_ms'?"),
        (
            lambda d: d["goals"][0].update(priority=7),
            "goals.0.priority: Input should be less than or equal to 5",
        ),
        (
            lambda d: d["goals"][0].update(direction="lower"),
            "goals.0.direction: Input should be 'minimize' or 'maximize'",
        ),
        (lambda d: d["goals"][0].update(regions=[]), "regions is empty"),
        (lambda d: d.update(goals=[]), "goals: List should have at least 1 item"),
        (lambda d: d.update(goal=[]), "goal: Extra inputs are not permitted"),
    ],
)
def test_mistakes_read_as_what_to_fix(tmp_path: Path, mutate, expected: str) -> None:
    doc = json.loads(json.dumps(GOOD))
    mutate(doc)
    with pytest.raises(GoalFileError) as err:
        load_goals(_write(tmp_path, doc))
    assert expected in str(err.value)
    assert str(tmp_path / "goals.json") in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    doc = json.loads(json.dumps(GOOD))
    doc["goals"][0]["kpi"] = "nope"
    doc["guardrails"]["also_nope"] = [0, 1]
    with pytest.raises(GoalFileError) as err:
        parse_goals(doc)
    assert "'nope'" in str(err.value) and "'also_nope'" in str(err.value)


def test_missing_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(GoalFileError, match="does not exist: write one"):
        load_goals(tmp_path / "absent.json")
    with pytest.raises(GoalFileError, match="not valid JSON: line 1 column"):
        load_goals(_write(tmp_path, "{goals: ]"))
