"""One task of a SLURM job step (chapter 3): report where it runs and do a share of the work.

Task ``r`` of ``T`` (SLURM_PROCID, SLURM_NTASKS) sums the squares i*i for the i in
``range(r, n, T)`` and prints one JSON line; the tasks' sums add up to (n-1) n (2n-1) / 6.
Outside SLURM it runs as task 0 of 1.

    srun --ntasks=2 python scripts/slurm/ch03_task.py --n 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time

# The variables slurmd sets for every task of a step (a selection; `env | grep SLURM_` shows all).
SLURM_VARS = (
    "SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS",
    "SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_NODE", "SLURM_JOB_NODELIST", "SLURM_ARRAY_TASK_ID",
)


def sum_of_squares(n: int, rank: int, size: int) -> int:
    """The sum of i*i over this task's share of 0..n-1 (a cyclic split)."""
    return sum(i * i for i in range(rank, n, size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="sum the squares below n")
    ns = parser.parse_args()
    if ns.n < 1:
        parser.error(f"--n must be positive, got {ns.n}")
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    size = int(os.environ.get("SLURM_NTASKS", "1"))
    start = time.perf_counter()
    part = sum_of_squares(ns.n, rank, size)
    print(json.dumps({
        "task": rank, "ntasks": size, "n": ns.n, "partial_sum": part,
        "seconds": time.perf_counter() - start, "host": socket.gethostname(), "pid": os.getpid(),
        "cpus_visible": len(os.sched_getaffinity(0)),
        "env": {k: os.environ[k] for k in SLURM_VARS if k in os.environ},
    }), flush=True)


if __name__ == "__main__":
    main()
