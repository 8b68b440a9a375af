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


def test_freivalds_exact_for_integer_products():
    g = load_script("gemm")
    rng = np.random.default_rng(1)
    a, b = (rng.integers(-128, 128, (96, 96)).astype(np.int8) for _ in range(2))
    c = a.astype(np.int32) @ b.astype(np.int32)
    assert g.freivalds_exact(a, b, c)
    c[5, 7] += 1
    assert not g.freivalds_exact(a, b, c)


def test_per_cycle_table_follows_the_flags():
    g = load_script("gemm")
    spr = {"avx512f", "fma", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}
    t = g.per_cycle(spr)
    assert t["float64"]["ops"] == 32 and t["float32"]["ops"] == 64
    assert t["bfloat16"]["ops"] == 1024 and t["bfloat16"]["vector"]["ops"] == 128
    assert t["int8"]["ops"] == 2048 and t["int8"]["vector"]["ops"] == 256
    laptop = g.per_cycle({"fma", "avx2"})
    assert laptop["float64"]["ops"] == 16 and "bfloat16" not in laptop
    assert g.per_cycle(set()) == {}


def test_clock_sources_and_theoretical_peak():
    g = load_script("gemm")
    cpuinfo = "cpu MHz\t\t: 2600.000\nbogomips\t: 5200.00\nflags\t\t: fpu avx512f fma\n"
    c = g.clock_candidates(cpuinfo=cpuinfo, lscpu="CPU(s): 2\n")
    assert c["/proc/cpuinfo cpu MHz"] == pytest.approx(2.6)
    assert c["BogoMIPS / 2"] == pytest.approx(2.6) and c["lscpu CPU max MHz"] is None
    assert g.cpu_flags(cpuinfo) == {"fpu", "avx512f", "fma"}
    th = g.theoretical_peaks(clock_ghz=3.0, cores=4, flags={"avx512f", "amx_bf16"})
    assert th["clock_source"] == "given (--clock-ghz)"
    assert th["peak_GFLOPs_by_dtype"]["float64"] == pytest.approx(4 * 3.0 * 32)
    assert th["peak_GFLOPs_by_dtype"]["bfloat16"] == pytest.approx(4 * 3.0 * 1024)


def test_gemm_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke")
    s = out["settings"]
    assert out["bench"] == "gemm" and out["device"] == "cpu" and "machine" in out
    rows = out["rows"]
    assert len(rows) == len(s["sizes"]) * len(s["dtypes"])
    for r in rows:
        assert r["GFLOPs"] > 0 and r["GFLOPs_best"] >= r["GFLOPs"] * 0.999
        assert r["GFLOPs"] == pytest.approx(2 * r["n"] ** 3 / r["median_s"] / 1e9)
        assert r["library"] == ("numpy" if r["dtype"] in ("float64", "float32") else "torch")
    best64 = max(r["GFLOPs_best"] for r in rows if r["dtype"] == "float64")
    assert out["peak_GFLOPs"] == pytest.approx(best64) and out["peak_dtype"] == "float64"
    peaks = out["peak_GFLOPs_by_dtype"]
    assert set(peaks) == {"float64", "float32", "bfloat16", "int8"}
    # the bf16 peak is torch.matmul's own best rate in this run
    best16 = max(r["GFLOPs_best"] for r in rows if r["dtype"] == "bfloat16")
    assert peaks["bfloat16"] == pytest.approx(best16)
    th = out["theoretical"]
    assert th["cores"] >= 1 and set(th["clock_candidates_GHz"]) >= {"/proc/cpuinfo cpu MHz"}
    assert set(out["onednn"]) == {"bfloat16", "int8"}


@pytest.mark.parametrize("args", [["--sizes", "0,64"], ["--dtypes", "float16"],
                                  ["--repeats", "0"], ["--clock-ghz", "50"]])
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
