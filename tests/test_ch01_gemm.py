"""Chapter 1: peak FLOP/s from a GEMM size sweep."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hpcai import has_cuda
from hpcai.launch import LauncherError, load_script, run_script
from hpcai.paths import repo_root

SCRIPT = "scripts/bench/gemm.py"


def test_flop_count_and_intensity():
    g = load_script("gemm")
    assert g.gemm_flops(10) == 2000
    assert g.arithmetic_intensity(1200, 8) == pytest.approx(100.0)   # n / 12 in fp64
    assert g.arithmetic_intensity(600, 4) == pytest.approx(100.0)    # n / 6 in fp32


def test_freivalds_accepts_right_and_rejects_wrong_products():
    g = load_script("gemm")
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((200, 200)), rng.standard_normal((200, 200))
    c = a @ b
    assert g.freivalds_ok(a, b, c, 1e-10)
    c[17, 3] += 1e-3
    assert not g.freivalds_ok(a, b, c, 1e-10)


def test_gemm_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke")
    s = out["settings"]
    assert out["bench"] == "gemm" and out["device"] == "cpu" and "machine" in out
    rows = out["rows"]
    assert len(rows) == len(s["sizes"]) * len(s["dtypes"])
    for r in rows:
        assert r["GFLOPs"] > 0 and r["GFLOPs_best"] >= r["GFLOPs"] * 0.999
        assert r["GFLOPs"] == pytest.approx(2 * r["n"] ** 3 / r["median_s"] / 1e9)
    best64 = max(r["GFLOPs_best"] for r in rows if r["dtype"] == "float64")
    assert out["peak_GFLOPs"] == pytest.approx(best64) and out["peak_dtype"] == "float64"
    assert set(out["peak_GFLOPs_by_dtype"]) == {"float64", "float32"}


@pytest.mark.parametrize("args", [["--sizes", "0,64"], ["--dtypes", "float16"],
                                  ["--repeats", "0"]])
def test_bad_input_fails_before_work(args):
    with pytest.raises(LauncherError, match=f"exited with 2[\\s\\S]*error: {args[0]}"):
        run_script(SCRIPT, profile="smoke", args=args)


@pytest.mark.skipif(has_cuda(), reason="this machine has a GPU")
def test_gpu_profile_is_refused_without_cuda():
    proc = subprocess.run([sys.executable, SCRIPT, "--profile", "gpu", "--json"],
                          capture_output=True, text=True, cwd=repo_root())
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr


@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
def test_gpu_sweep_times_torch_on_the_device():
    out = run_script(SCRIPT, profile="gpu", args=["--sizes", "512,1024", "--repeats", "3"])
    assert out["device"] == "cuda" and {r["dtype"] for r in out["rows"]} == {"float32", "bfloat16"}
    assert all(r["library"] == "torch" and r["GFLOPs"] > 0 for r in out["rows"])
