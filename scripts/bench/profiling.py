"""Profilers on this machine: perf stat, py-spy, torch.profiler, and a CUDA step's split.

Parts (``--parts``, comma-separated):

* ``perf``   ``perf stat``: which software and hardware events this kernel (or VM) counts;
             a single-threaded pure-Python loop (task-clock against wall time); the page
             faults of first-touch allocation against reuse, with and without NumPy's
             huge-page hint; the BLAS variant of ``matmul.py`` run through its command line
             with one and with two threads (if ``matmul_n`` > 0).
* ``pyspy``  ``py-spy record`` of one matrix product computed three ways (a pure-Python
             loop, NumPy, numba), and ``py-spy dump`` of a running program.
* ``torch``  ``torch.profiler`` on a small MLP training step on the CPU: ``key_averages``
             and the operator timeline of the exported Chrome trace.
* ``gpu``    only with a CUDA device: ``torch.profiler`` with ``ProfilerActivity.CUDA`` on a
             step that allocates, copies and computes, split into kernel, memcpy and memset
             time on the device and cudaMalloc, cudaFree, launch and copy calls on the host;
             ``nsys profile --stats=true`` on the same step when ``nsys`` is on the PATH.
             Without a device the part records why it did not run.

A profiler that this machine lacks, or that the kernel does not allow (``perf`` without
permission to open events, ``py-spy`` without ptrace), is reported with the reason, not as
a failure. The profiled programs are this file's own workloads, started as
``python profiling.py workload NAME ARGS`` (standard library only until a workload imports
what it measures).

    python scripts/bench/profiling.py --profile smoke --json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
PARTS = ("perf", "pyspy", "torch", "gpu")
SIZES = {
    # busy_iters: iterations of the pure-Python loop under perf stat; touch_mib, touch_reps:
    # array size and passes of the first-touch experiment (> 32 MiB: see touch_pages);
    # matmul_n: n of the BLAS run of matmul.py under perf (0: not run); py_n, py_reps: the
    # matrix side and repetitions of the py-spy ladder; rate: py-spy samples per second;
    # width, batch, steps: the MLP and the profiled steps; gpu_n, gpu_steps: the CUDA step.
    "smoke": {"parts": list(PARTS), "busy_iters": 1_000_000, "touch_mib": 40,
              "touch_reps": 2, "matmul_n": 0, "py_n": 48, "py_reps": 2, "rate": 250,
              "width": 256, "batch": 64, "steps": 2, "gpu_n": 1024, "gpu_steps": 2},
    "cpu": {"parts": list(PARTS), "busy_iters": 8_000_000, "touch_mib": 64,
            "touch_reps": 8, "matmul_n": 1536, "py_n": 128, "py_reps": 6, "rate": 250,
            "width": 512, "batch": 256, "steps": 3, "gpu_n": 4096, "gpu_steps": 3},
}
SOFTWARE_EVENTS = ("task-clock", "context-switches", "cpu-migrations", "page-faults")
HARDWARE_EVENTS = ("cycles", "instructions", "cache-misses", "branch-misses")


# ------------------------------------------------------------------ the workloads
def busy_loop(iters: int) -> int:
    """A pure-Python loop: one thread, no I/O, no memory beyond a few small integers."""
    total = 0
    for i in range(iters):
        total += i % 7
    return total


def touch_pages(mode: str, mib: int, reps: int) -> float:
    """Write ``mib`` MiB of float64 ``reps`` times; return the seconds of the loop.

    ``fresh``: a new array every pass. Above glibc's largest mmap threshold (32 MiB on
    64-bit Linux) each ``np.empty`` maps new memory and each free unmaps it, so every pass
    touches pages the kernel has never given this process. ``reuse``: one array, written
    ``reps`` times. ``none``: nothing after importing NumPy (the baseline).
    """
    import numpy as np

    n = mib * 2**20 // 8
    start = time.perf_counter()
    if mode == "fresh":
        for _ in range(reps):
            a = np.empty(n)
            a.fill(1.0)
            del a
    elif mode == "reuse":
        a = np.empty(n)
        for _ in range(reps):
            a.fill(1.0)
    return time.perf_counter() - start


def matmul_python(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    """C = A B as three Python loops over lists (i-k-j order)."""
    n = len(a)
    c = [[0.0] * n for _ in range(n)]
    for i in range(n):
        ci, ai = c[i], a[i]
        for k in range(n):
            aik, bk = ai[k], b[k]
            for j in range(n):
                ci[j] += aik * bk[j]
    return c


def python_rung(a, b, reps: int) -> None:
    for _ in range(reps):
        matmul_python(a, b)


def numpy_rung(a, b, reps: int) -> None:
    for _ in range(reps):
        _ = a @ b


def numba_rung(kernel, a, b, reps: int) -> None:
    for _ in range(reps):
        kernel(a, b)


def numba_compile(kernel, a, b) -> None:
    kernel(a, b)  # the first call compiles


def run_ladder(n: int, reps: int) -> dict[str, float]:
    """The same product three ways; return the seconds each phase took by the clock."""
    import numpy as np
    from numba import njit

    @njit(cache=False)
    def matmul_numba(a, b):
        m = a.shape[0]
        c = np.zeros((m, m))
        for i in range(m):
            for k in range(m):
                aik = a[i, k]
                for j in range(m):
                    c[i, j] += aik * b[k, j]
        return c

    rng = np.random.default_rng(0)
    A, B = rng.random((n, n)), rng.random((n, n))
    a_list, b_list = A.tolist(), B.tolist()
    seconds: dict[str, float] = {}
    for name, call in (
        ("python", lambda: python_rung(a_list, b_list, reps)),
        ("numpy", lambda: numpy_rung(A, B, reps)),
        ("numba_compile", lambda: numba_compile(matmul_numba, A, B)),
        ("numba", lambda: numba_rung(matmul_numba, A, B, reps)),
    ):
        start = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - start
    ref = A @ B
    assert np.allclose(np.array(matmul_python(A[:8, :8].tolist(), B[:8, :8].tolist())),
                       A[:8, :8] @ B[:8, :8])
    assert np.allclose(matmul_numba(A, B), ref)
    return seconds


def wait_here(seconds: float) -> int:
    from hpcai.workers import spin  # the book's one busy loop

    print("ready", flush=True)
    return spin(seconds)


def gpu_step(n: int, fresh: bool) -> float:
    """One step that allocates, copies and computes on the GPU; returns a checksum.

    ``fresh``: first hand PyTorch's cached blocks back to the driver, so that the step's
    allocations are real ``cudaMalloc`` calls rather than reuses of the caching allocator.
    """
    import torch

    if fresh:
        torch.cuda.empty_cache()
    host = torch.ones(n, n)                     # pageable host memory
    a = host.to("cuda")                         # cudaMalloc + host-to-device copy
    b = torch.empty(n, n, device="cuda").fill_(0.5)  # cudaMalloc + a fill kernel
    c = torch.relu(a @ b)                       # GEMM + elementwise kernels
    return float(c.sum().cpu())                 # device-to-host copy (and a wait)


def workload_main(argv: list[str]) -> int:
    """``workload NAME ARGS``: run one workload and print one JSON line."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # one error line, status 2
            self.exit(2, f"error: workload: {message}\n")

    p = Parser(prog="profiling.py workload")
    sub = p.add_subparsers(dest="name", required=True)
    sub.add_parser("busy").add_argument("iters", type=int)
    t = sub.add_parser("touch")
    t.add_argument("mode", choices=("none", "fresh", "reuse"))
    t.add_argument("mib", type=int)
    t.add_argument("reps", type=int)
    lad = sub.add_parser("ladder")
    lad.add_argument("n", type=int)
    lad.add_argument("reps", type=int)
    sub.add_parser("spin").add_argument("seconds", type=float)
    g = sub.add_parser("gpu_step")
    g.add_argument("n", type=int)
    g.add_argument("steps", type=int)
    a = p.parse_args(argv)
    if a.name == "busy":
        start = time.perf_counter()
        busy_loop(a.iters)
        out: dict[str, Any] = {"loop_s": time.perf_counter() - start}
    elif a.name == "touch":
        out = {"loop_s": touch_pages(a.mode, a.mib, a.reps)}
    elif a.name == "ladder":
        out = {"seconds": run_ladder(a.n, a.reps)}
    elif a.name == "spin":
        out = {"count": wait_here(a.seconds)}
    else:
        for _ in range(a.steps):
            total = gpu_step(a.n, fresh=True)
        out = {"checksum": total}
    print(json.dumps(out), flush=True)
    return 0


def _workload(*args: Any) -> list[str]:
    return [sys.executable, str(HERE), "workload", *map(str, args)]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in the output:\n{text[-1500:]}")


# ------------------------------------------------------------------ perf stat
def parse_perf_csv(text: str) -> dict[str, dict[str, Any]]:
    """``perf stat -x,`` lines -> {event: {value, unit, supported, metric, metric_unit}}.

    Each line is ``value,unit,event,run_time,percent,metric,metric_unit``; an event that the
    kernel or the (virtual) machine cannot count has the value ``<not supported>``.
    """
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        f = line.strip().split(",")
        if len(f) < 3 or not f[2] or line.startswith("#"):
            continue
        value, unit, event = f[0], f[1], f[2]
        event = event.split(":")[0]
        row: dict[str, Any] = {"unit": unit, "supported": not value.startswith("<")}
        row["value"] = float(value) if row["supported"] else None
        row["raw"] = value
        if len(f) >= 7 and f[5]:
            try:
                row["metric"], row["metric_unit"] = float(f[5]), f[6]
            except ValueError:
                pass
        out[event] = row
    return out


def perf_stat(perf: str, events: tuple[str, ...], cmd: list[str],
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd`` under ``perf stat``; return the counts, the wall time and its output."""
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "perf.csv"
        start = time.perf_counter()
        proc = subprocess.run([perf, "stat", "-x,", "-o", str(csv), "-e", ",".join(events),
                               "--", *cmd], capture_output=True, text=True,
                              env=env or _env(), timeout=300)
        wall = time.perf_counter() - start
        text = csv.read_text() if csv.exists() else ""
    if proc.returncode != 0:
        raise RuntimeError(f"perf stat exited with {proc.returncode}: "
                           f"{(proc.stderr or text).strip()[-600:]}")
    return {"events": parse_perf_csv(text), "wall_s": wall, "stdout": proc.stdout}


def _count(r: dict[str, Any], event: str) -> float:
    return r["events"][event]["value"]


def part_perf(S) -> dict[str, Any]:
    perf = shutil.which("perf")
    if perf is None:
        return {"ran": False, "why": "perf is not on the PATH (Debian: apt-get install "
                "linux-perf)"}
    try:
        probe = perf_stat(perf, SOFTWARE_EVENTS + HARDWARE_EVENTS, ["true"])
    except (RuntimeError, OSError) as err:
        return {"ran": False, "why": f"perf cannot count here: {err}"}
    supported = {e: bool(probe["events"].get(e, {}).get("supported")) for e in
                 SOFTWARE_EVENTS + HARDWARE_EVENTS}
    soft = tuple(e for e in SOFTWARE_EVENTS if supported[e])
    hard = tuple(e for e in HARDWARE_EVENTS if supported[e])
    if not (supported["task-clock"] and supported["page-faults"]):
        return {"ran": False, "supported": supported,
                "why": "perf runs but counts neither task-clock nor page-faults here"}
    events = soft + hard
    out: dict[str, Any] = {"ran": True, "perf": perf, "supported": supported,
                           "probe_raw": {e: probe["events"].get(e, {}).get("raw")
                                         for e in supported},
                           "paranoid": _read("/proc/sys/kernel/perf_event_paranoid"),
                           "thp": _thp_mode()}
    busy = perf_stat(perf, events, _workload("busy", S.busy_iters))
    busy["loop_s"] = _last_json(busy.pop("stdout"))["loop_s"]
    out["busy"] = busy
    touch: dict[str, Any] = {"mib": S.touch_mib, "reps": S.touch_reps,
                             "pages_4k": S.touch_mib * 2**20 // 4096}
    for hint in ("1", "0"):
        for mode in ("none", "fresh", "reuse"):
            r = perf_stat(perf, events, _workload("touch", mode, S.touch_mib, S.touch_reps),
                          env=_env(NUMPY_MADVISE_HUGEPAGE=hint))
            r["loop_s"] = _last_json(r.pop("stdout"))["loop_s"]
            touch[f"{mode}_hugepage{hint}"] = r
    for hint in ("1", "0"):
        base = _count(touch[f"none_hugepage{hint}"], "page-faults")
        touch[f"faults_per_fresh_pass_hugepage{hint}"] = (
            _count(touch[f"fresh_hugepage{hint}"], "page-faults") - base) / S.touch_reps
        touch[f"faults_reuse_hugepage{hint}"] = (
            _count(touch[f"reuse_hugepage{hint}"], "page-faults") - base)
    out["touch"] = touch
    if S.matmul_n > 0:
        cmd = [sys.executable, str(ROOT / "scripts" / "bench" / "matmul.py"), "--profile",
               "cpu", "--variant", "blas", "--n", str(S.matmul_n), "--repeats", "5",
               "--json"]
        out["matmul"] = {}
        for threads in ("1", "2"):
            r = perf_stat(perf, events, cmd, env=_env(OPENBLAS_NUM_THREADS=threads,
                                                      OMP_NUM_THREADS=threads))
            row = _last_json(r.pop("stdout"))["rows"][0]
            r.update(threads=int(threads), GFLOPs=row["GFLOPs"], median_s=row["median_s"],
                     verified=row["verified"])
            out["matmul"][threads] = r
        out["matmul_cmd"] = " ".join(["python", "scripts/bench/matmul.py", *cmd[2:]])
    return out


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _thp_mode() -> str | None:
    """The transparent huge page mode, the bracketed word of the sysfs file."""
    text = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if not text or "[" not in text:
        return None
    return text.split("[", 1)[1].split("]", 1)[0]


# ------------------------------------------------------------------ py-spy
def parse_raw_stacks(text: str) -> Counter:
    """py-spy's ``--format raw`` (collapsed stacks: ``f1;f2;f3 COUNT``) -> Counter."""
    stacks: Counter = Counter()
    for line in text.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def function_of(frame: str) -> str:
    """``name (file.py:12)`` -> ``name (file.py)``: the function, whatever the line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def sample_table(stacks: Counter) -> dict[str, Any]:
    """Samples by function: ``self`` (the function was running) and ``total`` (on the
    stack), and by phase of the ladder: the rung whose function is on the stack, else
    ``imports`` (an import is on the stack), else ``other`` (start-up, checks, exit)."""
    own: Counter = Counter()
    total: Counter = Counter()
    phases: Counter = Counter()
    rungs = {"python_rung": "python", "numpy_rung": "numpy",
             "numba_compile": "numba_compile", "numba_rung": "numba"}
    for stack, count in stacks.items():
        funcs = [function_of(f) for f in stack]
        own[funcs[-1]] += count
        for f in set(funcs):
            total[f] += count
        names = [f.split(" (")[0] for f in funcs]
        phase = next((rungs[n] for n in reversed(names) if n in rungs), None)
        if phase is None:
            phase = "imports" if "_find_and_load" in names else "other"
        phases[phase] += count
    return {"samples": sum(stacks.values()),
            "self": own.most_common(12), "total": total.most_common(12),
            "phases": dict(phases)}


def _pyspy_dump(pyspy: str) -> dict[str, Any]:
    """Start a program that spins in hpcai.workers.spin, dump its stack once, stop it."""
    proc = subprocess.Popen(_workload("spin", 30), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the spinning workload did not start")
        for _ in range(5):  # until it has left print() and spins in spin()
            time.sleep(0.2)
            r = subprocess.run([pyspy, "dump", "--json", "--pid", str(proc.pid)],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise PermissionError(" ".join((r.stderr or r.stdout).split())[:400])
            main = json.loads(r.stdout)[0]
            if main["frames"] and main["frames"][0]["name"] == "spin":
                break
    finally:
        proc.kill()
        proc.wait()
    return {"pid": main["pid"], "active": main.get("active"),
            "owns_gil": main.get("owns_gil"),
            "frames": [f"{f['name']} ({f.get('short_filename') or f['filename']}:"
                       f"{f['line']})" for f in main["frames"]]}


def part_pyspy(S) -> dict[str, Any]:
    from hpcai.launch import LauncherError, find_executable

    try:
        pyspy = find_executable("py-spy")
    except LauncherError:
        return {"ran": False, "why": "py-spy is not installed (pip install py-spy; "
                "requirements.txt pins it)"}
    version = subprocess.run([pyspy, "--version"], capture_output=True,
                             text=True).stdout.strip()
    try:
        dump = _pyspy_dump(pyspy)
    except PermissionError as err:
        return {"ran": False, "version": version,
                "why": "py-spy could not read a running process here (it needs ptrace "
                       f"rights: root, or CAP_SYS_PTRACE in a container): {err}"}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "ladder.txt"
        rec = subprocess.run([pyspy, "record", "--rate", str(S.rate), "--format", "raw",
                              "--output", str(raw), "--",
                              *_workload("ladder", S.py_n, S.py_reps)],
                             capture_output=True, text=True, env=_env(), timeout=300)
        if rec.returncode != 0 or not raw.exists():
            raise RuntimeError(f"py-spy record failed ({rec.returncode}): "
                               f"{rec.stderr[-800:]}")
        stacks = parse_raw_stacks(raw.read_text())
    clock = _last_json(rec.stdout)["seconds"]
    table = sample_table(stacks)
    log = [ln for ln in (rec.stdout + rec.stderr).splitlines() if ln.startswith("py-spy>")]
    ticks = next((int(ln.split("Samples:")[1].split()[0]) for ln in log
                  if "Samples:" in ln), None)
    return {"ran": True, "version": version, "rate": S.rate, "n": S.py_n,
            "reps": S.py_reps, "clock_s": clock, **table, "dump": dump,
            "ticks": ticks, "record_log": log[-3:]}


# ------------------------------------------------------------------ torch.profiler
def __getattr__(name: str) -> Any:
    """``PHASES`` and ``trace_events`` live in ``hpcai.trace`` (shared with chapter 9); they
    are imported on first use, so the workloads start without importing the book's
    package."""
    if name in ("PHASES", "trace_events"):
        from hpcai import trace

        return getattr(trace, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def mlp_step_profile(S) -> dict[str, Any]:
    """Profile ``S.steps`` training steps of a three-layer MLP on the CPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function, schedule

    from hpcai.trace import trace_events

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(S.width, S.width), torch.nn.ReLU(),
        torch.nn.Linear(S.width, S.width), torch.nn.ReLU(),
        torch.nn.Linear(S.width, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(S.batch, S.width), torch.randint(0, 10, (S.batch,))

    def step() -> float:
        with record_function("forward"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    losses = []
    with profile(activities=[ProfilerActivity.CPU],
                 schedule=schedule(wait=1, warmup=1, active=S.steps)) as prof:
        for _ in range(2 + S.steps):
            losses.append(step())
            prof.step()
    averages = prof.key_averages()
    rows = sorted(({"name": a.key, "calls": a.count, "self_us": a.self_cpu_time_total,
                    "total_us": a.cpu_time_total} for a in averages),
                  key=lambda r: -r["self_us"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = trace_events(path)
    return {"threads": torch.get_num_threads(), "losses": losses,
            "table": averages.table(sort_by="self_cpu_time_total", row_limit=10,
                                    max_name_column_width=28),
            "rows": rows[:30], "events": [e for e in events if e["depth"] <= 3],
            "n_events": len(events)}


# ------------------------------------------------------------------ GPU
GPU_API = {"Malloc": "cudaMalloc", "Free": "cudaFree", "Memcpy": "memcpy calls",
           "Memset": "memset calls", "Launch": "kernel launches", "Synchronize": "syncs"}


def cuda_split(path: str | Path) -> dict[str, Any]:
    """Device time of kernels, copies and fills, and host time of the CUDA runtime calls
    (allocation, free, copy, launch, synchronisation), in microseconds, from a trace."""
    data = json.loads(Path(path).read_text())
    raw = data["traceEvents"] if isinstance(data, dict) else data
    device: Counter = Counter()
    api: Counter = Counter()
    calls: Counter = Counter()
    for e in raw:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        cat = e.get("cat", "")
        if cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            device[{"kernel": "kernel", "gpu_memcpy": "memcpy",
                    "gpu_memset": "memset"}[cat]] += e["dur"]
        elif cat in ("cuda_runtime", "cuda_driver"):
            kind = next((v for k, v in GPU_API.items() if k in e["name"]), "other")
            api[kind] += e["dur"]
            calls[kind] += 1
    return {"device_us": dict(device), "api_us": dict(api), "api_calls": dict(calls)}


def parse_nsys_stats(text: str) -> dict[str, list[dict[str, Any]]]:
    """The tables of ``nsys profile --stats=true`` -> {report: [{name, total_ns, calls}]}.

    Each report starts with a line ``** ... (report_name):``, then a header, a line of
    dashes that marks the columns, and one row per line until a blank line.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("**") and line.endswith("):") and "(" in line:
            name = line.rsplit("(", 1)[1].rstrip("):")
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("---"):
                j += 1
            if j >= len(lines):
                break
            header, dashes = lines[j - 1], lines[j]
            spans, start = [], None
            for k, ch in enumerate(dashes + " "):
                if ch == "-" and start is None:
                    start = k
                elif ch != "-" and start is not None:
                    spans.append((start, k))
                    start = None
            cols = [header[a:b + 1].strip() for a, b in spans]
            rows = []
            j += 1
            while j < len(lines) and lines[j].strip():
                cells = [lines[j][a:b + 1].strip() for a, b in spans[:-1]]
                cells.append(lines[j][spans[-1][0]:].strip())
                rec = dict(zip(cols, cells))
                try:
                    rows.append({"name": rec.get("Name", cells[-1]),
                                 "total_ns": float(rec["Total Time (ns)"].replace(",", "")),
                                 "calls": int(float(next(
                                     v for c, v in rec.items() if c.startswith(("Num Calls",
                                                                              "Instances",
                                                                              "Count")))
                                     .replace(",", "")))})
                except (KeyError, ValueError, StopIteration):
                    pass
                j += 1
            out[name] = rows
            i = j
        i += 1
    return out


def part_gpu(S) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"ran": False, "why": f"torch.cuda.is_available() is False (PyTorch "
                f"{torch.__version__}); the split needs a CUDA device"}
    from torch.profiler import ProfilerActivity, profile

    gpu_step(S.gpu_n, fresh=True)   # context, cuBLAS handle, first kernels: not profiled
    torch.cuda.synchronize()
    out: dict[str, Any] = {"ran": True, "device": torch.cuda.get_device_name(0),
                           "n": S.gpu_n, "steps": S.gpu_steps}
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in (True, False):
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(S.gpu_steps):
                    checksum = gpu_step(S.gpu_n, fresh=fresh)
                torch.cuda.synchronize()
            expect = S.gpu_n * S.gpu_n * (0.5 * S.gpu_n)
            assert abs(checksum - expect) <= 1e-3 * expect, (checksum, expect)
            path = Path(tmp) / f"gpu_{fresh}.json"
            prof.export_chrome_trace(str(path))
            key = "fresh" if fresh else "cached"
            out[key] = cuda_split(path)
            out[f"{key}_table"] = prof.key_averages().table(
                sort_by="self_device_time_total", row_limit=8, max_name_column_width=28)
    nsys = shutil.which("nsys")
    if nsys is None:
        out["nsys"] = {"ran": False, "why": "nsys (Nsight Systems) is not on the PATH"}
        return out
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([nsys, "profile", "--stats=true", "--trace=cuda",
                               "--force-overwrite=true", "-o", str(Path(tmp) / "step"),
                               *_workload("gpu_step", S.gpu_n, S.gpu_steps)],
                              capture_output=True, text=True, env=_env(), timeout=300)
    text = proc.stdout + "\n" + proc.stderr
    out["nsys"] = {"ran": proc.returncode == 0, "returncode": proc.returncode,
                   "reports": parse_nsys_stats(text), "tail": text[-3000:]}
    return out


# ------------------------------------------------------------------ entry point
def check(S) -> None:
    """Refuse bad settings before any work (bench_main calls it; so does run)."""
    if S.touch_mib <= 32:
        raise ValueError(f"--touch-mib must be above 32 (glibc maps arrays above 32 MiB "
                         f"afresh on every allocation), got {S.touch_mib}")
    if S.py_n < 8:
        raise ValueError(f"--py-n must be at least 8, got {S.py_n}")


def run(S) -> dict[str, Any]:
    check(S)
    out: dict[str, Any] = {"parts": list(S.parts)}
    for part, fn in (("perf", part_perf), ("pyspy", part_pyspy),
                     ("torch", mlp_step_profile), ("gpu", part_gpu)):
        if part in S.parts:
            out[part] = fn(S)
    return out


if __name__ == "__main__":
    if sys.argv[1:2] == ["workload"]:
        sys.exit(workload_main(sys.argv[2:]))
    sys.path.insert(0, str(ROOT))
    from hpcai.cli import bench_main

    bench_main(run, SIZES, description=__doc__.split("\n")[0], check=check,
               choices={"parts": PARTS})
