"""Chapter 1: STREAM with numba kernels and the C/OpenMP triad reference."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hpcai.launch import LauncherError, load_script, run_script
from hpcai.paths import repo_root

SCRIPT = "scripts/bench/stream.py"
KERNELS = ("copy", "scale", "add", "triad")


def test_bytes_are_counted_as_stream_counts_them():
    st = load_script("stream")
    n = 1_000_000
    assert st.gbps("copy", n, 1.0) == pytest.approx(2 * 8 * n / 1e9)
    assert st.gbps("scale", n, 1.0) == pytest.approx(2 * 8 * n / 1e9)
    assert st.gbps("add", n, 1.0) == pytest.approx(3 * 8 * n / 1e9)
    assert st.gbps("triad", n, 0.5) == pytest.approx(2 * 3 * 8 * n / 1e9)


def test_numba_kernels_match_numpy():
    st = load_script("stream")
    rng = np.random.default_rng(1)
    a, b, c = (rng.standard_normal(10_001) for _ in range(3))
    a0, b0, c0 = a.copy(), b.copy(), c.copy()
    st.copy(a, c)
    np.testing.assert_array_equal(c, a0)
    st.scale(b, c, 3.0)
    np.testing.assert_allclose(b, 3.0 * a0)
    st.add(a, b, c)
    np.testing.assert_allclose(c, a0 + 3.0 * a0)
    st.triad(a, b, c, 3.0)
    np.testing.assert_allclose(a, b + 3.0 * c)
    assert not np.allclose(b0, b) and not np.allclose(c0, c)


def test_stream_check_catches_a_wrong_array():
    st = load_script("stream")
    a, b, c = (np.empty(1000) for _ in range(3))
    st.first_touch(a, b, c)
    st.stream_kernels(a, b, c, 2)
    st.check_stream(a, b, c, 2)
    b[::7] += 1.0
    with pytest.raises(AssertionError, match="array b"):
        st.check_stream(a, b, c, 2)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_c_triad_computes_the_triad():
    st = load_script("stream")
    dll = st.build_c_triad()
    rng = np.random.default_rng(2)
    b, c = rng.standard_normal(4097), rng.standard_normal(4097)
    a = np.zeros_like(b)
    dll.stream_triad(a, b, c, 3.0, a.size, 2)
    np.testing.assert_allclose(a, b + 3.0 * c, rtol=1e-12, atol=1e-12)  # FMA rounds once
    a[:] = 0.0
    dll.stream_triad_streaming(a, b, c, 3.0, a.size, 2)
    np.testing.assert_allclose(a, b + 3.0 * c, rtol=1e-12, atol=1e-12)  # FMA rounds once


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
def test_c_file_also_builds_as_a_standalone_program(tmp_path):
    src = repo_root() / "scripts" / "bench" / "c" / "stream_triad.c"
    exe = tmp_path / "stream_triad"
    subprocess.run(["gcc", "-O3", "-march=native", "-fopenmp", "-Wall", "-Werror", str(src),
                    "-o", str(exe)], check=True)
    proc = subprocess.run([str(exe), "100000", "3"], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"}, check=True)
    import json

    out = json.loads(proc.stdout)
    assert out["errors"] == 0 and out["n"] == 100000 and len(out["triad_s"]) == 3
    bad = subprocess.run([str(exe), "-5", "3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "positive integer" in bad.stderr


def test_auto_size_follows_the_believed_cache_and_the_floor():
    from hpcai import caches

    st = load_script("stream")
    believed = st.believed_llc_bytes()
    reported = st.last_level_cache_bytes()
    if reported is not None:
        assert believed <= reported
    for factor in (2, 4):
        nbytes = 8 * st.auto_n(factor)
        limit = st.available_memory_bytes() // 4 // 3
        if limit > caches.ARRAY_FLOOR_BYTES:      # memory does not cap it
            assert nbytes >= caches.ARRAY_FLOOR_BYTES
            assert nbytes >= min(factor * (believed or caches.DEFAULT_LLC_BYTES), limit) - 8


def test_numba_copy_becomes_memcpy_and_triad_does_not():
    st = load_script("stream")
    copy = st.code_evidence(st.copy)
    triad = st.code_evidence(st.triad)
    assert copy["llvm_memcpy"] >= 1 and triad["llvm_memcpy"] == 0
    assert copy["asm_movnt"] == 0 == triad["asm_movnt"]   # the stores are glibc's choice


def test_copy_at_sizes_and_the_glibc_threshold():
    st = load_script("stream")
    rows = st.copy_at_sizes([10_000, 20_000], 2)
    assert [r["n"] for r in rows] == [10_000, 20_000] and all(r["GBps"] > 0 for r in rows)
    nt = st.memcpy_nt_threshold_bytes()
    assert nt is None or nt > 0


def test_stream_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke")
    assert out["bench"] == "stream" and "machine" in out
    assert out["n"] == out["settings"]["n"] == 2_000_000
    assert out["threads"] >= 1
    assert out["llc_believed_MiB"] <= out["llc_MiB"] or out["llc_MiB"] == 0
    assert out["copy_chunk_MiB"] == pytest.approx(8 * out["n"] / out["threads"] / 2**20)
    for k in KERNELS:
        assert out[f"{k}_GBps"] > 0
        assert out[f"{k}_GBps"] >= out[f"{k}_GBps_median"] * 0.999   # best >= median
        assert len(out["times_s"][k]) == out["settings"]["repeats"]
    if shutil.which("gcc"):
        assert out["c_triad_GBps"] > 0 and out["c_triad_streaming_GBps"] > 0
        assert out["triad_ratio"] == pytest.approx(
            out["paired_numba_triad_GBps"] / out["c_triad_GBps"])
        assert len(out["paired_times_s"]["c"]) == len(out["paired_times_s"]["numba"])


def test_missing_compiler_skips_the_c_part_with_a_reason():
    out = run_script(SCRIPT, profile="smoke", args=["--repeats", "1"],
                     env={"CC": "no-such-compiler-xyz"})
    assert out["c_triad_GBps"] is None and out["triad_ratio"] is None
    assert "not found" in out["c_skipped"]
    assert out["triad_GBps"] > 0   # the numba part still ran


@pytest.mark.parametrize("args", [["--n", "-5"], ["--repeats", "0"], ["--threads", "100000"]])
def test_bad_input_fails_before_work(args):
    with pytest.raises(LauncherError, match=f"exited with 2[\\s\\S]*error: {args[0]}"):
        run_script(SCRIPT, profile="smoke", args=args)


def test_unknown_profile_exits_with_a_message():
    proc = subprocess.run([sys.executable, SCRIPT, "--profile", "laptop"], capture_output=True,
                          text=True, cwd=repo_root())
    assert proc.returncode == 2 and "unknown profile 'laptop'" in proc.stderr


def test_job_script_runs_the_benchmark_without_slurm():
    """The job script is plain bash: run it directly and read the JSON line it prints."""
    env = {**os.environ, "PROFILE": "smoke",
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}
    proc = subprocess.run(["bash", "scripts/slurm/stream.sbatch", "--repeats", "1"],
                          capture_output=True, text=True, cwd=repo_root(), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["bench"] == "stream" and out["profile"] == "smoke" and out["triad_GBps"] > 0
