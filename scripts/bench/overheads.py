"""Fixed costs against problem size: what a call costs before it does any useful work.

CPU measurements (any machine):

* ``region``   one vector update y = a*x + y, serial numba vs a numba ``parallel=True`` region,
               over sizes; the difference at tiny sizes is the cost of waking the thread pool;
* ``dispatch`` one ``torch.add`` on tensors of growing size (Python -> ATen dispatch + work),
               with one intra-op thread, next to NumPy's ``np.add``;
* ``alloc``    ``np.empty`` (address space only) vs ``np.ones`` (pages touched) over sizes;
* ``process``  wall time to start ``python -c pass``, ``python -c 'import numpy'``,
               ``python -c 'import torch'`` (if ``process_torch``) and ``mpiexec -n 2 true``;
               the first run of each warms the file cache and is not counted.

GPU measurements (only where numba.cuda sees a GPU; timed with CUDA events or with a
synchronise before each clock read):

* ``gpu_alloc``    ``cuda.device_array`` over sizes;
* ``gpu_transfer`` host -> device and device -> host copies over sizes;
* ``gpu_launch``   an empty kernel: back-to-back launches (launch cost) and launch + sync;
* ``gpu_vadd``     vector add: kernel only vs copy in + kernel + copy out, against NumPy.

For each series the result holds a fit t(n) = t0 + c*n (t0: the fixed cost, c: the cost per
element) and the crossover size n* = t0 / c at which useful work equals the fixed cost. The
timing and fitting code is shared with chapter 9 in ``hpcai/fixedcost.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import get_num_threads, njit, prange

from hpcai import Timing
from hpcai.cli import bench_main
from hpcai.fixedcost import (
    crossover,
    fit_fixed_plus_linear,  # noqa: F401  (the lab and tests use it)
    series,
    sizes,
    time_call,
)

SIZES = {
    # CPU series: 10**lo .. 10**hi elements, `per_decade` points per factor of 10. hi stays at
    # 10**5 (under 1 MB per array) so that the data stays in the L2 cache: beyond it the cost per
    # element steps up with every level of the memory hierarchy and one c no longer fits.
    # GPU series: 10**lo .. 10**gpu_hi elements (transfers and device memory are linear).
    # target_s: aim for samples of about this many seconds (tiny calls are repeated inside).
    "smoke": {"lo": 1, "hi": 5, "gpu_hi": 5, "per_decade": 1, "repeats": 5, "target_s": 0.002,
              "process_repeats": 1, "process_torch": False,
              "parts": "region,dispatch,alloc,process"},
    "cpu": {"lo": 1, "hi": 5, "gpu_hi": 5, "per_decade": 3, "repeats": 7, "target_s": 0.01,
            "process_repeats": 2, "process_torch": True,
            "parts": "region,dispatch,alloc,process"},
    "gpu": {"lo": 1, "hi": 5, "gpu_hi": 8, "per_decade": 3, "repeats": 7, "target_s": 0.01,
            "process_repeats": 3, "process_torch": True, "parts": "all"},
    "cluster": {"lo": 1, "hi": 5, "gpu_hi": 8, "per_decade": 3, "repeats": 7, "target_s": 0.01,
                "process_repeats": 3, "process_torch": True, "parts": "all"},
}
CPU_PARTS = ("region", "dispatch", "alloc", "process")
GPU_PARTS = ("gpu_alloc", "gpu_transfer", "gpu_launch", "gpu_vadd")


# ------------------------------------------------------------------ kernels and fits
@njit
def axpy_serial(a, x, y):
    for i in range(x.size):
        y[i] += a * x[i]


@njit(parallel=True)
def axpy_parallel(a, x, y):
    for i in prange(x.size):
        y[i] += a * x[i]


def _time_call(fn: Callable[[], Any], S, sync=None):
    """One call's Timing with the profile's target sample length and repeats."""
    return time_call(fn, target_s=S.target_s, repeats=S.repeats, sync=sync)


def _series(make: Callable[[int], Callable[[], Any]], ns: list[int], S,
            sync=None) -> dict[str, Any]:
    """One operation over sizes, fitted (see hpcai.fixedcost.series)."""
    return series(make, ns, target_s=S.target_s, repeats=S.repeats, sync=sync)


# ------------------------------------------------------------------ CPU parts
def part_region(S, ns: list[int]) -> dict[str, Any]:
    axpy_serial(2.0, np.ones(4), np.ones(4))  # compile outside the timing
    axpy_parallel(2.0, np.ones(4), np.ones(4))
    out: dict[str, Any] = {"threads": get_num_threads()}
    for name, kernel in (("serial", axpy_serial), ("parallel", axpy_parallel)):
        def make(n: int, kernel=kernel) -> Callable[[], None]:
            x, y = np.ones(n), np.ones(n)
            return lambda: kernel(2.0, x, y)
        out[name] = _series(make, ns, S)
    s, p = out["serial"], out["parallel"]
    out["region_start_s"] = p["best_s"][0] - s["best_s"][0]
    out["crossover_n"] = crossover(ns, s["best_s"], p["best_s"])
    return out


def part_dispatch(S, ns: list[int]) -> dict[str, Any]:
    import torch

    def make(n: int) -> Callable[[], Any]:
        x, y, z = torch.ones(n), torch.ones(n), torch.empty(n)
        return lambda: torch.add(x, y, out=z)

    def make_np(n: int) -> Callable[[], Any]:
        x, y, z = np.ones(n, np.float32), np.ones(n, np.float32), np.empty(n, np.float32)
        return lambda: np.add(x, y, out=z)

    # One intra-op thread, like NumPy's add: the per-element cost is then one core's, and the
    # fixed cost is dispatch alone, not dispatch plus waking a thread pool (Task 5.14 does that).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {"torch_add": _series(make, ns, S), "numpy_add": _series(make_np, ns, S),
               "torch_threads": 1}
    finally:
        torch.set_num_threads(threads)
    return out


def part_alloc(S, ns: list[int]) -> dict[str, Any]:
    return {"np_empty": _series(lambda n: (lambda: np.empty(n)), ns, S),
            "np_ones": _series(lambda n: (lambda: np.ones(n)), ns, S)}


def _wall(cmd: list[str], repeats: int) -> dict[str, Any]:
    times, retried = [], 0
    while len(times) < repeats + 1:  # the first run warms the file cache and is dropped
        start = time.perf_counter()
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        except subprocess.CalledProcessError as err:
            # MPICH's mpiexec sometimes dies of SIGPIPE when its program (`true`) exits
            # before the launcher has finished wiring it up, on a busy machine: a launcher
            # race, not a start-up time. Such a run is repeated (three times at most), and
            # counted in `retried`.
            if err.returncode != -signal.SIGPIPE or retried >= 3:
                raise
            retried += 1
            continue
        times.append(time.perf_counter() - start)
    times = times[1:]
    if not times:
        raise ValueError("--process-repeats must be at least 1")
    t = Timing(times)
    return {"cmd": " ".join(cmd[-2:]) if cmd[0] == sys.executable else " ".join(cmd),
            "median_s": t.median, "iqr_s": t.iqr, "min_s": t.min, "max_s": t.max,
            "retried": retried}


def part_process(S) -> dict[str, Any]:
    from hpcai.launch import LauncherError, find_executable

    py = sys.executable
    out = {"python_pass": _wall([py, "-c", "pass"], S.process_repeats),
           "python_numpy": _wall([py, "-c", "import numpy"], S.process_repeats)}
    if S.process_torch:
        out["python_torch"] = _wall([py, "-c", "import torch"], S.process_repeats)
    try:
        mpiexec = find_executable("mpiexec")
        out["mpiexec_2_true"] = _wall([mpiexec, "-n", "2", "true"], S.process_repeats)
    except (LauncherError, subprocess.CalledProcessError) as err:
        out["mpiexec_2_true"] = {"error": str(err)}
    return out


# ------------------------------------------------------------------ GPU parts
def _numba_cuda():
    from numba import cuda

    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0") or not cuda.is_available():
        raise ValueError(f"GPU parts need a real CUDA GPU (not the simulator); use --parts "
                         f"{','.join(CPU_PARTS)} on this machine")
    return cuda


def gpu_parts(S, ns: list[int], parts: list[str]) -> dict[str, Any]:
    cuda = _numba_cuda()
    sync = cuda.synchronize
    out: dict[str, Any] = {"device": cuda.get_current_device().name.decode()
                           if isinstance(cuda.get_current_device().name, bytes)
                           else str(cuda.get_current_device().name)}

    @cuda.jit
    def empty_kernel():
        pass

    @cuda.jit
    def vadd(a, b, c):
        i = cuda.grid(1)
        if i < c.size:
            c[i] = a[i] + b[i]

    empty_kernel[1, 1]()
    sync()
    if "gpu_alloc" in parts:
        out["gpu_alloc"] = _series(lambda n: (lambda: cuda.device_array(n)), ns, S, sync=sync)
    if "gpu_transfer" in parts:
        def h2d(n: int) -> Callable[[], Any]:
            h, d = np.ones(n), cuda.device_array(n)
            return lambda: d.copy_to_device(h)

        def d2h(n: int) -> Callable[[], Any]:
            h, d = np.empty(n), cuda.to_device(np.ones(n))
            return lambda: d.copy_to_host(h)

        out["h2d"] = _series(h2d, ns, S, sync=sync)
        out["d2h"] = _series(d2h, ns, S, sync=sync)
    if "gpu_launch" in parts:
        many = 1000
        start = time.perf_counter()
        for _ in range(many):
            empty_kernel[1, 32]()
        queued = (time.perf_counter() - start) / many
        sync()
        t = _time_call(lambda: (empty_kernel[1, 32](), sync()), S)
        out["gpu_launch"] = {"launch_only_s": queued, "launch_and_sync_s": t.min,
                             "median_s": t.median, "iqr_s": t.iqr}
    if "gpu_vadd" in parts:
        tpb = 256

        def kernel_only(n: int) -> Callable[[], Any]:
            a, b, c = (cuda.to_device(np.ones(n)) for _ in range(3))
            blocks = (n + tpb - 1) // tpb
            return lambda: vadd[blocks, tpb](a, b, c)

        def with_copies(n: int) -> Callable[[], Any]:
            a, b, c = np.ones(n), np.ones(n), np.empty(n)
            blocks = (n + tpb - 1) // tpb

            def go() -> None:
                da, db = cuda.to_device(a), cuda.to_device(b)
                dc = cuda.device_array(n)
                vadd[blocks, tpb](da, db, dc)
                dc.copy_to_host(c)
            return go

        def numpy_add(n: int) -> Callable[[], Any]:
            a, b, c = np.ones(n), np.ones(n), np.empty(n)
            return lambda: np.add(a, b, out=c)

        k = _series(kernel_only, ns, S, sync=sync)
        w = _series(with_copies, ns, S, sync=sync)
        h = _series(numpy_add, ns, S)
        out["gpu_vadd"] = {"kernel_only": k, "with_copies": w, "numpy": h,
                           "kernel_beats_numpy_from_n": crossover(ns, h["best_s"], k["best_s"]),
                           "copies_beat_numpy_from_n": crossover(ns, h["best_s"], w["best_s"])}
    return out


def wanted_parts(spec: str) -> list[str]:
    """The parts named by --parts (a comma-separated list, or all)."""
    wanted = [p.strip() for p in spec.split(",")]
    if wanted == ["all"]:
        wanted = list(CPU_PARTS + GPU_PARTS)
    unknown = [p for p in wanted if p not in CPU_PARTS + GPU_PARTS]
    if unknown:
        raise ValueError(f"--parts: unknown parts {unknown}; choose from "
                         f"{', '.join(CPU_PARTS + GPU_PARTS)} (comma-separated) or all")
    return wanted


def check(S) -> None:
    """Refuse bad settings before any work (bench_main calls it; so does run)."""
    sizes(S.lo, S.hi, S.per_decade)
    if not 0 <= S.gpu_hi <= 9:
        raise ValueError(f"--gpu-hi must be in 0..9, got {S.gpu_hi}")
    if [p for p in wanted_parts(S.parts) if p in GPU_PARTS]:
        _numba_cuda()  # refuse before any work if there is no real GPU


def run(S) -> dict[str, Any]:
    check(S)
    ns = sizes(S.lo, S.hi, S.per_decade)
    wanted = wanted_parts(S.parts)
    gpu_wanted = [p for p in wanted if p in GPU_PARTS]
    out: dict[str, Any] = {"sizes": ns}
    if "region" in wanted:
        out["region"] = part_region(S, ns)
    if "dispatch" in wanted:
        out["dispatch"] = part_dispatch(S, ns)
    if "alloc" in wanted:
        out["alloc"] = part_alloc(S, ns)
    if "process" in wanted:
        out["process"] = part_process(S)
    if gpu_wanted:
        gpu_ns = sizes(S.lo, max(S.gpu_hi, S.lo + 1), S.per_decade)
        out["gpu_sizes"] = gpu_ns
        out["gpu"] = gpu_parts(S, gpu_ns, gpu_wanted)
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__.split("\n")[0], check=check)
