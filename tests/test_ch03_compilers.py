"""Chapter 3: the compiler-flags benchmark (scripts/bench/compilers.py) and its C kernels."""

from __future__ import annotations

import platform
import re
import subprocess
import sys

import numpy as np
import pytest

from hpcai import repo_root
from hpcai.launch import LauncherError, load_script, run_script

ROOT = repo_root()

SCRIPT = "scripts/bench/compilers.py"


@pytest.fixture(scope="module")
def bench():
    return load_script("compilers")


def test_every_flag_set_computes_the_right_product(bench):
    a, b = bench.inputs(48, seed=5)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    for flags in bench.FLAG_SETS.values():
        c = np.full((48, 48), np.nan, dtype=np.float32)  # the kernel must overwrite all of it
        bench.load(flags).matmul_fn(a, b, c)()
        assert bench.rel_err(c, ref) < bench.RTOL, flags


X86 = pytest.mark.skipif(platform.machine() != "x86_64", reason="x86-64 code generation")


@X86
def test_dot_in_source_order_is_bit_identical_across_O0_and_O3(bench):
    x = np.random.default_rng(0).uniform(-1, 1, 10_001).astype(np.float32)
    y = np.random.default_rng(1).uniform(-1, 1, 10_001).astype(np.float32)
    exact = float(np.dot(x.astype(np.float64), y.astype(np.float64)))
    got = {s: bench.load(bench.FLAG_SETS[s]).dot_fn(x, y)() for s in ("O0", "O3", "fastmath")}
    assert got["O0"] == got["O3"]
    assert abs(got["fastmath"] - exact) < 1e-3 * abs(exact)


def test_wrong_arrays_are_refused_before_the_call(bench):
    k = bench.load(bench.FLAG_SETS["O2"])
    a = np.zeros((8, 8), dtype=np.float64)
    with pytest.raises(TypeError, match="float32"):
        k.matmul_fn(a, a, a)
    f = np.zeros((8, 8), dtype=np.float32)
    with pytest.raises(TypeError, match="shape"):
        k.matmul_fn(f, f, np.zeros((4, 4), dtype=np.float32))


def test_vectoriser_report_follows_the_flags(bench):
    src = bench.SRC.read_text().splitlines()
    inner = next(i + 1 for i, line in enumerate(src) if "for (int j = 0" in line)
    def vectorised(set_id):
        return any(r.startswith(f"{inner}:") and "vectorized" in r
                   for r in bench.vec_report(bench.FLAG_SETS[set_id], "optimized"))
    assert not vectorised("O0")
    assert vectorised("O3") and vectorised("native")
    major = int(re.search(r"(\d+)\.\d+", bench.compiler_version()).group(1))
    if 12 <= major < 15:  # the very cheap -O2 cost model rejects an unknown trip count
        assert not vectorised("O2")
        missed = bench.vec_report(bench.FLAG_SETS["O2"], "missed")
        assert any(r.startswith(f"{inner}:") for r in missed)


@X86
def test_fast_math_turns_scalar_adds_into_vector_adds(bench):
    def adds(set_id):
        asm = bench.assembly(bench.FLAG_SETS[set_id], "dot")
        ops = [line.split()[0] for line in asm if line.split()]
        return sum(o.startswith("vaddss") for o in ops), sum(o.startswith("vaddps") for o in ops)
    scalar, vector = adds("native")
    assert scalar > 0 and vector == 0         # in-order reduction: one scalar add per element
    scalar, vector = adds("fastmath")
    assert scalar == 0 and vector > 0


def test_build_cache_is_reused(bench):
    p1 = bench.build(bench.FLAG_SETS["O3"])
    mtime = p1.stat().st_mtime_ns
    assert bench.build(bench.FLAG_SETS["O3"]) == p1 and p1.stat().st_mtime_ns == mtime
    assert bench.build(bench.FLAG_SETS["O2"]) != p1


def test_cli_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke", args=["--sets", "O0,native", "--n", "48"])
    assert out["bench"] == "compilers" and out["profile"] == "smoke" and "machine" in out
    assert out["compiler"].startswith("gcc")
    c = {(r["kernel"], r["set"]): r for r in out["c"]}
    assert set(c) == {(k, s) for k in ("matmul", "dot") for s in ("O0", "native")}
    for r in out["c"] + out["python"]:
        assert r["rel_err"] < 1e-3 and r["median_s"] > 0 and r["gflops"] > 0
        assert r["gflops"] == pytest.approx(r["flop"] / r["median_s"] / 1e9)
    assert c[("matmul", "native")]["n"] == 48
    # Optimisation must pay off clearly on a compute-bound kernel, even on a busy machine.
    assert c[("matmul", "native")]["median_s"] < c[("matmul", "O0")]["median_s"] / 2
    names = [r["variant"] for r in out["python"]]
    assert names == ["Python loops", "numba @njit", "C -O3 -march=native", "NumPy a @ b (BLAS)"]


@pytest.mark.parametrize("args,message", [
    (["--sets", "O9"], "error: --sets must be a comma-separated list drawn from O0, O2"),
    (["--n", "0"], "n must be a positive integer"),
    (["--py-n", "100000"], "keep a run in minutes"),
])
def test_bad_input_fails_before_work(args, message):
    with pytest.raises(LauncherError, match=message):
        run_script(SCRIPT, profile="smoke", args=args)


def test_missing_compiler_is_reported(monkeypatch, bench):
    monkeypatch.setenv("CC", "no-such-cc-xyz")
    with pytest.raises(bench.CompileError, match="not found"):
        bench.compiler()


def test_unknown_profile_exits_2():
    proc = subprocess.run([sys.executable, SCRIPT, "--profile", "huge", "--json"],
                          capture_output=True, text=True, cwd=repo_root())
    assert proc.returncode == 2 and "huge" in proc.stderr


def test_fast_math_library_leaves_the_process_float_mode_alone():
    """Loading the -ffast-math build must not switch the loading process to flush-to-zero."""
    code = ("import ctypes, numpy as np\n"
            "from hpcai.launch import load_script\n"
            "c = load_script('compilers')\n"
            "ctypes.CDLL(str(c.build(c.FLAG_SETS['fastmath'])))\n"
            "tiny = np.array([1e-45], dtype=np.float32)\n"
            "print(float(tiny[0] * np.float32(1.0)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split()[-1]) > 0.0, "a subnormal was flushed to zero"
