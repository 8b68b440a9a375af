"""Chapter 8: the training script (scripts/bench/train_digits.py) directly and as a SLURM job.

Bad command-line values are covered by tests/test_cli_errors.py (it globs every script).
The job test skips only when `sbatch` is not on the PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from hpcai import repo_root
from hpcai.launch import run_script, sbatch

SCRIPT = "scripts/bench/train_digits.py"
KEYS = ("samples_per_s", "samples_per_s_iqr", "test_acc", "train_loss", "epochs", "steps",
        "wall_s", "history", "machine", "device", "settings")


def check_result(res: dict, epochs: int) -> None:
    for key in KEYS:
        assert key in res, key
    assert res["bench"] == "train_digits" and res["device"] == "cpu"
    assert res["epochs"] == epochs == len(res["history"])
    assert res["samples_per_s"] > 0 and res["wall_s"] > 0
    assert 0.6 <= res["test_acc"] <= 1.0, res["test_acc"]
    losses = [row["loss"] for row in res["history"]]
    assert losses[-1] < losses[0], losses
    assert res["steps"] == epochs * -(-res["n_train"] // res["settings"]["batch"])


def test_smoke_json():
    res = run_script(SCRIPT, profile="smoke")
    check_result(res, res["settings"]["epochs"])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_knobs_reach_the_run(optimizer):
    lr = "0.2" if optimizer == "sgd" else "0.01"
    res = run_script(SCRIPT, profile="smoke",
                     args=["--optimizer", optimizer, "--lr", lr, "--batch", "32",
                           "--epochs", "4", "--hidden", "48", "--schedule", "constant"])
    assert res["settings"]["optimizer"] == optimizer and res["sizes"] == [64, 48, 10]
    assert all(row["lr"] == float(lr) for row in res["history"])
    check_result(res, 4)


def test_one_log_line_per_epoch_then_json():
    proc = subprocess.run([sys.executable, SCRIPT, "--profile", "smoke", "--json"],
                          capture_output=True, text=True, cwd=repo_root(), timeout=300,
                          env={"PYTHONPATH": str(repo_root()), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("{")
    assert sum(line.startswith("epoch ") for line in lines) == 3


def test_warmup_must_be_shorter_than_training():
    proc = subprocess.run([sys.executable, SCRIPT, "--epochs", "2", "--warmup", "2"],
                          capture_output=True, text=True, cwd=repo_root(), timeout=300)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --warmup")


@pytest.mark.skipif(shutil.which("sbatch") is None,
                    reason="no SLURM cluster: sbatch is not on the PATH "
                    "(as root: scripts/setup_machine.sh)")
def test_bench_sbatch_runs_train_digits():
    job = sbatch("scripts/slurm/bench.sbatch", args=["--epochs", "2"],
                 env={"BENCH": "train_digits", "PROFILE": "smoke"}, timeout=300)
    assert job["state"] == "COMPLETED"
    check_result(job, 2)
    with open(job["output_file"]) as f:
        log = f.read().splitlines()
    assert log[0].startswith("# node:") and "train_digits.py" in log[0]
    assert sum(line.startswith("epoch ") for line in log) == 2
