#!/usr/bin/env python3
"""Check a GPU workstation: run every GPU path of the book on its CUDA GPU, in minutes.

    make gpu-check                             # or: python3 scripts/gpu_check.py
    make gpu-check PYTHON=/opt/conda/bin/python
    python3 scripts/gpu_check.py --list        # what would run, without running it
    python3 scripts/gpu_check.py --only matmul,gemm

What runs, in this order, each check with its own time limit and all of them together within
``--budget`` seconds (580, under ten minutes):

1. every benchmark of ``scripts/bench/`` whose size table has a ``gpu`` row, at that profile:
   as a plain ``python`` program; under ``torchrun`` with one rank per GPU (NCCL) when it uses
   ``torch.distributed``; under ``mpiexec -n 2`` when it uses ``mpi4py``. Among them the
   numba.cuda matmul kernels timed with CUDA events against ``torch.matmul`` (matmul.py), the
   device GEMM sweep (gemm.py), the device copy bandwidth (stream.py) and the NCCL
   collectives (nccl_tests.py, allreduce.py, jacobi.py).
2. every notebook with a ``gpu`` profile, executed at that profile by papermill, when the
   Python has the Jupyter stack; otherwise each notebook gets one ``skipped`` line saying so.

The Python is the one named by ``--python`` (``make gpu-check PYTHON=...``), or else the first
of ``.venv/bin/python`` and ``python3`` whose PyTorch sees a CUDA GPU: on a GPU machine that
is its own CUDA build of PyTorch, not the CPU-only pin of requirements.txt. Nothing is
installed and nothing is downloaded. This file itself needs only the standard library.

A benchmark that gains a ``gpu`` row joins by itself; give it a limit in ``TIMEOUT_S`` (and
in ``ARGS`` the settings that keep it within that limit, if its gpu row is larger) and, if it
has a GPU part, a line in :func:`key_result` that fails when that part did not run.

The table is printed and written to ``_build/gpu-check/summary.json``; each check's full
output is in ``_build/gpu-check/logs/``. Exit status: 0 when every check that ran passed,
1 when one failed, 2 (before any work) on bad input or when no CUDA GPU is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "_build" / "gpu-check"
BUDGET_S = 580
# Seconds a benchmark may take at its gpu profile, start-up included (others: DEFAULT_S).
# Sized for one GPU and a 16-core host; together they leave time for the notebooks. These
# are estimates: no run on a GPU has measured them yet.
TIMEOUT_S = {"allreduce": 15, "attention": 17, "backprop": 12, "compile": 35,
             "compilers": 10, "conv": 12, "ddp": 15, "ddp_sampler": 10, "ddp_scaling": 15,
             "dispatch": 12, "energy": 25, "flops": 30, "gemm": 15, "io": 10, "jacobi": 15,
             "jacobi_mpi": 12, "llm_ladder": 55, "llm_scaling": 35, "llm_workflow": 40,
             "matmul": 18, "memhier": 12, "memory": 10, "nccl_tests": 15, "overheads": 12,
             "parallelism": 20, "pi_mpi": 10, "pingpong": 10, "placement": 10,
             "quantise": 15,
             "resnet": 12, "scaling": 12, "stream": 12, "train_digits": 10,
             "train_images": 12, "train_step": 15}
# Settings a check adds to the gpu profile, to fit the budget: Part V's gpu rows are the
# reference book's LLaMA-3.2-1B scale, minutes each; the check runs the same code paths on
# a smaller model (the compile rung is checked by compile.py).
ARGS = {"energy": ["--workloads", "matmul,mlp", "--min-seconds", "2"],
        "flops": ["--repeats", "3"],
        "llm_ladder": ["--hidden", "1024", "--layers", "8", "--heads", "16",
                       "--max-batch", "16", "--steps", "5", "--compile", "0"],
        "llm_scaling": ["--hidden", "1024", "--layers", "8", "--heads", "16",
                        "--steps", "5"],
        "llm_workflow": ["--pre-chars", "1000000", "--pre-steps", "300",
                         "--ft-steps", "100"]}
DEFAULT_S = 20
NOTEBOOK_S = 120
PROGRAMS = {"compilers": os.environ.get("CC", "gcc")}  # programs a benchmark runs
MIN_RANKS = {"allreduce": 2}  # its report divides by the bus bandwidth, 0 for one rank
MPI_RANKS = 2  # pingpong needs exactly two
JUPYTER = ("papermill", "jupytext", "ipykernel", "myst_nb", "yaml")

PROBE = r"""
import importlib.util, json, sys
out = {"python": sys.executable, "version": sys.version.split()[0], "torch": None,
       "cuda": False, "gpus": [], "why": ""}
try:
    import torch
    out.update(torch=torch.__version__, cuda=torch.cuda.is_available())
    out["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if not out["cuda"]:
        out["why"] = f"torch {torch.__version__}: torch.cuda.is_available() is False"
except Exception as err:
    out["why"] = f"cannot import torch ({type(err).__name__}: {err})"
out["modules"] = {m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}
print(json.dumps(out))
"""


@dataclass
class Check:
    name: str  # "bench:gemm", "notebook:ch05_cuda_model"
    command: list[str]
    timeout_s: float
    skip: str = ""  # why it cannot run here; "" means it runs
    essential: bool = True  # benchmarks always run; notebooks may be skipped for time


@dataclass
class Outcome:
    name: str
    status: str  # ok | FAILED | skipped
    seconds: float = 0.0
    result: str = ""  # the key result, or why it failed or was skipped
    log: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # the benchmark's JSON


# --------------------------------------------------------------------------- the Python
def probe(python: str) -> dict[str, Any]:
    """What ``python`` offers: torch and its GPUs, and which optional modules it has."""
    try:
        proc = subprocess.run([python, "-c", PROBE, "mpi4py", *JUPYTER],
                              capture_output=True, text=True, timeout=180)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as err:
        return {"python": python, "cuda": False, "gpus": [], "modules": {},
                "why": f"cannot run it ({type(err).__name__})"}


def find_python(given: str | None) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The probe of the first candidate whose torch sees a CUDA GPU (or None), and the
    probes of the candidates before it."""
    venv = ROOT / ".venv" / "bin" / "python"
    if given:
        candidates = [given]
    else:
        candidates = [str(venv)] if venv.exists() else []
        candidates += [p for p in [shutil.which("python3")] if p]
    probes = []
    for python in candidates:
        info = probe(python)
        if info.get("cuda"):
            return info, probes
        probes.append(info)
    return None, probes


# --------------------------------------------------------------------------- the checks
def has_gpu_row(text: str) -> bool:
    """True when a size table in ``text`` has a ``"gpu": {...}`` row."""
    return re.search(r'^\s*"gpu"\s*:\s*\{', text, re.MULTILINE) is not None


def has_gpu_code(text: str) -> bool:
    """True when the code cells of a MyST notebook name the gpu profile, CUDA or NCCL."""
    cells = re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    return re.search(r'"gpu"|\bcuda\b|\bnccl\b', "\n".join(cells), re.IGNORECASE) is not None


def launcher(text: str) -> str:
    """How a benchmark is started: ``mpiexec``, ``torchrun`` or ``python``."""
    if re.search(r"^\s*(from|import) mpi4py", text, re.MULTILINE):
        return "mpiexec"
    if re.search(r"^\s*(from|import) (torch\.distributed|hpcai\.dist)\b|"
                 r"^\s*from hpcai import .*\bdist\b", text, re.MULTILINE):
        return "torchrun"
    return "python"


def bench_checks(python: str, n_gpus: int, mpiexec: str | None,
                 modules: dict[str, bool] | None = None) -> list[Check]:
    """One check per benchmark with a gpu row; ``modules``: what the probe found."""
    checks = []
    for path in sorted((ROOT / "scripts" / "bench").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if not has_gpu_row(text):
            continue
        name, how = path.stem, launcher(text)
        script = [str(path.relative_to(ROOT)), "--profile", "gpu", "--json",
                  *ARGS.get(path.stem, [])]
        skip = ""
        if name in PROGRAMS and shutil.which(PROGRAMS[name]) is None:
            skip = f"needs {PROGRAMS[name]}, which is not on the PATH"
        if how == "torchrun":
            need = MIN_RANKS.get(name, 1)
            if n_gpus < need:
                skip = skip or f"needs {need} GPUs (one rank per GPU), {n_gpus} found"
            cmd = [python, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc-per-node={n_gpus}", *script]
        elif how == "mpiexec":
            if mpiexec is None or (modules or {}).get("mpi4py") is False:
                skip = skip or (f"mpiexec is neither next to {python} nor on the PATH"
                                if mpiexec is None else "this Python has no mpi4py")
            cmd = [mpiexec or "mpiexec", "-n", str(MPI_RANKS), python, *script]
        else:
            cmd = [python, *script]
        checks.append(Check(f"bench:{name}", cmd, TIMEOUT_S.get(name, DEFAULT_S), skip))
    return checks


def notebook_checks(python: str, modules: dict[str, bool]) -> list[Check]:
    lacking = [m for m in JUPYTER if not modules.get(m)]
    checks = []
    for path in sorted((ROOT / "notebooks").glob("*.md")):
        if not has_gpu_code(path.read_text(encoding="utf-8")):
            continue
        skip = f"this Python has no {', '.join(lacking)} (the Jupyter stack)" if lacking else ""
        cmd = [python, "scripts/run_notebooks.py", "--profile", "gpu",
               "--out", _shown(OUT / "notebooks"), str(path.relative_to(ROOT))]
        checks.append(Check(f"notebook:{path.stem}", cmd, NOTEBOOK_S, skip, essential=False))
    return checks


def find_mpiexec(python: str) -> str | None:
    beside = Path(python).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


# --------------------------------------------------------------------------- key results
def _g(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


# The one-line result of the benchmarks that time the host (their gpu profile has no GPU part).
HEADLINE = {
    "compilers": lambda r: f"{len(r['c'])} C builds timed, "
                           f"best {_g(max(x['gflops'] for x in r['c']))} GFLOP/s",
    "io": lambda r: f"large file write {_g(r['large_write_GBps'])} GB/s, "
                    f"read {_g(r['large_read_GBps'])} GB/s",
    "memhier": lambda r: f"read up to {_g(max(x['read_GBps'] for x in r['rows']))} GB/s, "
                         f"latency {_g(r['rows'][-1]['latency_ns'])} ns at the largest size",
    "pi_mpi": lambda r: f"pi to {r['error']:.1e} on {r['ranks']} ranks",
    "pingpong": lambda r: f"alpha {_g(r['alpha_us'])} us, beta {_g(r['beta_GBps'])} GB/s",
    "scaling": lambda r: f"speedup {_g(r['speedup_max'])} on {r['workers'][-1]} threads",
}


def key_result(name: str, res: dict[str, Any]) -> str:
    """One line of what a benchmark found; raises ValueError when its GPU path did not run."""
    rows = res.get("rows") or []
    if name == "matmul":
        got = {r["variant"]: r for r in rows}
        missing = [v for v in ("cuda_naive", "cuda_tiled", "torch") if v not in got]
        if missing:
            raise ValueError(f"no {', '.join(missing)} rows (numba.cuda: {res.get('cuda')})")
        if any(r.get("timer") != "cuda_events" for r in got.values()):
            raise ValueError("a CUDA variant was not timed with CUDA events")
        rates = ", ".join(f"{v} {_g(r['GFLOPs'])}" for v, r in got.items())
        match = all(r.get("verified") for r in rows)
        return f"{rates} GFLOP/s; " + ("all results match" if match else "RESULTS DIFFER")
    if name == "gemm":
        if res.get("device") != "cuda":
            raise ValueError(f"ran on {res.get('device')}, not on the GPU")
        peaks = res["peak_GFLOPs_by_dtype"]
        return "peak " + ", ".join(f"{d} {_g(v)}" for d, v in peaks.items()) + " GFLOP/s"
    if name == "stream":
        if "gpu_copy_GBps" not in res:
            raise ValueError(f"no device copy measured ({res.get('gpu_skipped', 'no GPU')})")
        return (f"device copy {_g(res['gpu_copy_GBps'])} GB/s, "
                f"host triad {_g(res['triad_GBps'])} GB/s")
    if any("busbw_GBps" in r for r in rows):
        if res.get("backend") != "nccl":
            raise ValueError(f"backend {res.get('backend')}, not NCCL")
        best = max(r["busbw_GBps"] for r in rows if "busbw_GBps" in r)
        return f"best busbw {_g(best)} GB/s, {res.get('world')} rank(s), NCCL"
    if name == "jacobi":
        if res.get("backend") != "nccl":
            raise ValueError(f"backend {res.get('backend')}, not NCCL")
        return (f"{res['backend']}, {res['world']} rank(s), max error "
                f"{res['max_err_vs_reference']:.1e}, {_g(max(r['mlups'] for r in rows))} MLUP/s")
    if name in ("backprop", "conv", "ddp", "dispatch", "memory", "parallelism",
                "train_digits", "train_step"):
        return _part_three_four(name, res, rows)
    if name == "overheads":
        launch = res.get("gpu", {}).get("gpu_launch")
        if not launch:
            raise ValueError("no GPU launch measured")
        return f"kernel launch + sync {launch['launch_and_sync_s'] * 1e6:.1f} us"
    if name in ("compile", "train_images"):  # chapter 11: each must have run on the GPU
        if not str(res.get("device", "")).startswith("cuda"):
            raise ValueError(f"ran on {res.get('device')}, not on the GPU")
        if name == "compile":
            return ", ".join(f"{r['model']} x{r['speedup']:.2f} after {r['compile_s']:.1f} s"
                             for r in rows)
        best = max((r.get("samples_per_s", 0.0) for r in rows), default=0.0)
        return f"up to {_g(best)} samples/s over {len(rows)} rows"
    if name in ("attention", "flops", "llm_ladder", "llm_scaling", "llm_workflow"):
        return _part_five(name, res, rows)
    if name == "energy":  # chapter 17: the board's power read through NVML, not modelled
        if not rows or not all(str(r["method"]).startswith("nvml") for r in rows):
            raise ValueError(f"energy not measured through NVML: {res.get('methods')}")
        return ", ".join(f"{r['workload']} {r['precision']} {_g(r['watts'])} W"
                         for r in rows)
    if name == "quantise":  # dynamic int8 runs on the host CPU; the note says so
        if not res["reference_rel_err"] or "int8" not in res["accuracy_change"]:
            raise ValueError("the int8 reference check or the int8 accuracy is missing")
        b1 = {r["model"]: r for r in rows if r["batch"] == 1}
        return (f"int8 x{b1['int8']['speedup']:.2f} at batch 1, accuracy change "
                f"{100 * res['accuracy_change']['int8']:+.2f} points (host CPU path)")
    if name in HEADLINE:
        return HEADLINE[name](res)
    return f"{len(rows)} rows" if rows else f"{len(res)} fields"


def _part_five(name: str, res: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Key results of Part V's benchmarks; each must have run on the GPU and be right."""
    if not str(res.get("device", "")).startswith("cuda"):
        raise ValueError(f"ran on {res.get('device')}, not on the GPU")
    if name == "attention":
        if not res["max_abs_diff"] <= 1e-5:
            raise ValueError(f"hand-written attention differs by {res['max_abs_diff']:.1e}")
        last = max(r["T"] for r in rows)
        at = {r["impl"]: r for r in rows if r["T"] == last}
        return (f"max_abs_diff {res['max_abs_diff']:.1e}; T={last}: eager "
                f"{at['eager']['median_s'] * 1e3:.2f} ms, sdpa "
                f"{at['sdpa']['median_s'] * 1e3:.2f} ms")
    if name == "flops":
        ratio = res["counted_over_formula"]
        if abs(ratio - 1) > 0.05:
            raise ValueError(f"counted FLOPs are {ratio:.3f} x the formula")
        return f"counted/formula {ratio:.4f}, {_g(res['model_flops_per_s'] / 1e9)} GFLOP/s"
    if name == "llm_ladder":
        ran = [r for r in rows if "tokens_per_s" in r]  # a skipped rung says why instead
        if not ran or not all(r["tokens_per_s"] > 0 for r in ran):
            raise ValueError("a rung measured nothing")
        return (f"{len(ran)} rungs, best {res['best_rung']} x{res['best_ratio']:.2f} "
                f"the fp32 baseline")
    if name == "llm_scaling":
        worst = max(r["max_loss_diff"] for r in res["runs"])
        if res.get("backend") != "nccl" or worst > 1e-4:
            raise ValueError(f"backend {res.get('backend')}, loss diff {worst:.1e}")
        return ", ".join(f"{r['strategy']} {_g(r['tokens_per_s'])} tokens/s"
                         for r in res["runs"]) + f" (loss diff {worst:.1e})"
    if not res["ppl_after"] < res["ppl_before"] / 2:  # llm_workflow
        raise ValueError(f"perplexity {res['ppl_before']:.1f} -> {res['ppl_after']:.1f}")
    return (f"perplexity {res['ppl_before']:.1f} -> {res['ppl_after']:.1f}, "
            f"{_g(res['tokens_per_s'])} tokens/s")


def _part_three_four(name: str, res: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Key results of the benchmarks of Parts III-IV; each must have run on the GPU."""
    if not str(res.get("device", "")).startswith("cuda"):
        raise ValueError(f"ran on {res.get('device')}, not on the GPU")
    if name == "backprop":
        if res["max_rel_err"] >= 1e-10 or res["flops_counted"] != res["flops_formula"]:
            raise ValueError(f"max_rel_err {res['max_rel_err']:.1e}, FLOPs "
                             f"{res['flops_counted']} against {res['flops_formula']}")
        best = max((r["GFLOPs"] for r in rows if r.get("device") == "cuda"), default=0.0)
        return (f"max_rel_err {res['max_rel_err']:.1e}, FLOPs = formula, "
                f"fwd+bwd up to {_g(best)} GFLOP/s")
    if name == "conv":
        cuda = {r["impl"]: r for r in rows if r.get("device") == "cuda"}
        if not {"torch", "im2col"} <= set(cuda):
            raise ValueError(f"no torch and im2col rows on cuda ({sorted(cuda)})")
        if res["max_abs_err"] >= 1e-4 or res.get("max_abs_err_cuda", 1.0) >= 2e-2:
            raise ValueError(f"errors {res['max_abs_err']:.1e} (CPU), "
                             f"{res.get('max_abs_err_cuda')} (cuda)")
        return ", ".join(f"{i}/cuda {_g(r['GFLOPs'])}" for i, r in cuda.items()) + " GFLOP/s"
    if name == "dispatch":
        if res.get("fused_with") != "numba.cuda" or not res["overhead_us"] > 0:
            raise ValueError(f"fused with {res.get('fused_with')}, overhead "
                             f"{res.get('overhead_us')} us")
        return (f"{res['overhead_us']:.1f} us per op, crossover "
                f"{_g(res['crossover_elems'])} elements")
    if name == "train_digits":
        return (f"{_g(res['samples_per_s'])} samples/s, test accuracy "
                f"{100 * res['test_acc']:.1f} % ({res.get('data')})")
    if name == "memory":
        if not res.get("all_within"):
            raise ValueError("a memory prediction is off by more than the tolerance")
        worst = max(abs(r["rel_err"]) for r in rows)
        return f"{len(rows)} configurations, predictions within {100 * worst:.1f} %"
    if name == "train_step":
        ran = [r for r in rows if "samples_per_s" in r]
        return ", ".join(f"{r['precision']} {_g(r['samples_per_s'])}" for r in ran) + \
            " samples/s"
    if name == "ddp":
        worst = max(r["max_param_diff"] for r in rows)
        if worst > 1e-5 or res.get("backend") != "nccl":
            raise ValueError(f"backend {res.get('backend')}, max param diff {worst:.1e}")
        return (f"{res.get('world')} rank(s), NCCL, bucketed/torch "
                f"{res['ratio_bucketed_over_torch']:.2f}, max param diff {worst:.1e}")
    worst = max(r["max_loss_diff"] for r in rows)
    if worst > 1e-5:
        raise ValueError(f"a strategy differs from one process by {worst:.1e}")
    return (f"{len(rows)} strategies on {res.get('world')} rank(s), {res.get('backend')}, "
            f"max loss diff {worst:.1e}")


# --------------------------------------------------------------------------- running
def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def environment(python: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(HPCAI_ROOT=str(ROOT), HPCAI_RESULTS_DIR=str(OUT / "results"),
               PATH=os.pathsep.join([str(Path(python).parent), env.get("PATH", "")]),
               # Open MPI refuses root and more ranks than cores unless told; MPICH ignores
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    return env


def telling_line(text: str) -> str:
    """The last line of a failed run that names an error (torchrun's own report aside)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"\berror\b|Error\b|Exception\b", line)
              and not re.search(r"elastic|ChildFailedError", line)]
    return (errors or lines or ["no output"])[-1][:300]


def run_check(check: Check, limit_s: float, env: dict[str, str]) -> Outcome:
    """Run one check within ``limit_s`` seconds; its whole process group goes on timeout."""
    log = OUT / "logs" / f"{check.name.replace(':', '-')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    proc = subprocess.Popen(check.command, cwd=ROOT, env=env, text=True, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(timeout=limit_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's and mpiexec's ranks too
        stdout, stderr = proc.communicate()
        timed_out = True
    seconds = time.perf_counter() - started
    log.write_text(f"$ {' '.join(check.command)}\n--- stdout ---\n{stdout}\n"
                   f"--- stderr ---\n{stderr}", encoding="utf-8")
    out = Outcome(check.name, "FAILED", seconds, log=_shown(log))
    if timed_out:
        out.result = f"stopped after {limit_s:.0f} s (its limit)"
    elif proc.returncode != 0:
        out.result = f"exit {proc.returncode}: {telling_line(stdout + chr(10) + stderr)}"
    elif check.name.startswith("notebook:"):
        out.status, out.result = "ok", "executed at profile gpu"
    else:
        try:
            out.data = json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            out.result = "no JSON object on the last line of its output"
            return out
        try:
            out.result = key_result(check.name.split(":", 1)[1], out.data)
            out.status = "ok"
        except ValueError as err:  # the GPU path did not run
            out.result = f"GPU path not run: {err}"
        except (KeyError, TypeError, AttributeError) as err:  # the JSON changed shape
            out.status, out.result = "ok", f"ran; no key result ({type(err).__name__}: {err})"
    return out


def run_all(checks: list[Check], env: dict[str, str], budget_s: float) -> list[Outcome]:
    deadline = time.monotonic() + budget_s
    outcomes = []
    for check in checks:
        left = deadline - time.monotonic()
        if check.skip:
            outcomes.append(Outcome(check.name, "skipped", result=check.skip))
        elif left < 5:
            outcomes.append(Outcome(check.name, "FAILED" if check.essential else "skipped",
                                    result=f"not run: the {budget_s:.0f} s budget is spent"))
        else:
            print(f"running {check.name} (at most {min(check.timeout_s, left):.0f} s) ...",
                  flush=True)
            outcomes.append(run_check(check, min(check.timeout_s, left), env))
    return outcomes


# --------------------------------------------------------------------------- reporting
def table(outcomes: list[Outcome]) -> str:
    width = max([len(o.name) for o in outcomes] + [5])
    lines = [f"{'check':<{width}}  {'status':<7}  {'seconds':>7}  result",
             f"{'-' * width}  {'-' * 7}  {'-' * 7}  {'-' * 6}"]
    for o in outcomes:
        lines.append(f"{o.name:<{width}}  {o.status:<7}  {o.seconds:7.1f}  {o.result}")
    failed = sum(o.status == "FAILED" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    lines.append(f"{'total':<{width}}  {failed} failed, {skipped} skipped  "
                 f"{sum(o.seconds for o in outcomes):.1f} s")
    return "\n".join(lines)


def write_summary(outcomes: list[Outcome], machine: dict[str, Any], budget_s: float,
                  path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"machine": machine, "budget_s": budget_s,
               "total_s": sum(o.seconds for o in outcomes),
               "passed": not any(o.status == "FAILED" for o in outcomes),
               "checks": [asdict(o) for o in outcomes]}
    path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", help="the Python with a CUDA build of PyTorch "
                        "(default: .venv/bin/python or python3, the first that has one)")
    parser.add_argument("--list", action="store_true", help="print the checks, run nothing")
    parser.add_argument("--only", help="comma list of check names (gemm, notebook:ch05_...)")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds for all checks together (default {BUDGET_S})")
    ns = parser.parse_args(argv)
    if not ns.budget > 0:
        parser.exit(2, f"error: --budget must be a positive number of seconds, not {ns.budget}\n")
    if ns.python and not (shutil.which(ns.python) or Path(ns.python).is_file()):
        parser.exit(2, f"error: --python {ns.python}: no such program\n")

    info, others = find_python(ns.python)
    if info is None and not ns.list:
        tried = "; ".join(f"{o['python']} ({o['why']})" for o in others) or "no python3"
        parser.exit(2, f"error: no CUDA GPU is visible: {tried}. Run `make gpu-check` on a "
                    "machine with an NVIDIA GPU and a CUDA build of PyTorch, with "
                    "`PYTHON=/path/to/python` if that Python is not the first python3; "
                    "`--list` shows the checks without a GPU.\n")
    machine = info or (others[0] if others else {"python": sys.executable, "modules": {}})
    python, n_gpus = machine["python"], len(machine.get("gpus") or [None])
    checks = (bench_checks(python, n_gpus, find_mpiexec(python), machine["modules"])
              + notebook_checks(python, machine["modules"]))
    if ns.only:
        wanted = [w.strip() for w in ns.only.split(",") if w.strip()]
        known = {c.name for c in checks} | {c.name.split(":", 1)[1] for c in checks}
        unknown = [w for w in wanted if w not in known]
        if unknown or not wanted:
            parser.exit(2, f"error: --only {ns.only!r}: unknown check(s) {unknown}; choose "
                        f"from {', '.join(c.name for c in checks)} (or without the prefix)\n")
        checks = [c for c in checks if {c.name, c.name.split(":", 1)[1]} & set(wanted)]

    if ns.list:
        where = (f"{python}: torch {info['torch']}, {n_gpus} x {info['gpus'][0]}" if info else
                 f"no CUDA GPU found here; listed as if {python} had one GPU")
        print(f"gpu-check would run {len(checks)} checks within {ns.budget:.0f} s ({where}):")
        for c in checks:
            what = f"skipped: {c.skip}" if c.skip else " ".join(c.command)
            print(f"  {c.name:<28} <= {c.timeout_s:3.0f} s  {what}")
        return 0

    print(f"gpu-check with {python}: torch {info['torch']}, {n_gpus} x {info['gpus'][0]}")
    outcomes = run_all(checks, environment(python), ns.budget)
    write_summary(outcomes, info, ns.budget, OUT / "summary.json")
    print("\n" + table(outcomes))
    print(f"\nsummary: {_shown(OUT / 'summary.json')}; "
          f"full output per check: {_shown(OUT / 'logs')}/")
    return 1 if any(o.status == "FAILED" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
