"""Chapter 2: the SLURM job scripts call the same benchmarks, with --json and $PROFILE."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["pingpong", "memhier", "io"])
def test_job_script_is_valid_and_calls_its_benchmark(name):
    path = ROOT / "scripts" / "slurm" / f"{name}.sbatch"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "#SBATCH --output=" in text
    command = [line for line in text.splitlines() if f"scripts/bench/{name}.py" in line
               and not line.lstrip().startswith("#")]
    assert len(command) == 1, command
    assert "--json" in command[0] and '"${PROFILE:-cpu}"' in command[0]
    if name == "pingpong":
        assert command[0].lstrip().startswith("mpiexec -n 2")


def test_one_torchrun_template_for_every_distributed_benchmark():
    slurm = ROOT / "scripts" / "slurm"
    path = slurm / "torchrun.sbatch"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    text = path.read_text()
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    launch = [line for line in code if line.lstrip().startswith("srun")]
    assert len(launch) == 1 and "torchrun" in launch[0], launch
    body = "\n".join(code)
    for piece in ('--nnodes="${SLURM_NNODES', "--rdzv-backend=c10d", "--rdzv-endpoint=",
                  "NodeAddr", "--json", '"${PROFILE:-cpu}"'):
        assert piece in body, piece
    # no other job script starts torchrun itself: the template replaced them
    others = [p.name for p in slurm.glob("*.sbatch")
              if p != path and "torchrun" in p.read_text()]
    assert others == []


@pytest.mark.parametrize("bench", [None, "no_such_benchmark"])
def test_torchrun_template_refuses_a_bad_bench(bench):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH", "SLURM_"))}
    if bench is not None:
        env["BENCH"] = bench
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "slurm" / "torchrun.sbatch")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: BENCH") and proc.stderr.count("\n") == 1
