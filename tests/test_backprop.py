"""Chapter 7: scripts/bench/backprop.py, run directly and as a SLURM job through bench.sbatch.

The hand-written gradients of hpcai/nn.py must equal autograd's to float64 rounding, and the
FLOP count from the shapes must equal FlopCounterMode's exactly: both count the same matrix
products (2 B n_in n_out per layer forward, twice that backward, once for the first layer).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcai.launch import load_script, run_script, sbatch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/bench/backprop.py"
TEMPLATE = ROOT / "scripts" / "slurm" / "bench.sbatch"
KEYS = {"max_rel_err", "flops_counted", "flops_formula", "flops_forward_counted",
        "flops_forward_formula", "flops_terms", "layers", "sizes", "batch", "device",
        "rows", "machine", "settings", "loss_abs_err"}


def check_result(res: dict) -> None:
    assert KEYS <= set(res), KEYS - set(res)
    assert res["bench"] == "backprop" and res["device"] == "cpu"
    assert res["max_rel_err"] < 1e-10, res["max_rel_err"]
    assert res["loss_abs_err"] < 1e-12
    # the same products counted twice: exact equality, not a tolerance
    assert res["flops_counted"] == res["flops_formula"] > 0
    assert res["flops_forward_counted"] == res["flops_forward_formula"]
    assert set(res["flops_counted_by_op"]) == {"aten.addmm", "aten.mm"}
    sizes, B = res["sizes"], res["batch"]
    assert sizes[0] == 64 and sizes[-1] == 10
    by_hand = sum(2 * B * a * b * (2 if i == 0 else 3)
                  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])))
    assert res["flops_formula"] == by_hand
    batches = res["settings"]["batches"]
    torch_rows = [r for r in res["rows"] if r["impl"] == "torch"]
    assert [r["batch"] for r in torch_rows] == batches
    for r in res["rows"]:
        assert r["median_s"] > 0 and r["iqr_s"] >= 0 and r["GFLOPs"] > 0


def test_smoke_gradients_and_flops():
    check_result(run_script(SCRIPT, profile="smoke", timeout=120))


def test_tanh_and_other_shapes():
    res = run_script(SCRIPT, profile="smoke", timeout=120,
                     args=["--hidden", "20,30,40", "--batch", "7", "--activation", "tanh",
                           "--batches", "3", "--repeats", "1"])
    check_result(res)
    assert res["sizes"] == [64, 20, 30, 40, 10] and len(res["layers"]) == 4


def test_without_scikit_learn_synthetic_data_of_the_same_shapes(monkeypatch):
    bp = load_script("backprop")
    X, y, data = bp.digits_batch(5, 0)
    assert data == "digits" and X.shape == (5, 64)
    # scikit-learn absent: neither found (hpcai.nn.load_digits) nor importable
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a:
                        None if name == "sklearn" else real_find_spec(name, *a))
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    X, y, data = bp.digits_batch(5, 0)
    assert data.startswith("synthetic") and X.shape == (5, 64) and y.shape == (5,)
    assert 0 <= X.min() and X.max() <= 1 and 0 <= y.min() and y.max() < 10


@pytest.mark.skipif(shutil.which("sbatch") is None,
                    reason="no SLURM cluster: sbatch is not on the PATH "
                    "(as root: scripts/setup_machine.sh)")
def test_backprop_as_a_job_through_the_template():
    res = sbatch(TEMPLATE, env={"BENCH": "backprop", "PROFILE": "smoke"}, timeout=300)
    assert res["state"] == "COMPLETED" and res["profile"] == "smoke"
    check_result(res)
    text = Path(res["output_file"]).read_text()
    assert "program: scripts/bench/backprop.py" in text   # the template's banner


@pytest.mark.parametrize("bench", [None, "no_such_benchmark"])
def test_template_refuses_a_bad_bench(bench):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH", "SLURM_"))}
    if bench is not None:
        env["BENCH"] = bench
    proc = subprocess.run(["bash", str(TEMPLATE)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: BENCH") and proc.stderr.count("\n") == 1
    assert "{" not in proc.stdout
