"""Training the ensemble: deterministic for a seed, CUDA when present, DDP under torchrun.

Members train one after another, each from its own seed, on the same data in a
seeded order; early stopping keeps the epoch with the best validation NLL.
Under ``torch.distributed`` (see :mod:`aegis.worldmodel.ddp`) each member is
wrapped in ``DistributedDataParallel`` and every rank sees its own shard of
each epoch (``DistributedSampler``), so the same code trains on one CPU or on a
GPU node group.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from aegis.worldmodel.dataset import TARGET_KPIS, Windows
from aegis.worldmodel.model import MemberNet, ModelConfig, Normaliser, WorldModel
from aegis.worldmodel.settings import (
    DEFAULT_BATCH,
    DEFAULT_DEVICE,
    DEFAULT_EPOCHS,
    DEFAULT_HIDDEN,
    DEFAULT_LR,
    DEFAULT_MEMBERS,
    DEFAULT_PATIENCE,
    DEFAULT_SEED,
)

WEIGHT_DECAY = 1e-4
BETA_NLL = 0.5  # beta-NLL (Seitzer et al. 2022): keeps the mean fit sharp under learned variances
GRAD_CLIP = 5.0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = DEFAULT_EPOCHS
    patience: int = DEFAULT_PATIENCE
    batch_size: int = DEFAULT_BATCH
    lr: float = DEFAULT_LR
    hidden: int = DEFAULT_HIDDEN
    layers: int = 1
    members: int = DEFAULT_MEMBERS
    seed: int = DEFAULT_SEED
    device: str = DEFAULT_DEVICE
    # Small GRUs train fastest single-threaded on CPU; more threads mostly contend (10x slower
    # on a loaded 2-core box). Results do not depend on it. None leaves torch's setting alone.
    cpu_threads: int | None = 1

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.members < 1 or self.batch_size < 1 or self.hidden < 1:
            raise ValueError("epochs, members, batch_size and hidden must be positive")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")

    def as_params(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class EpochLog:
    member: int
    epoch: int
    train_loss: float
    val_loss: float
    seconds: float


@dataclass
class TrainResult:
    model: WorldModel
    device: str
    epochs_run: list[int]
    history: list[EpochLog] = field(default_factory=list)
    samples_seen: int = 0
    seconds: float = 0.0

    @property
    def samples_per_second(self) -> float:
        return self.samples_seen / self.seconds if self.seconds > 0 else 0.0


ProgressFn = Callable[[EpochLog], None]


def select_device(requested: str = "auto") -> torch.device:
    """CUDA when present (or asked for), CPU otherwise; an unavailable request is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return device


def set_determinism(seed: int) -> None:
    """Same seed, same weights: seeded generators and deterministic kernels."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def beta_nll(
    mean: torch.Tensor, var: torch.Tensor, target: torch.Tensor, beta: float = BETA_NLL
) -> torch.Tensor:
    nll = 0.5 * (torch.log(var) + (target - mean) ** 2 / var)
    if beta > 0:
        nll = nll * var.detach() ** beta
    return nll.mean()


def _distributed() -> tuple[bool, int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return True, torch.distributed.get_rank(), torch.distributed.get_world_size()
    return False, 0, 1


def fit_world_model(
    train: Windows, val: Windows, config: TrainConfig | None = None, progress: ProgressFn | None = None
) -> TrainResult:
    """Train and calibrate an ensemble on ``train``, early-stopped and calibrated on ``val``."""
    cfg = config or TrainConfig()
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"cannot train on {len(train)} training and {len(val)} validation windows")
    for name, w in (("train", train), ("val", val)):
        if not (np.isfinite(w.kpis).all() and np.isfinite(w.target).all() and np.isfinite(w.action).all()):
            raise ValueError(f"the {name} windows contain NaN or infinite values")
    distributed, rank, world = _distributed()
    device = select_device(cfg.device)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    set_determinism(cfg.seed)
    threads_before = torch.get_num_threads()
    if device.type == "cpu" and cfg.cpu_threads:
        torch.set_num_threads(cfg.cpu_threads)
    try:
        return _fit(train, val, cfg, device, distributed, rank, world, progress)
    finally:
        torch.set_num_threads(threads_before)


def _fit(
    train: Windows,
    val: Windows,
    cfg: TrainConfig,
    device: torch.device,
    distributed: bool,
    rank: int,
    world: int,
    progress: ProgressFn | None,
) -> TrainResult:
    normaliser = Normaliser.fit(train)
    model_cfg = ModelConfig(window=train.window, hidden=cfg.hidden, layers=cfg.layers, members=cfg.members)
    data, (vsteps, vaction, vanchor, vtarget) = _tensors(train, val, normaliser, device)

    members: list[MemberNet] = []
    history: list[EpochLog] = []
    epochs_run: list[int] = []
    seen = 0
    started = time.perf_counter()
    for k in range(cfg.members):
        net, trainable, sampler, loader, opt, sched = _member(
            k, model_cfg, data, cfg, device, distributed, rank, world
        )
        best = (math.inf, -1, {k2: v.detach().clone() for k2, v in net.state_dict().items()})
        for epoch in range(cfg.epochs):
            t0 = time.perf_counter()
            if sampler is not None:
                sampler.set_epoch(epoch)
            trainable.train()
            total, count = 0.0, 0
            for s, a, c, y in loader:
                s, a, c, y = s.to(device), a.to(device), c.to(device), y.to(device)
                mean, var = trainable(s, a, c)
                loss = beta_nll(mean, var, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(trainable.parameters(), GRAD_CLIP)
                opt.step()
                total += loss.item() * len(y)
                count += len(y)
            sched.step()
            seen += count
            net.eval()
            with torch.no_grad():
                vm, vv = net(vsteps, vaction, vanchor)
                val_loss = float(beta_nll(vm, vv, vtarget, beta=0.0))
            log = EpochLog(k, epoch, total / max(count, 1), val_loss, time.perf_counter() - t0)
            history.append(log)
            if progress is not None and rank == 0:
                progress(log)
            if val_loss < best[0] - 1e-4:
                best = (val_loss, epoch, {k2: v.detach().clone() for k2, v in net.state_dict().items()})
            elif epoch - best[1] >= cfg.patience:
                break
        _keep_best(net, best, k)
        members.append(net)
        epochs_run.append(history[-1].epoch + 1)
    seconds = time.perf_counter() - started
    model = _finish(model_cfg, normaliser, members, val, cfg, device)
    return TrainResult(model, str(device), epochs_run, history, seen * world, seconds)


def _tensors(
    train: Windows, val: Windows, normaliser: Normaliser, device: torch.device
) -> tuple[TensorDataset, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The normalised training set (on the CPU, batches move per step) and the validation
    inputs and target, already on ``device``."""
    steps, action, anchor = normaliser.inputs(train)
    data = TensorDataset(
        torch.from_numpy(steps),
        torch.from_numpy(action),
        torch.from_numpy(anchor),
        torch.from_numpy(normaliser.target(train.target)),
    )
    vsteps, vaction, vanchor = (torch.from_numpy(a).to(device) for a in normaliser.inputs(val))
    vtarget = torch.from_numpy(normaliser.target(val.target)).to(device)
    return data, (vsteps, vaction, vanchor, vtarget)


def _member(
    k: int,
    model_cfg: ModelConfig,
    data: TensorDataset,
    cfg: TrainConfig,
    device: torch.device,
    distributed: bool,
    rank: int,
    world: int,
) -> tuple[
    MemberNet,
    nn.Module,
    DistributedSampler[Any] | None,
    DataLoader[Any],
    torch.optim.AdamW,
    torch.optim.lr_scheduler.CosineAnnealingLR,
]:
    """Member ``k``, seeded ``seed * 1000 + k``: its net (DDP-wrapped under torchrun as the
    trainable), its sampler when distributed, its seeded loader, optimiser and schedule."""
    member_seed = cfg.seed * 1000 + k
    torch.manual_seed(member_seed)
    net = MemberNet(model_cfg, len(TARGET_KPIS)).to(device)
    trainable: nn.Module = net
    sampler: DistributedSampler[Any] | None = None
    gen = torch.Generator().manual_seed(member_seed)
    if distributed:
        device_ids = [device.index] if device.type == "cuda" else None
        trainable = nn.parallel.DistributedDataParallel(net, device_ids=device_ids)
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=member_seed)
    loader = DataLoader(
        data,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=gen,
        drop_last=False,
    )
    opt = torch.optim.AdamW(trainable.parameters(), lr=cfg.lr, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    return net, trainable, sampler, loader, opt, sched


def _keep_best(net: MemberNet, best: tuple[float, int, dict[str, torch.Tensor]], k: int) -> None:
    """Member ``k`` back to its best epoch's weights, for inference; a non-finite best loss is divergence."""
    if not math.isfinite(best[0]):
        raise FloatingPointError(f"ensemble member {k} diverged (validation loss is not finite)")
    net.load_state_dict(best[2])
    net.eval()


def _finish(
    model_cfg: ModelConfig,
    normaliser: Normaliser,
    members: list[MemberNet],
    val: Windows,
    cfg: TrainConfig,
    device: torch.device,
) -> WorldModel:
    """The trained members as one ensemble, shrunk and calibrated on ``val``, moved to the CPU."""
    model = WorldModel(model_cfg, normaliser, members, info={"train": cfg.as_params(), "device": str(device)})
    model.fit_shrinkage(val)
    model.calibrate(val)
    model.to("cpu")
    return model
