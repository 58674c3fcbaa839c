"""The world model: a deep ensemble of small GRU sequence models with Gaussian heads.

Each member reads a shard's recent KPI history (with the parameters in force
and the time of day) and the action (the parameters for the next bucket) and
predicts, for every target KPI, a mean and a variance in a normalised space
(symlog, then standardised on the training split). The ensemble's spread gives
the epistemic part of the uncertainty, the heads the aleatoric part; a
per-KPI scale fitted on the validation split calibrates the 90% interval. The
symlog transform is monotonic, so intervals map back to KPI units exactly.

Everything a prediction needs (normalisation, calibration, weights) travels in
one file, so a champion trained months ago is judged on today's split with its
own scaler.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aegis.worldmodel.dataset import (
    INPUT_KPIS,
    N_TIME_FEATURES,
    PARAM_COLUMNS,
    TARGET_KPIS,
    Windows,
    param_scale,
    symexp,
    symlog,
)

Z90 = 1.6448536269514722  # two-sided 90% normal quantile
MIN_VAR = 1e-4
FORMAT_VERSION = 1
STD_FLOOR = 1e-3
PARAM_STD_FLOOR = 0.02  # of a parameter's hard range (parameters are scaled to [0, 1] first)
# symlog(x / scale) with scale = the KPI's median magnitude on the training split: a KPI
# that lives at 0.005 with rare spikes of 5 (velocity) is otherwise linear where it lives and
# its everyday moves vanish under the spikes' variance; counts become log-like around their level.
SCALE_QUANTILE = 0.5
SCALE_FLOOR = 1e-6
# Per-KPI weights of the network's predicted change, chosen on the validation split by MAE.
# 5-minute counts at a few dozen events are mostly Poisson noise: where the network's move
# from the last value does not pay on unseen time, the model learns to make a smaller one.
SHRINK_GRID = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class ModelConfig:
    window: int
    hidden: int = 64
    layers: int = 1
    members: int = 5
    dropout: float = 0.0

    @property
    def step_features(self) -> int:
        return len(INPUT_KPIS) + N_TIME_FEATURES

    @property
    def action_features(self) -> int:
        return len(PARAM_COLUMNS) + N_TIME_FEATURES


@dataclass
class Normaliser:
    """symlog + standardisation statistics fitted on the training split only."""

    kpi_mean: np.ndarray
    kpi_std: np.ndarray
    target_mean: np.ndarray
    target_std: np.ndarray
    param_mean: np.ndarray
    param_std: np.ndarray
    # Per-KPI magnitude dividing values before symlog; ones (plain symlog) when absent, which
    # is what files written before the scales existed, and the ridge baseline, use.
    kpi_scale: np.ndarray | None = None
    target_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kpi_scale is None:
            self.kpi_scale = np.ones_like(np.asarray(self.kpi_mean, dtype=np.float64))
        if self.target_scale is None:
            self.target_scale = np.ones_like(np.asarray(self.target_mean, dtype=np.float64))

    @classmethod
    def fit(cls, train: Windows, scaled: bool = True) -> Normaliser:
        """Statistics of the training split; ``scaled`` divides each KPI by its typical magnitude first."""
        flat = train.kpis.reshape(-1, train.kpis.shape[-1])
        kpi_scale = robust_scale(flat) if scaled else np.ones(flat.shape[-1])
        target_scale = robust_scale(train.target) if scaled else np.ones(train.target.shape[-1])
        k = symlog(flat / kpi_scale)
        y = symlog(train.target / target_scale)
        p = param_scale(train.action)
        return cls(
            kpi_mean=k.mean(0),
            kpi_std=np.maximum(k.std(0), STD_FLOOR),
            target_mean=y.mean(0),
            target_std=np.maximum(y.std(0), STD_FLOOR),
            # Standardised so an explored parameter's variation is O(1) for the network; the
            # floor (a share of its hard range) keeps a never-explored one from exploding when a
            # changeset moves it: the model then sees a modest input, and says it is unsure.
            param_mean=p.mean(0),
            param_std=np.maximum(p.std(0), PARAM_STD_FLOOR),
            kpi_scale=kpi_scale,
            target_scale=target_scale,
        )

    def inputs(self, w: Windows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(steps [N, W, F], action [N, A], anchor [N, T]) as float32 network inputs.

        The anchor is the last observed value of each target, normalised like the
        target: the network predicts the change from it, so a slowly moving level
        (players online, money supply) starts from persistence instead of from zero.
        """
        kpis = (symlog(w.kpis / self.kpi_scale) - self.kpi_mean) / self.kpi_std
        steps = np.concatenate([kpis, w.times], axis=-1)
        act = (param_scale(w.action) - self.param_mean) / self.param_std
        action = np.concatenate([act, w.action_time], axis=-1)
        anchor = self.target(w.last_target)
        return steps.astype(np.float32), action.astype(np.float32), anchor.astype(np.float32)

    def target(self, y: np.ndarray) -> np.ndarray:
        return ((symlog(y / self.target_scale) - self.target_mean) / self.target_std).astype(np.float32)

    def untarget(self, z: np.ndarray) -> np.ndarray:
        return symexp(z * self.target_std + self.target_mean) * self.target_scale

    def to_dict(self) -> dict[str, list[float]]:
        return {k: np.asarray(v, dtype=float).tolist() for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Normaliser:
        return cls(**{k: np.asarray(v, dtype=np.float64) for k, v in d.items()})


def robust_scale(values: np.ndarray) -> np.ndarray:
    """Each column's median magnitude (ignoring zeros), floored: the unit symlog is applied in."""
    mag = np.abs(np.asarray(values, dtype=np.float64))
    out = np.ones(mag.shape[-1])
    for j in range(mag.shape[-1]):
        nz = mag[:, j][mag[:, j] > 0]
        if len(nz):
            out[j] = max(float(np.quantile(nz, SCALE_QUANTILE)), SCALE_FLOOR)
    return out


class MemberNet(nn.Module):
    """One ensemble member: GRU over the history, MLP head over (summary, action, last step)."""

    def __init__(self, cfg: ModelConfig, n_targets: int) -> None:
        super().__init__()
        h = cfg.hidden
        self.embed = nn.Linear(cfg.step_features, h)
        self.gru = nn.GRU(
            h, h, num_layers=cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0
        )
        self.head = nn.Sequential(
            nn.Linear(h + cfg.action_features + cfg.step_features, 2 * h),
            nn.GELU(),
            nn.Linear(2 * h, 2 * h),
            nn.GELU(),
            nn.Linear(2 * h, 2 * n_targets),
        )

    def forward(
        self, steps: torch.Tensor, action: torch.Tensor, anchor: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seq, _ = self.gru(F.gelu(self.embed(steps)))
        out = self.head(torch.cat([seq[:, -1], action, steps[:, -1]], dim=-1))
        delta, raw = out.chunk(2, dim=-1)
        return anchor + delta, F.softplus(raw) + MIN_VAR


@dataclass
class Prediction:
    """Predictions in KPI units: mean and the 90% interval, [N, len(TARGET_KPIS)] each."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


class WorldModel:
    """A trained ensemble with its normaliser and calibration: the unit MLflow stores."""

    kind = "world_model"

    def __init__(
        self,
        config: ModelConfig,
        normaliser: Normaliser,
        members: list[MemberNet],
        calibration: np.ndarray | None = None,
        info: dict[str, object] | None = None,
        shrink: np.ndarray | None = None,
    ) -> None:
        self.config = config
        self.normaliser = normaliser
        self.members = members
        self.calibration = (
            np.ones(len(TARGET_KPIS)) if calibration is None else np.asarray(calibration, float)
        )
        self.shrink = np.ones(len(TARGET_KPIS)) if shrink is None else np.asarray(shrink, float)
        self.info = dict(info or {})
        for m in self.members:
            m.eval()

    @property
    def window(self) -> int:
        return self.config.window

    @torch.no_grad()
    def member_moments(self, w: Windows, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Per-member mean and variance in normalised space: [K, N, T] each."""
        if w.window != self.window:
            raise ValueError(f"model expects windows of {self.window} buckets, got {w.window}")
        steps, action, anchor = self.normaliser.inputs(w)
        device = next(self.members[0].parameters()).device
        means, variances = [], []
        for m in self.members:
            mu_parts, var_parts = [], []
            for i in range(0, len(steps), batch):
                s = torch.from_numpy(steps[i : i + batch]).to(device)
                a = torch.from_numpy(action[i : i + batch]).to(device)
                c = torch.from_numpy(anchor[i : i + batch]).to(device)
                mu, var = m(s, a, c)
                mu_parts.append(mu.cpu().numpy())
                var_parts.append(var.cpu().numpy())
            means.append(np.concatenate(mu_parts) if mu_parts else np.zeros((0, len(TARGET_KPIS))))
            variances.append(np.concatenate(var_parts) if var_parts else np.zeros((0, len(TARGET_KPIS))))
        return np.stack(means).astype(np.float64), np.stack(variances).astype(np.float64)

    def predict_normalised(self, w: Windows) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mixture mean and calibrated standard deviation in normalised space."""
        mu_k, var_k = self.member_moments(w)
        mu = mu_k.mean(0)
        var = (var_k + mu_k**2).mean(0) - mu**2
        sigma = np.sqrt(np.maximum(var, MIN_VAR)) * self.calibration
        anchor = self.normaliser.target(w.last_target).astype(np.float64)
        return anchor + self.shrink * (mu - anchor), sigma

    def fit_shrinkage(self, val: Windows) -> np.ndarray:
        """Per KPI, the share of the predicted change that minimises validation MAE in KPI units."""
        self.shrink = np.ones(len(TARGET_KPIS))
        mu, _ = self.predict_normalised(val)
        anchor = self.normaliser.target(val.last_target).astype(np.float64)
        errors = [
            np.abs(self.normaliser.untarget(anchor + a * (mu - anchor)) - val.target).mean(0)
            for a in SHRINK_GRID
        ]
        self.shrink = SHRINK_GRID[np.argmin(np.stack(errors), axis=0)]
        return self.shrink

    def predict(self, w: Windows) -> Prediction:
        mu, sigma = self.predict_normalised(w)
        n = self.normaliser
        return Prediction(
            mean=n.untarget(mu), low=n.untarget(mu - Z90 * sigma), high=n.untarget(mu + Z90 * sigma)
        )

    def calibrate(self, val: Windows) -> np.ndarray:
        """Scale each KPI's sigma so that 90% of validation targets fall inside the interval."""
        self.calibration = np.ones(len(TARGET_KPIS))
        mu, sigma = self.predict_normalised(val)
        z = np.abs(self.normaliser.target(val.target) - mu) / sigma
        scale = np.quantile(z, 0.9, axis=0) / Z90
        self.calibration = np.clip(scale, 0.25, 10.0)
        return self.calibration

    # ------------------------------------------------------------ persistence

    def to(self, device: str | torch.device) -> WorldModel:
        for m in self.members:
            m.to(device)
        return self

    def save(self, path: Path) -> Path:
        meta = {
            "format_version": FORMAT_VERSION,
            "config": asdict(self.config),
            "normaliser": self.normaliser.to_dict(),
            "calibration": self.calibration.tolist(),
            "shrink": self.shrink.tolist(),
            "inputs": list(INPUT_KPIS),
            "params": list(PARAM_COLUMNS),
            "targets": list(TARGET_KPIS),
            "info": self.info,
        }
        state = {"meta": json.dumps(meta, default=str)}
        for i, m in enumerate(self.members):
            for k, v in m.state_dict().items():
                state[f"member{i}.{k}"] = v.detach().cpu()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, path)
        return path

    @classmethod
    def load(cls, path: Path, device: str | torch.device = "cpu") -> WorldModel:
        state = torch.load(path, map_location=device, weights_only=True)
        meta = json.loads(state.pop("meta"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"world model file {path} has format {meta.get('format_version')}, expected {FORMAT_VERSION}"
            )
        if (
            meta["targets"] != list(TARGET_KPIS)
            or meta["inputs"] != list(INPUT_KPIS)
            or meta["params"] != list(PARAM_COLUMNS)
        ):
            raise ValueError(f"world model file {path} was trained on another KPI contract; retrain it")
        cfg = ModelConfig(**meta["config"])
        members = []
        for i in range(cfg.members):
            m = MemberNet(cfg, len(TARGET_KPIS))
            prefix = f"member{i}."
            m.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
            members.append(m.to(device))
        return cls(
            cfg,
            Normaliser.from_dict(meta["normaliser"]),
            members,
            np.asarray(meta["calibration"]),
            meta["info"],
            shrink=np.asarray(meta["shrink"]) if "shrink" in meta else None,
        )
