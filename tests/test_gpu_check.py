"""``make gpu-check`` (scripts/gpu_check.py), tested without a GPU.

What can run here: the refusal without CUDA, the dry run (``--list``), the discovery of the
checks, the runner on stand-in commands, the table and summary writer on fake results, the
matmul check's reading of rows that numba's CUDA simulator produced, and the promise that the
benchmarks and ``hpcai`` need nothing a GPU machine's own Python may lack.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import gpu_check as gc
import pytest

from hpcai import has_cuda
from hpcai.launch import parse_json_tail

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"
BENCH = ROOT / "scripts" / "bench"
# What the GPU machine's Python offers besides the standard library (the brief of `make
# gpu-check`, which names transformers; tokenizers, safetensors and huggingface_hub are
# transformers' own requirements): anything else a benchmark imports must be optional.
GPU_MACHINE = {"torch", "numpy", "numba", "llvmlite", "mpi4py", "matplotlib", "hpcai",
               "transformers", "tokenizers", "safetensors", "huggingface_hub"}
NOT_THERE = ("IPython", "ipykernel", "jupyter_client", "myst_nb", "papermill", "jupytext",
             "nbformat", "psutil", "scipy", "yaml", "pandas", "sklearn", "threadpoolctl")
no_gpu_here = pytest.mark.skipif(has_cuda(), reason="checks the refusal on machines without "
                                 "CUDA")


def gpu_check(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


# --------------------------------------------------------------------------- the command line
@no_gpu_here
@pytest.mark.parametrize("args", [[], ["--python", sys.executable]])
def test_without_cuda_it_says_so_and_exits_2(args):
    proc = gpu_check(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no CUDA GPU"), proc.stderr
    assert "make gpu-check" in lines[0] and "PYTHON=" in lines[0]
    assert proc.stdout == ""  # before any work: nothing ran, nothing was written


@pytest.mark.parametrize("args,knob", [(["--budget", "-3"], "--budget"),
                                       (["--python", "/no/such/python"], "--python"),
                                       (["--list", "--only", "fastest"], "--only")])
def test_bad_input_is_one_error_line(args, knob):
    proc = gpu_check(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {knob}"), proc.stderr


@no_gpu_here
def test_make_gpu_check_sets_up_nothing_and_refuses_without_gpu():
    dry = subprocess.run(["make", "-n", "gpu-check"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0 and "scripts/gpu_check.py" in dry.stdout
    assert "pip" not in dry.stdout and "venv" not in dry.stdout  # no `setup`, no network
    proc = subprocess.run(["make", "-s", "gpu-check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")], proc.stderr


def test_list_names_every_check_and_runs_none():
    proc = gpu_check("--list", "--python", sys.executable)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("gpu-check would run")
    names = [ln.split()[0] for ln in lines[1:]]
    for path in BENCH.glob("*.py"):
        if gc.has_gpu_row(path.read_text(encoding="utf-8")):
            assert f"bench:{path.stem}" in names
    assert {"bench:matmul", "bench:gemm", "bench:stream"} <= set(names)
    assert "notebook:ch05_cuda_model" in names
    assert "running" not in proc.stdout


def test_only_picks_checks_by_short_or_full_name():
    proc = gpu_check("--list", "--python", sys.executable, "--only",
                     "matmul,bench:gemm,notebook:ch05_cuda_model")
    assert proc.returncode == 0, proc.stderr
    names = [ln.split()[0] for ln in proc.stdout.splitlines()[1:]]
    assert names == ["bench:gemm", "bench:matmul", "notebook:ch05_cuda_model"]


# --------------------------------------------------------------------------- discovery
def test_launcher_follows_the_imports():
    assert gc.launcher("import torch\nimport torch.distributed as dist\n") == "torchrun"
    assert gc.launcher("from hpcai import dist as hd\n") == "torchrun"
    assert gc.launcher("def f():\n    from mpi4py import MPI\n") == "mpiexec"
    assert gc.launcher("import numpy as np\n# torch.distributed in a comment\n") == "python"
    assert gc.has_gpu_row('SIZES = {\n    "gpu": {"n": 1},\n}\n')
    assert not gc.has_gpu_row('if S.profile == "gpu":\n    pass\n')


def test_distributed_checks_take_one_rank_per_gpu():
    one = {c.name: c for c in gc.bench_checks("py", 1, "mpiexec")}
    two = {c.name: c for c in gc.bench_checks("py", 2, "mpiexec")}
    for check in two.values():
        assert "--profile" in check.command and "gpu" in check.command
        if "torch.distributed.run" in check.command:
            assert "--nproc-per-node=2" in check.command and not check.skip
    for name, need in gc.MIN_RANKS.items():
        if f"bench:{name}" in one:
            assert one[f"bench:{name}"].skip.startswith(f"needs {need} GPUs")
    nompi = gc.bench_checks("py", 1, None)
    assert all(c.skip for c in nompi if c.command[0] == "mpiexec")
    no4py = gc.bench_checks("py", 1, "mpiexec", {"mpi4py": False})
    assert all("mpi4py" in c.skip for c in no4py if c.command[0] == "mpiexec")


def test_benchmark_limits_fit_the_budget():
    checks = gc.bench_checks("py", 1, "mpiexec")
    # every benchmark fits in the budget even at its limit (the notebooks take the rest)
    assert sum(c.timeout_s for c in checks) <= gc.BUDGET_S


def test_notebooks_without_jupyter_are_skipped_with_a_reason():
    checks = gc.notebook_checks("py", {})
    assert checks and all("papermill" in c.skip and not c.essential for c in checks)
    assert not any(c.skip for c in gc.notebook_checks("py", dict.fromkeys(gc.JUPYTER, True)))


# --------------------------------------------------------------------------- running, reporting
def test_run_all_reports_ok_failed_skipped_and_timeouts(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "OUT", tmp_path)
    py = sys.executable
    checks = [
        gc.Check("bench:fake", [py, "-c", "print('noise'); print('{\"rows\": [{}, {}]}')"], 30),
        gc.Check("bench:crash", [py, "-c", "import sys; sys.exit('error: --n bad')"], 30),
        gc.Check("bench:slow", [py, "-c", "import time; time.sleep(60)"], 1),
        gc.Check("bench:gemm", [py, "-c", "print('{\"device\": \"cpu\"}')"], 30),
        gc.Check("bench:absent", ["true"], 30, skip="needs 2 GPUs"),
    ]
    out = {o.name: o for o in gc.run_all(checks, dict(os.environ), budget_s=100)}
    assert (out["bench:fake"].status, out["bench:fake"].result) == ("ok", "2 rows")
    assert out["bench:crash"].status == "FAILED" and "error: --n bad" in out["bench:crash"].result
    assert out["bench:slow"].status == "FAILED" and "stopped after" in out["bench:slow"].result
    assert out["bench:slow"].seconds < 30
    assert out["bench:gemm"].status == "FAILED" and "not on the GPU" in out["bench:gemm"].result
    assert out["bench:absent"].status == "skipped"
    log = Path(out["bench:crash"].log)
    assert log.is_file() and "error: --n bad" in log.read_text()
    # a spent budget: benchmarks count as failed, notebooks as skipped
    late = gc.run_all([gc.Check("bench:x", ["true"], 30),
                       gc.Check("notebook:y", ["true"], 30, essential=False)], {}, budget_s=1)
    assert [(o.status, "budget" in o.result) for o in late] == [("FAILED", True),
                                                                ("skipped", True)]


def test_a_failure_is_reported_by_its_error_line_not_torchruns_report():
    out = """[rank0]:   File "allreduce.py", line 153, in run
[rank0]: ZeroDivisionError: float division by zero
E1201 api.py:1002] failed (exitcode: 1) local_rank: 0 (pid: 14755)
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
  error_file: <N/A>
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
============================================================"""
    assert gc.telling_line(out) == "[rank0]: ZeroDivisionError: float division by zero"
    assert gc.telling_line("just\nthe last line") == "the last line"
    assert gc.telling_line("") == "no output"


def test_table_and_summary_from_fake_results(tmp_path):
    outcomes = [gc.Outcome("bench:matmul", "ok", 12.5, "all results match"),
                gc.Outcome("bench:jacobi", "FAILED", 40.0, "stopped after 40 s (its limit)"),
                gc.Outcome("notebook:ch05_cuda_model", "skipped", 0.0, "no papermill")]
    text = gc.table(outcomes)
    rows = text.splitlines()
    assert rows[0].split() == ["check", "status", "seconds", "result"]
    assert len(rows) == 2 + 3 + 1
    for o, row in zip(outcomes, rows[2:], strict=False):
        assert row.split()[:3] == [o.name, o.status, f"{o.seconds:.1f}"] and o.result in row
    assert "1 failed, 1 skipped" in rows[-1] and "52.5 s" in rows[-1]
    path = tmp_path / "gpu-check" / "summary.json"
    gc.write_summary(outcomes, {"python": "py", "gpus": ["NVIDIA H200"]}, 480, path)
    summary = json.loads(path.read_text())
    assert summary["passed"] is False and summary["budget_s"] == 480
    assert summary["total_s"] == pytest.approx(52.5)
    assert [c["status"] for c in summary["checks"]] == ["ok", "FAILED", "skipped"]
    assert summary["machine"]["gpus"] == ["NVIDIA H200"]


def test_key_results_refuse_runs_that_missed_the_gpu():
    rows = [{"variant": v, "GFLOPs": g, "verified": True, "timer": "cuda_events"}
            for v, g in (("cuda_naive", 1500.0), ("cuda_tiled", 4000.0), ("torch", 45000.0))]
    line = gc.key_result("matmul", {"cuda": "gpu", "rows": rows})
    assert "torch 45,000" in line and line.endswith("all results match")
    with pytest.raises(ValueError, match="torch"):
        gc.key_result("matmul", {"cuda": "none", "rows": rows[:2]})
    with pytest.raises(ValueError, match="device copy"):
        gc.key_result("stream", {"triad_GBps": 10.0})
    coll = {"backend": "gloo", "world": 2, "rows": [{"busbw_GBps": 3.0}]}
    with pytest.raises(ValueError, match="NCCL"):
        gc.key_result("nccl_tests", coll)
    assert "best busbw 3" in gc.key_result("nccl_tests", {**coll, "backend": "nccl"})
    gemm = {"device": "cuda", "peak_GFLOPs_by_dtype": {"float32": 5e4, "bfloat16": 7e5}}
    assert gc.key_result("gemm", gemm) == "peak float32 50,000, bfloat16 700,000 GFLOP/s"


@pytest.mark.parametrize("name", ["backprop", "conv", "ddp", "dispatch", "memory",
                                  "parallelism", "train_digits", "train_step"])
def test_part_three_four_results_must_come_from_the_gpu(name):
    with pytest.raises(ValueError, match="not on the GPU"):
        gc.key_result(name, {"device": "cpu", "rows": []})


def test_part_three_four_results_check_correctness():
    bp = {"device": "cuda", "max_rel_err": 1e-15, "flops_counted": 10, "flops_formula": 10,
          "rows": [{"device": "cuda", "GFLOPs": 900.0}]}
    assert "FLOPs = formula" in gc.key_result("backprop", bp)
    with pytest.raises(ValueError, match="FLOPs"):
        gc.key_result("backprop", {**bp, "flops_counted": 12})
    conv = {"device": "cuda", "max_abs_err": 1e-6, "max_abs_err_cuda": 1e-3,
            "rows": [{"impl": i, "device": "cuda", "GFLOPs": 1e4} for i in ("torch", "im2col")]}
    assert "torch/cuda 10,000" in gc.key_result("conv", conv)
    with pytest.raises(ValueError, match="errors"):
        gc.key_result("conv", {**conv, "max_abs_err_cuda": 0.5})
    par = {"device": "cuda:0", "world": 1, "backend": "nccl",
           "rows": [{"max_loss_diff": 2e-7}, {"max_loss_diff": 3e-5}]}
    with pytest.raises(ValueError, match="differs"):
        gc.key_result("parallelism", par)
    ddp = {"device": "cuda:0", "world": 2, "backend": "nccl", "ratio_bucketed_over_torch": 1.1,
           "rows": [{"max_param_diff": 1e-8}, {"max_param_diff": 2e-8}]}
    assert "bucketed/torch 1.10" in gc.key_result("ddp", ddp)
    with pytest.raises(ValueError, match="backend gloo"):
        gc.key_result("ddp", {**ddp, "backend": "gloo"})
    mem = {"device": "cuda", "all_within": False, "rows": [{"rel_err": 0.2}]}
    with pytest.raises(ValueError, match="tolerance"):
        gc.key_result("memory", mem)


SIMULATED = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from hpcai.launch import load_script
mm = load_script("matmul")
assert mm.cuda_mode() == "simulator"
events = mm._event_times
# The simulator's events all read the same clock (zero elapsed time): add 1 us so that a
# rate can be computed. The kernels and the event calls themselves run for real.
mm._event_times = lambda launch, repeats: events(launch, repeats) + 1e-6
A, B = mm.make_inputs(12, "float32")
ref = A.astype(np.float64) @ B.astype(np.float64)
rows = [mm.bench_gpu(v, A, B, ref, 4, 2) for v in ("cuda_naive", "cuda_tiled")]
print(json.dumps({"cuda": mm.cuda_mode(), "rows": rows}))
"""


def test_matmul_check_reads_rows_from_the_cuda_simulator():
    """The CUDA-event timing path of matmul.py, on numba's simulator, feeds the check."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-c", SIMULATED, str(ROOT)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = parse_json_tail(proc.stdout)
    assert [r["variant"] for r in res["rows"]] == ["cuda_naive", "cuda_tiled"]
    assert all(r["verified"] and r["timer"] == "cuda_events" for r in res["rows"])
    with pytest.raises(ValueError, match="no torch rows"):
        gc.key_result("matmul", res)  # torch.matmul needs a real GPU: the check says so
    torch_row = {**res["rows"][-1], "variant": "torch"}  # stand-in for the cuBLAS row
    line = gc.key_result("matmul", {**res, "rows": [*res["rows"], torch_row]})
    assert line.startswith("cuda_naive ") and line.endswith("all results match")


# --------------------------------------------------------------------------- imports
def _optional(node: ast.AST, parents: list[ast.AST], guarded_calls: set[str]) -> bool:
    """An import is optional inside ``try: ... except ImportError`` (or ``TYPE_CHECKING``), or
    in a function that is only called inside such a ``try``."""
    for p in parents:
        if isinstance(p, ast.Try) and any(_catches_import_error(h) for h in p.handlers):
            return True
        if isinstance(p, ast.If) and "TYPE_CHECKING" in ast.dump(p.test):
            return True
        if isinstance(p, ast.FunctionDef) and p.name in guarded_calls:
            return True
    return False


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(getattr(k, "id", None) in {"ImportError", "ModuleNotFoundError", "Exception"}
               or k is None for k in kinds)


def _unguarded_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded_calls = {n.func.id for t in ast.walk(tree) if isinstance(t, ast.Try)
                     and any(_catches_import_error(h) for h in t.handlers)
                     for b in t.body for n in ast.walk(b)
                     if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    found = []

    def walk(node: ast.AST, parents: list[ast.AST]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not getattr(child, "level", 0):
                names = ([a.name for a in child.names] if isinstance(child, ast.Import)
                         else [child.module or ""])
                for name in names:
                    top = name.split(".")[0]
                    if (top not in sys.stdlib_module_names and top not in GPU_MACHINE
                            and not _optional(child, parents, guarded_calls)):
                        found.append(f"{path.name}:{child.lineno}: {name}")
            walk(child, [*parents, child])

    walk(tree, [])
    return found


def test_benchmarks_import_only_what_a_gpu_machine_has():
    """A GPU workstation's own Python has torch, numpy, numba(-cuda), mpi4py, matplotlib:
    every other import of a benchmark must be optional (try/except ImportError)."""
    found = [hit for path in sorted(BENCH.glob("*.py")) for hit in _unguarded_imports(path)]
    assert not found, f"imports a GPU machine's Python may lack: {found}"


BLOCKED_IMPORT = r"""
import importlib, importlib.abc, pkgutil, sys
sys.path.insert(0, sys.argv[1])
BLOCK = set(sys.argv[2:])

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        return None

sys.meta_path.insert(0, Absent())
import hpcai
for info in pkgutil.iter_modules(hpcai.__path__):
    importlib.import_module(f"hpcai.{info.name}")
from pathlib import Path
from hpcai.launch import load_script
for path in sorted(Path(sys.argv[1], "scripts", "bench").glob("*.py")):
    load_script(path.stem)
print("imported")
"""


def test_hpcai_and_benchmarks_import_without_the_jupyter_stack():
    proc = subprocess.run([sys.executable, "-c", BLOCKED_IMPORT, str(ROOT), *NOT_THERE],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr[-3000:]
