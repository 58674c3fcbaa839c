"""World-model training throughput and accuracy, printed as markdown for docs/benchmarks.md.

    .venv/bin/python benchmarks/training.py [--shards 6] [--hours 48] [--epochs 60] [--members 5]

Data: synthetic ``fct_shard_kpis`` rows with a known dynamic and parameter
exploration (aegis.worldmodel.synthetic). Throughput: training samples per
second on CPU (single-threaded, the default) and on CUDA when torch sees a GPU
(with utilisation from NVML when available). Accuracy: the world model,
persistence and ridge on held-out time and held-out shards.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from aegis.worldmodel.dataset import build_dataset
from aegis.worldmodel.pipeline import train_with_baselines
from aegis.worldmodel.synthetic import synthetic_kpis
from aegis.worldmodel.train import TrainConfig


def _gpu_utilisation() -> str:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return f"{pynvml.nvmlDeviceGetUtilizationRates(handle).gpu}%"
    except Exception:
        return "n/a (no NVML)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=6)
    parser.add_argument("--hours", type=float, default=48.0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rows = synthetic_kpis(shards=args.shards, hours=args.hours, seed=args.seed)
    ds = build_dataset(rows)
    print(
        f"# World model benchmark\n\ntorch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads available; dataset {ds.content_hash[:12]} {ds.sizes()}\n"
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    outcome = None
    print("| device | members x epochs run | train seconds | samples/s |\n|---|---|---:|---:|")
    for device in devices:
        cfg = TrainConfig(epochs=args.epochs, members=args.members, seed=args.seed, device=device)
        t0 = time.perf_counter()
        result = train_with_baselines(ds, cfg)
        wall = time.perf_counter() - t0
        util = f" (GPU util after: {_gpu_utilisation()})" if device == "cuda" else ""
        print(
            f"| {device}{util} | {result.result.epochs_run} | {wall:.1f} | {result.result.samples_per_second:,.0f} |"
        )
        outcome = outcome or result
    assert outcome is not None
    print("\n## Accuracy (MAE per KPI in KPI units; 90% interval coverage)\n")
    print(outcome.markdown())


if __name__ == "__main__":
    main()
