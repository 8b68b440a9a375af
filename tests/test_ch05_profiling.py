"""Chapter 5, profiling lab: the parsers of perf, py-spy, torch.profiler and nsys output, and
each profiler run for real at a tiny size where this machine has it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hpcai.launch import LauncherError, find_executable, load_script, run_script

SCRIPT = "scripts/bench/profiling.py"


@pytest.fixture(scope="module")
def prof():
    return load_script("profiling")


def test_perf_csv_marks_unsupported_events(prof):
    text = ("# started on Tue\n\n"
            "81.13,msec,task-clock,81130000,100.00,0.972,CPUs utilized\n"
            "2494,,page-faults,81130000,100.00,30.741,K/sec\n"
            "<not supported>,,instructions,0,100.00,,\n")
    got = prof.parse_perf_csv(text)
    assert got["task-clock"] == {"unit": "msec", "supported": True, "value": 81.13,
                                 "raw": "81.13", "metric": 0.972,
                                 "metric_unit": "CPUs utilized"}
    assert got["page-faults"]["value"] == 2494.0
    assert got["instructions"]["supported"] is False and got["instructions"]["value"] is None


def test_raw_stacks_by_function_and_phase(prof):
    raw = ("<module> (p.py:1);run_ladder (p.py:9);python_rung (p.py:5);"
           "matmul_python (p.py:3) 40\n"
           "<module> (p.py:1);run_ladder (p.py:9);python_rung (p.py:5);"
           "matmul_python (p.py:4) 8\n"
           "<module> (p.py:1);run_ladder (p.py:9);numpy_rung (p.py:6) 2\n"
           "<module> (p.py:1);run_ladder (p.py:8);_find_and_load (<frozen x>:3) 5\n"
           "<module> (p.py:2) 1\n")
    stacks = prof.parse_raw_stacks(raw)
    assert sum(stacks.values()) == 56
    table = prof.sample_table(stacks)
    assert table["samples"] == 56
    assert table["self"][0] == ("matmul_python (p.py)", 48)       # lines merged
    assert dict(table["total"])["run_ladder (p.py)"] == 55
    assert table["phases"] == {"python": 48, "numpy": 2, "imports": 5, "other": 1}


def _trace(tmp_path, events):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": events}))
    return path


def test_trace_events_nesting_and_phase(tmp_path, prof):
    ev = [
        {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "tid": 1,
         "ts": 100.0, "dur": 100.0},
        {"ph": "X", "cat": "user_annotation", "name": "forward", "tid": 1, "ts": 101.0,
         "dur": 40.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::linear", "tid": 1, "ts": 102.0,
         "dur": 20.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::addmm", "tid": 1, "ts": 103.0,
         "dur": 15.0},
        {"ph": "X", "cat": "user_annotation", "name": "backward", "tid": 1, "ts": 150.0,
         "dur": 40.0},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "tid": 1, "ts": 151.0, "dur": 9.0},
        {"ph": "M", "name": "thread_name", "tid": 1},
        {"ph": "X", "cat": "kernel", "name": "gemm", "tid": 7, "ts": 0.0, "dur": 1.0},
    ]
    got = {e["name"]: e for e in prof.trace_events(_trace(tmp_path, ev))}
    assert set(got) == {"ProfilerStep#2", "forward", "aten::linear", "aten::addmm",
                        "backward", "aten::mm"}
    assert [got[k]["depth"] for k in ("ProfilerStep#2", "forward", "aten::linear",
                                      "aten::addmm", "aten::mm")] == [0, 1, 2, 3, 2]
    assert got["aten::addmm"]["phase"] == "forward" and got["aten::mm"]["phase"] == "backward"
    assert got["ProfilerStep#2"]["phase"] is None and got["ProfilerStep#2"]["ts"] == 0.0


def test_cuda_split_from_a_trace(tmp_path, prof):
    ev = [{"ph": "X", "cat": "kernel", "name": "sm90_gemm", "ts": 0, "dur": 30.0},
          {"ph": "X", "cat": "kernel", "name": "relu", "ts": 40, "dur": 5.0},
          {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "ts": 0, "dur": 20.0},
          {"ph": "X", "cat": "gpu_memset", "name": "Memset", "ts": 0, "dur": 1.0},
          {"ph": "X", "cat": "cuda_runtime", "name": "cudaMalloc", "ts": 0, "dur": 200.0},
          {"ph": "X", "cat": "cuda_runtime", "name": "cudaMalloc", "ts": 0, "dur": 100.0},
          {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 0, "dur": 4.0},
          {"ph": "X", "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": 0, "dur": 9.0},
          {"ph": "X", "cat": "cuda_driver", "name": "cuLaunchKernelEx", "ts": 0, "dur": 3.0},
          {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 50.0}]
    got = prof.cuda_split(_trace(tmp_path, ev))
    assert got["device_us"] == {"kernel": 35.0, "memcpy": 20.0, "memset": 1.0}
    assert got["api_us"] == {"cudaMalloc": 300.0, "kernel launches": 7.0,
                             "memcpy calls": 9.0}
    assert got["api_calls"]["cudaMalloc"] == 2 and got["api_calls"]["kernel launches"] == 2


def test_nsys_stats_tables(prof):
    text = """
Generating SQLite file step.sqlite from step.nsys-rep
** CUDA API Summary (cuda_api_sum):

 Time (%)  Total Time (ns)  Num Calls   Avg (ns)   Med (ns)  Name
 --------  ---------------  ---------  ---------  ---------  ---------------------
     81.2       12,345,678          6  2,057,613  1,000,000  cudaMalloc
     10.1        1,534,000         40     38,350     30,000  cudaLaunchKernel

** CUDA GPU Kernel Summary (cuda_gpu_kern_sum):

 Time (%)  Total Time (ns)  Instances  Avg (ns)  Name
 --------  ---------------  ---------  --------  ----------------------------------
    100.0          900,000          3   300,000  void gemm_kernel<float, 128>(int)
"""
    got = prof.parse_nsys_stats(text)
    assert got["cuda_api_sum"] == [
        {"name": "cudaMalloc", "total_ns": 12345678.0, "calls": 6},
        {"name": "cudaLaunchKernel", "total_ns": 1534000.0, "calls": 40}]
    assert got["cuda_gpu_kern_sum"] == [
        {"name": "void gemm_kernel<float, 128>(int)", "total_ns": 900000.0, "calls": 3}]


def test_workloads_run_and_refuse_bad_input():
    script = str(load_script("profiling").HERE)
    ok = subprocess.run([sys.executable, script, "workload", "busy", "1000"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["loop_s"] > 0
    bad = subprocess.run([sys.executable, script, "workload", "touch", "bogus", "40", "1"],
                         capture_output=True, text=True, timeout=60)
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:")


def test_small_touch_is_refused():
    with pytest.raises(LauncherError, match="--touch-mib must be above 32"):
        run_script(SCRIPT, profile="smoke", args=["--parts", "perf", "--touch-mib", "8"])


def test_perf_counts_first_touch():
    out = run_script(SCRIPT, profile="smoke", args=["--parts", "perf", "--touch-reps", "2",
                                                    "--busy-iters", "1000"])["perf"]
    if not out["ran"]:
        pytest.skip(f"perf cannot count on this machine: {out['why']}")
    assert out["supported"]["task-clock"] and out["supported"]["page-faults"]
    busy = out["busy"]["events"]
    assert busy["task-clock"]["value"] > 0 and busy["page-faults"]["value"] > 0
    t = out["touch"]
    for hint in ("0", "1"):   # fresh pays on both passes, reuse once
        assert t[f"faults_per_fresh_pass_hugepage{hint}"] > 0.5 * t[
            f"faults_reuse_hugepage{hint}"] > 0
    if out["thp"] in ("madvise", "never"):
        assert abs(t["faults_per_fresh_pass_hugepage0"] / t["pages_4k"] - 1) < 0.1


def test_pyspy_samples_the_ladder_and_dumps_the_spinner():
    try:
        find_executable("py-spy")
    except LauncherError:
        pytest.skip("py-spy is not installed")
    out = run_script(SCRIPT, profile="smoke", args=["--parts", "pyspy", "--py-n", "16",
                                                    "--py-reps", "1"])["pyspy"]
    if not out["ran"]:
        pytest.skip(f"py-spy cannot read processes here: {out['why']}")
    assert out["samples"] > 0 and out["phases"].get("numba_compile", 0) > 0
    assert out["dump"]["frames"][0].startswith("spin ")
    assert set(out["clock_s"]) == {"python", "numpy", "numba_compile", "numba"}


def test_torch_profiler_sees_the_mlp_step_and_gpu_part_says_why():
    out = run_script(SCRIPT, profile="smoke", args=["--parts", "torch,gpu", "--steps", "1",
                                                    "--width", "32", "--batch", "8"])
    t = out["torch"]
    names = {r["name"] for r in t["rows"]}
    assert {"aten::addmm", "aten::mm", "forward", "backward", "optimizer"} <= names
    assert "aten::addmm" in t["table"]
    phases = {e["phase"] for e in t["events"] if e["depth"] >= 2}
    assert {"forward", "backward", "optimizer"} <= phases
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in t["events"])
    g = out["gpu"]
    if g["ran"]:
        assert g["fresh"]["api_calls"].get("cudaMalloc", 0) > 0
    else:
        assert "cuda" in g["why"].lower()
