"""Distributed training entry for ``torchrun``: one process per GPU (or CPU process with gloo).

    torchrun --nproc_per_node 2 -m aegis.worldmodel.ddp --source rows.parquet --out model.pt

Every rank builds the same dataset (deterministic) and trains the ensemble with
``DistributedDataParallel`` (NCCL on GPUs, gloo on CPU); rank 0 writes the model
file and a JSON report of the held-out metrics next to the baselines'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from aegis.worldmodel.dataset import DatasetError, SplitConfig, build_dataset, load_kpi_frame
from aegis.worldmodel.pipeline import train_with_baselines
from aegis.worldmodel.train import TrainConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aegis.worldmodel.ddp", description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="KPI rows: warehouse .duckdb, .parquet or .csv")
    parser.add_argument("--out", required=True, type=Path, help="model file written by rank 0")
    parser.add_argument("--report", type=Path, help="JSON metrics written by rank 0 (default: <out>.json)")
    parser.add_argument("--window", type=int, default=SplitConfig.window)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--members", type=int, default=TrainConfig.members)
    parser.add_argument("--hidden", type=int, default=TrainConfig.hidden)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("run under torchrun (RANK/WORLD_SIZE are not set)")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    try:
        try:
            ds = build_dataset(load_kpi_frame(args.source), SplitConfig(window=args.window, seed=args.seed))
        except DatasetError as exc:
            if rank == 0:
                print(f"error: {exc}", file=sys.stderr)
            return 2
        cfg = TrainConfig(
            epochs=args.epochs,
            members=args.members,
            hidden=args.hidden,
            batch_size=args.batch_size,
            seed=args.seed,
        )

        def progress(log: object) -> None:
            print(f"[rank0] {log}", flush=True)

        outcome = train_with_baselines(ds, cfg, progress)
        if rank == 0:
            outcome.model.info["distributed"] = {"world_size": dist.get_world_size(), "backend": backend}
            outcome.model.save(args.out)
            report_path = args.report or args.out.with_suffix(".json")
            report_path.write_text(
                json.dumps(
                    {
                        "world_size": dist.get_world_size(),
                        "backend": backend,
                        "dataset_hash": ds.content_hash,
                        "samples_per_second": outcome.result.samples_per_second,
                        "reports": {k: r.as_dict() for k, r in outcome.reports.items()},
                    },
                    indent=2,
                    default=str,
                )
            )
            print(outcome.markdown())
        dist.barrier()
        return 0
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
