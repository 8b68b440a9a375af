"""Chapter 5: matrix-multiplication kernels (numba CPU, numba.cuda on the simulator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hpcai import has_cuda
from hpcai.launch import LauncherError, load_script, parse_json_tail, run_script
from hpcai.paths import repo_root

SCRIPT = "scripts/bench/matmul.py"


@pytest.fixture(scope="module")
def mm():
    return load_script("matmul")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n,tile", [(1, 4), (7, 4), (33, 8), (64, 64)])
def test_cpu_kernels_match_numpy(mm, n, tile, dtype):
    A, B = mm.make_inputs(n, dtype, seed=n)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    for name, call in (("naive", lambda C: mm.matmul_naive(A, B, C)),
                       ("blocked", lambda C: mm.matmul_blocked(A, B, C, tile)),
                       ("parallel", lambda C: mm.matmul_parallel(A, B, C, tile))):
        C = np.full_like(A, np.nan)          # stale values must be overwritten, not added to
        call(C)
        ok, err = mm.verify(C, ref, dtype)
        assert ok, f"{name} n={n} tile={tile} {dtype}: max abs error {err}"


def test_verify_rejects_a_wrong_product(mm):
    A, B = mm.make_inputs(16)
    C = A @ B
    C[3, 5] += 1e-6
    assert not mm.verify(C, A @ B, "float64")[0]


def test_model_intensity(mm):
    assert mm.model_intensity("naive", 512, 32, 8) == pytest.approx(1 / 8)
    assert mm.model_intensity("cuda_tiled", 4096, 16, 4) == pytest.approx(4.0)
    assert mm.model_intensity("blas", 1200, 1, 8) == pytest.approx(100.0)   # n / 12 in fp64
    assert mm.model_intensity("blocked", 512, 32, 8) > mm.model_intensity("naive", 512, 32, 8)


def test_bad_input_is_refused(mm):
    with pytest.raises(ValueError, match="need 2-D A"):
        mm.check_shapes(np.ones((3, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="float32 or two float64"):
        mm.check_shapes(np.ones((2, 2), dtype=np.int64), np.ones((2, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="unknown variant"):
        mm.resolve_variants("fast")
    assert mm.resolve_variants("cpu") == ["naive", "blocked", "parallel", "blas"]
    assert mm.resolve_variants("blas,naive,blas") == ["blas", "naive"]


SIM_CHECK = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from hpcai.launch import load_script
mm = load_script("matmul")
out = {"mode": mm.cuda_mode(), "checks": []}
add = mm.cuda_kernels(4, "float64")["vector_add"]
x = np.arange(37.0); y = np.ones(37); z = np.zeros(37)
add[10, 4](x, y, z)                      # 40 threads for 37 elements: the guard matters
out["checks"].append(["vector_add", bool(np.array_equal(z, x + y))])
for n, tile in ((5, 4), (9, 4), (8, 8)):
    A, B = mm.make_inputs(n, "float64", seed=n)
    for kind in ("naive", "tiled"):
        ok, err = mm.verify(mm.cuda_matmul(A, B, kind, tile), A @ B, "float64")
        out["checks"].append([f"{kind} n={n} T={tile}", bool(ok)])
A, B = mm.make_inputs(6, "float32")
ok, _ = mm.verify(mm.cuda_matmul(A, B, "tiled", 4), A.astype(float) @ B.astype(float), "float32")
out["checks"].append(["tiled float32", bool(ok)])
print(json.dumps(out))
"""


def test_cuda_kernels_on_the_simulator():
    """The CUDA kernels, run by numba's simulator in a fresh process, agree with NumPy."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", SIM_CHECK, str(repo_root())], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = parse_json_tail(proc.stdout)
    assert out["mode"] == "simulator"
    assert len(out["checks"]) == 8
    failed = [name for name, ok in out["checks"] if not ok]
    assert not failed, f"kernels disagree with NumPy on the simulator: {failed}"


def test_matmul_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke")
    assert out["bench"] == "matmul" and "machine" in out and out["cuda"] == "not used"
    rows = {r["variant"]: r for r in out["rows"]}
    assert list(rows) == ["naive", "blocked", "parallel", "blas"]
    for r in rows.values():
        assert r["verified"] is True and r["max_abs_err"] < 1e-9
        assert r["GFLOPs"] > 0 and r["median_s"] > 0 and r["intensity"] > 0
        assert r["GFLOPs"] == pytest.approx(2 * r["n"] ** 3 / r["median_s"] / 1e9)
    assert set(out["speedups"]) == {"blocked_over_naive", "parallel_over_naive", "blas_over_naive"}


def test_single_variant_and_group_without_gpu():
    out = run_script(SCRIPT, profile="smoke", args=["--variant", "blocked", "--n", "40",
                                                    "--tile", "8"])
    assert [r["variant"] for r in out["rows"]] == ["blocked"] and out["rows"][0]["verified"]
    if not has_cuda():
        # "all" asks for a group: on a machine without a GPU it runs the CPU variants only
        out = run_script(SCRIPT, profile="smoke", args=["--variant", "all", "--n", "24"])
        assert [r["variant"] for r in out["rows"]] == ["naive", "blocked", "parallel", "blas"]


@pytest.mark.skipif(has_cuda(), reason="checks the refusal on machines without a GPU")
def test_cuda_variant_without_gpu_is_refused_clearly():
    with pytest.raises(LauncherError, match="need a CUDA GPU"):
        run_script(SCRIPT, profile="smoke", args=["--variant", "cuda_tiled"])


def test_unknown_variant_is_refused():
    with pytest.raises(LauncherError, match="unknown variant"):
        run_script(SCRIPT, profile="smoke", args=["--variant", "fastest"])


def test_job_script_runs_without_slurm():
    env = dict(os.environ, PROFILE="smoke")
    proc = subprocess.run(["bash", "scripts/slurm/matmul.sbatch", "--n", "32", "--tile", "8"],
                          cwd=repo_root(), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["profile"] == "smoke" and all(r["verified"] for r in out["rows"])


@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
def test_gpu_tiled_beats_naive():
    out = run_script(SCRIPT, profile="gpu", args=["--variant", "gpu", "--n", "2048"])
    rows = {r["variant"]: r for r in out["rows"]}
    assert all(r["verified"] for r in rows.values())
    assert rows["cuda_tiled"]["median_s"] < rows["cuda_naive"]["median_s"]
