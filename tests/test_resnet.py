"""scripts/bench/resnet.py: one process, a 2-rank torchrun launch, a refused value."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench" / "resnet.py"


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def one() -> dict:
    p = _run([sys.executable, str(SCRIPT), "--profile", "smoke", "--json"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two() -> dict:
    p = _run([sys.executable, "-m", "torch.distributed.run", "--standalone",
              "--nproc-per-node", "2", str(SCRIPT), "--profile", "smoke", "--json"])
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_one_process_fields(one: dict) -> None:
    for k in ("samples_per_s", "step_times_s", "peak_bytes", "device", "final_loss",
              "world_size", "global_batch", "lr", "max_param_diff"):
        assert k in one
    assert one["world_size"] == 1 and one["device"] == "cpu"
    assert one["samples_per_s"] > 0 and len(one["step_times_s"]) == 3
    assert 0 < one["final_loss"] < 10
    assert one["max_param_diff"] == 0.0


def test_two_ranks_match_one_process(two: dict, one: dict) -> None:
    assert two["world_size"] == 2 and two["global_batch"] == one["global_batch"]
    assert two["lr"] == one["lr"]
    assert two["max_param_diff"] <= 1e-5
    assert abs(two["final_loss"] - one["final_loss"]) < 1e-4


def test_bad_argument() -> None:
    p = _run([sys.executable, str(SCRIPT), "--profile", "smoke", "--lr-scale", "sqrt"])
    assert p.returncode == 2
    assert p.stderr.strip().startswith("error:")


@pytest.mark.parametrize("args, says", [
    (["--device", "cuda"], "no CUDA GPU"),
    (["--global-batch", "7"], "not divisible by the 2 ranks"),
])
def test_impossible_setting_is_refused_before_work(args: list[str], says: str) -> None:
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA GPU")
    env = {**os.environ, "WORLD_SIZE": "2"}  # as torchrun sets it, before any rank starts
    p = subprocess.run([sys.executable, str(SCRIPT), "--profile", "smoke", "--json", *args],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr[-2000:]
    assert lines[0].startswith("error:") and says in lines[0], lines[0]
    assert "{" not in p.stdout
