"""Chapter 2: the SLURM job scripts call the same benchmarks, with --json and $PROFILE."""

from __future__ import annotations

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
