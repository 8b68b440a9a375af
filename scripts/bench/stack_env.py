"""What each layer of the launch stack hands the next, as every rank sees it.

    BENCH=stack_env sbatch -N 2 scripts/slurm/torchrun.sbatch           # 2 nodes
    python -m torch.distributed.run --standalone --nproc-per-node=2 \\
        scripts/bench/stack_env.py --profile smoke --json                # 1 node

No training: every rank records

* the variables SLURM set for its task (``slurm``: ``SLURM_JOB_ID``, ``SLURM_NNODES``,
  ``SLURM_NODEID``, ``SLURM_PROCID``, ``SLURM_JOB_NODELIST``, ...; empty outside a job);
* the variables ``torchrun`` set for its process (``torchrun``: ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``, ...);
* with ``hf=1``, what ``transformers.TrainingArguments`` reads from them
  (``trainer``: ``world_size``, ``process_index``, ``local_process_index``,
  ``parallel_mode``, ``device``, and which backend it asked for);
* the process group: its backend, rank and size (``group``), the process id and the
  node (``host``).

Rank 0 gathers every rank's record (``ranks``, ordered by rank) and prints them.
"""

from __future__ import annotations

import os
import socket
import tempfile
from typing import Any

from hpcai.cli import bench_main

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SIZES = {"smoke": {"hf": 0}, "cpu": {"hf": 1}, "gpu": {"hf": 1}, "cluster": {"hf": 1}}
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NODEID",
              "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURMD_NODENAME",
              "SLURM_CPUS_PER_TASK", "SLURM_GPUS_ON_NODE", "SLURM_SUBMIT_DIR")
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                 "ROLE_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                 "OMP_NUM_THREADS")


def check(S: Any) -> None:
    if S.hf not in (0, 1):
        raise ValueError(f"--hf must be 0 or 1, got {S.hf}")


def trainer_view() -> dict[str, Any]:
    """What ``TrainingArguments`` makes of the environment (it may start the group)."""
    import transformers

    with tempfile.TemporaryDirectory() as out:
        args = transformers.TrainingArguments(output_dir=out, report_to=[],
                                              use_cpu=not _cuda())
        return {"world_size": int(args.world_size),
                "process_index": int(args.process_index),
                "local_process_index": int(args.local_process_index),
                "local_rank": int(args.local_rank),
                "parallel_mode": str(args.parallel_mode).split(".")[-1],
                "device": str(args.device),
                "ddp_backend": args.ddp_backend,
                "transformers": transformers.__version__}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(S: Any) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist

    from hpcai import dist as hd

    record: dict[str, Any] = {
        "host": socket.gethostname(),
        "node": hd.node_name(),
        "pid": os.getpid(),
        "slurm": {k: os.environ[k] for k in SLURM_VARS if k in os.environ},
        "torchrun": {k: os.environ[k] for k in TORCHRUN_VARS if k in os.environ},
    }
    if S.hf:
        record["trainer"] = trainer_view()
    started_by = "TrainingArguments" if dist.is_initialized() else "hpcai.dist.init"
    world = hd.init()
    record["group"] = {"backend": str(dist.get_backend()), "rank": dist.get_rank(),
                       "size": dist.get_world_size(), "started_by": started_by,
                       "device": str(world.device)}
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, record)
    hd.teardown()
    if not world.is_root:
        return None
    return {"world": world.size, "ranks": gathered, "torch": torch.__version__}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
