"""Knobs of the proposal engine, read from ``aegis.config.proposals`` of ``policies/data.json``.

The step sizes come from the policy's own envelope (``risk.max_auto_delta`` and
``risk.autonomy_bands``), read from the same file, so a candidate is built to
sit inside what the policy lets Aegis do on its own; nothing here restates them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aegis.domain import PARAM_BOUNDS

PROPOSALS_KEY = "proposals"


class EvidenceThresholds(BaseModel):
    """When a mart reading is a hypothesis worth testing."""

    model_config = ConfigDict(extra="forbid")

    abandon_excess: float = Field(
        0.15, ge=0, description="Stage abandon rate above its reference by this share"
    )
    abandon_z: float = Field(2.0, ge=0, description="Two-proportion z of that excess, at least")
    min_stage_attempts: int = Field(30, ge=1, description="Attempts that left a stage before it counts")
    death_share_ratio: float = Field(1.25, gt=1, description="Zone's share of deaths vs its reference share")
    min_zone_deaths: int = Field(20, ge=1)
    hotspot_share: float = Field(0.25, gt=0, le=1, description="One grid cell's share of a zone's deaths")
    spike_z: float = Field(3.0, gt=0, description="Deaths in the last hour vs the day before, in std units")
    saturation_high: float = Field(0.85, gt=0, description="Peak players online / capacity")
    tick_p95_high_ms: float = Field(250.0, gt=0)


class ProposalSettings(BaseModel):
    """Budget, step sizes and risk attitude of the proposal engine."""

    model_config = ConfigDict(extra="forbid")

    daily_budget: int = Field(6, ge=0, description="Canaries Aegis may start per UTC day")
    step_fraction: float = Field(0.8, gt=0, le=1, description="Step = this share of risk.max_auto_delta")
    simulation_step_factor: float = Field(
        0.0, ge=0, description="> 0: also propose steps this many times max_auto_delta (simulation gate)"
    )
    simulation_cost: float = Field(0.5, ge=0, description="Utility a simulation-routed candidate gives up")
    uncertainty_aversion: float = Field(
        0.25, ge=0, description="Utility lost per unit of interval half-width"
    )
    evidence_weight: float = Field(
        0.05, ge=0, description="Utility of testing a hypothesis, per unit of strength and goal weight"
    )
    guardrail_weight: float = Field(
        5.0, ge=0, description="Utility lost per unit of predicted band violation"
    )
    prior_interval_factor: float = Field(
        1.5, gt=0, description="Without a model: interval half-width = this x the prior effect"
    )
    history_buckets: int = Field(288, ge=12, description="KPI buckets per shard read (scale and levels)")
    level_buckets: int = Field(12, ge=1, description="Recent buckets whose mean is the current level")
    max_candidates: int = Field(60, ge=1, description="Ranked candidates kept in the output")
    refresh_minutes: int = Field(30, ge=5, description="At most one automated ranking per this many minutes")
    evidence: EvidenceThresholds = Field(default_factory=EvidenceThresholds)
    # From risk.* of the same file (never written under aegis.config.proposals).
    max_auto_delta: dict[str, float] = Field(default_factory=dict)
    autonomy_bands: dict[str, tuple[float, float]] = Field(default_factory=dict)
    economy_bands: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="economy.bands (inflation, velocity): what the hypotheses read against",
    )

    @classmethod
    def from_policy_data(cls, data: dict[str, Any] | None = None) -> ProposalSettings:
        """From a loaded ``data.json`` (default: the active policy directory's)."""
        if data is None:
            from aegis.policy.engine import DATA_FILE, default_policies_dir, load_data

            data = load_data(default_policies_dir() / DATA_FILE)
        config = data.get("aegis", {}).get("config", {})
        risk = config.get("risk", {})
        economy = config.get("economy", {}).get("bands", {})
        own = dict(config.get(PROPOSALS_KEY, {}))
        return cls.model_validate(
            {
                **own,
                "max_auto_delta": risk.get("max_auto_delta", {}),
                "autonomy_bands": {k: tuple(v) for k, v in risk.get("autonomy_bands", {}).items()},
                "economy_bands": {k: (v["low"], v["high"]) for k, v in economy.items()},
            }
        )

    def auto_step(self, param: str) -> float:
        """Relative step that stays inside the policy's auto bound for ``param`` (0: not tunable on its own)."""
        return self.step_fraction * self.max_auto_delta.get(param, 0.0)

    def band(self, param: str) -> tuple[float, float]:
        return self.autonomy_bands.get(param, PARAM_BOUNDS[param])
