"""One rank of a multi-node torchrun job (chapter 3): what it sees, and one all-reduce.

Launched by ``scripts/slurm/torchrun.sbatch`` (one ``torchrun`` per node, a c10d rendezvous on
the first node), every process reads the variables SLURM and torchrun set for it, joins the
process group (gloo), and takes part in one all-reduce of the ranks and one gather of every
rank's view; rank 0 prints one JSON line with all of them.

    BENCH=scripts/slurm/ch03_ranks.py NPROC=1 sbatch -N 2 scripts/slurm/torchrun.sbatch
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

# Set by SLURM for each task of a step (srun starts one torchrun per node) ...
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NODEID",
              "SLURM_PROCID", "SLURM_LOCALID", "SLURMD_NODENAME")
# ... and by torchrun for each process it starts.
TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
                 "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the JSON line (always)")
    parser.add_argument("--profile", default="cpu", help="accepted for the job template")
    parser.parse_args()
    if "RANK" not in os.environ:
        parser.exit(2, "error: run me under torchrun (scripts/slurm/torchrun.sbatch)\n")

    import torch
    import torch.distributed as dist

    t0 = time.perf_counter()
    dist.init_process_group("gloo")
    init_s = time.perf_counter() - t0
    rank, world = dist.get_rank(), dist.get_world_size()
    view = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(),
            "init_s": init_s,
            "env": {k: os.environ.get(k) for k in SLURM_VARS + TORCHRUN_VARS}}
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)                    # 0 + 1 + ... + (world - 1) on every rank
    views: list = [None] * world
    dist.all_gather_object(views, view)
    dist.destroy_process_group()
    if rank == 0:
        print(json.dumps({"world": world, "rank_sum": float(total.item()),
                          "expected_sum": world * (world - 1) / 2, "ranks": views}),
              flush=True)


if __name__ == "__main__":
    main()
