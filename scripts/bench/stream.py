"""STREAM copy/scale/add/triad with numba `prange` kernels, and the triad against C/OpenMP.

Bytes are counted the way STREAM counts them: copy and scale touch 2 arrays, add and triad
3 arrays, each of n doubles (8 bytes), once per kernel call. Rates are reported as STREAM does
(best of the repeats, in GB/s = 1e9 bytes/s) with the median next to them. The count is what
the operation needs, not what the memory moves: with ordinary stores the processor first reads
each destination line into the cache (write-allocate), so copy really moves 3 array-lengths
and triad 4; non-temporal stores skip that read. Numba compiles the copy loop to ``memcpy``,
and glibc's memcpy uses non-temporal stores for copies above a threshold it derives from the
reported cache size (``memcpy_nt_threshold_MiB``); whether each thread's chunk is above it is
``copy_chunk_above_nt_threshold``.

With ``n = 0`` the arrays are sized from the last-level cache by the rule of ``hpcai.caches``,
which does not trust a virtual machine's report blindly (``llc_MiB`` is what the OS reports,
``llc_believed_MiB`` what the rule believes).

The C reference (scripts/bench/c/stream_triad.c) is compiled at run time with
``gcc -O3 -march=native -fopenmp`` into ``_build/cache/c/`` and called through ctypes on the
*same* arrays with the *same* number of threads, alternating with the numba triad call by call,
so that both see the same pages, the same first touch and the same background load.
``triad_ratio`` = numba triad / C triad (best of the paired repeats for both).

With ``--profile gpu`` it also measures the GPU's device-to-device copy bandwidth (torch).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from hpcai import caches
from hpcai.cli import bench_main
from hpcai.measure import Timing
from hpcai.paths import build_dir, repo_root

# n = 0 means "auto": each array llc_factor x the believed last-level cache, at least 256 MiB,
# capped by memory (hpcai.caches states the rule). STREAM's rule is 4x; the cpu profile uses 2x
# (the three arrays together still 6x the cache) to stay within its time budget on a laptop.
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"n": 2_000_000, "llc_factor": 4, "repeats": 3, "threads": 0, "compare_c": True},
    "cpu": {"n": 0, "llc_factor": 2, "repeats": 8, "threads": 0, "compare_c": True},
    "gpu": {"n": 0, "llc_factor": 4, "repeats": 10, "threads": 0, "compare_c": True},
    "cluster": {"n": 0, "llc_factor": 4, "repeats": 10, "threads": 0, "compare_c": True},
}

SCALAR = 3.0
# STREAM's byte count per element for each kernel: arrays touched x 8 bytes.
BYTES_PER_ELEMENT = {"copy": 2 * 8, "scale": 2 * 8, "add": 3 * 8, "triad": 3 * 8}
C_SOURCE = repo_root() / "scripts" / "bench" / "c" / "stream_triad.c"
C_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-DSTREAM_TRIAD_NO_MAIN"]


# ---------------------------------------------------------------- the four kernels (numba)
@njit(parallel=True, fastmath=True, cache=True)
def first_touch(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    """Write every element from the thread that will later use it (same static split)."""
    for i in prange(a.size):
        a[i] = 1.0
        b[i] = 2.0
        c[i] = 0.0


@njit(parallel=True, fastmath=True, cache=True)
def copy(a: np.ndarray, c: np.ndarray) -> None:  # c = a          (2 arrays)
    for i in prange(a.size):
        c[i] = a[i]


@njit(parallel=True, fastmath=True, cache=True)
def scale(b: np.ndarray, c: np.ndarray, s: float) -> None:  # b = s*c   (2 arrays)
    for i in prange(c.size):
        b[i] = s * c[i]


@njit(parallel=True, fastmath=True, cache=True)
def add(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:  # c = a+b   (3 arrays)
    for i in prange(a.size):
        c[i] = a[i] + b[i]


@njit(parallel=True, fastmath=True, cache=True)
def triad(a: np.ndarray, b: np.ndarray, c: np.ndarray, s: float) -> None:  # a = b+s*c (3)
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


@njit(parallel=True, fastmath=True, cache=True)
def fill(x: np.ndarray, v: float) -> None:
    """First touch of one array, with the same static split as the kernels."""
    for i in prange(x.size):
        x[i] = v


# ---------------------------------------------------------------- sizes and threads
def last_level_cache_bytes() -> int | None:
    """Size of the largest CPU cache Linux reports (bytes), or None when unknown."""
    llc = caches.last_level_cache()
    return None if llc is None else int(llc["reported_bytes"])


def believed_llc_bytes() -> int | None:
    """The reported last-level cache, capped by hpcai.caches' rule (a VM may overstate it)."""
    llc = caches.last_level_cache()
    return None if llc is None else int(llc["believed_bytes"])


def available_memory_bytes() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        return 8 * 2**30


def auto_n(llc_factor: float = 4) -> int:
    """Each array llc_factor x the believed last-level cache (STREAM: 4), at least
    caches.ARRAY_FLOOR_BYTES; the three arrays together at most 1/4 of the free memory."""
    if llc_factor < 1:
        raise ValueError(f"--llc-factor must be >= 1 (arrays larger than the cache), "
                         f"got {llc_factor}")
    limit = available_memory_bytes() // 4 // 3
    nbytes = caches.array_bytes_beyond_cache(believed_llc_bytes(), llc_factor, limit)
    return int(max(1_000_000, nbytes // 8))


def all_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def check_settings(n: int, repeats: int, threads: int) -> None:
    """Refuse bad input before allocating anything."""
    if n < 0:
        raise ValueError(f"--n must be an integer >= 0 (0 = auto), got {n}")
    if not 1 <= repeats <= 100:
        raise ValueError(f"--repeats must be in 1..100 (the check values grow with each "
                         f"repeat), got {repeats}")
    if threads < 0:
        raise ValueError(f"--threads must be an integer >= 0 (0 = all cores), got {threads}")
    need = 3 * 8 * n
    if need > 0.8 * available_memory_bytes():
        raise ValueError(f"--n {n}: 3 arrays of {n:,} doubles need {need / 2**30:.1f} GiB, "
                         f"more than 80 % of the available "
                         f"{available_memory_bytes() / 2**30:.1f} GiB")
    if threads > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"--threads {threads} exceeds numba's pool of "
                         f"{numba.config.NUMBA_NUM_THREADS} (set NUMBA_NUM_THREADS)")


def check(S: Any) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    n = int(S.n) or auto_n(float(S.llc_factor))
    check_settings(n, int(S.repeats), int(S.threads))


# ---------------------------------------------------------------- what the compilers made
@functools.cache
def kernel_code(kernel: Any) -> dict[str, str]:
    """LLVM IR and assembly of one of the kernels above, for float64 arrays.

    The kernels are cached on disk (cache=True), and numba cannot show the code of a cached
    function, so this compiles the same Python function with the same options, uncached."""
    fresh = njit(parallel=True, fastmath=True)(kernel.py_func)
    n_args = kernel.py_func.__code__.co_argcount
    args = [np.zeros(16) for _ in range(n_args)]
    if "s" in kernel.py_func.__code__.co_varnames[:n_args]:
        args[-1] = SCALAR
    fresh(*args)
    sig = fresh.signatures[0]
    return {"llvm": fresh.inspect_llvm(sig), "asm": fresh.inspect_asm(sig)}


def code_evidence(kernel: Any) -> dict[str, int]:
    """Counts in a kernel's code: calls to memcpy (IR and asm) and non-temporal stores."""
    code = kernel_code(kernel)
    asm_lines = [ln.split("#")[0] for ln in code["asm"].splitlines()]
    return {"llvm_memcpy": code["llvm"].count("call void @llvm.memcpy"),
            "asm_memcpy": sum("memcpy" in ln for ln in asm_lines),
            "asm_movnt": sum("movnt" in ln for ln in asm_lines)}


LD_SO = ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
         "/lib/ld-linux-aarch64.so.1")


def memcpy_nt_threshold_bytes() -> int | None:
    """glibc's x86_non_temporal_threshold: copies larger than it use non-temporal stores.

    glibc derives it from the cache sizes the processor reports; ``ld.so --list-tunables``
    prints the value this process got. None where there is no glibc on x86 to ask."""
    for ld in LD_SO:
        if not os.path.exists(ld):
            continue
        try:
            out = subprocess.run([ld, "--list-tunables"], capture_output=True, text=True,
                                 timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return None
        for line in out.splitlines():
            if line.startswith("glibc.cpu.x86_non_temporal_threshold:"):
                return int(line.split(":")[1].split()[0], 16)
    return None


def copy_at_sizes(ns: list[int], repeats: int) -> list[dict[str, Any]]:
    """The copy kernel alone at several lengths (each array n doubles): GB/s, STREAM count."""
    rows = []
    for n in ns:
        a, c = np.empty(n), np.empty(n)
        fill(a, 1.0)
        fill(c, 0.0)
        copy(a, c)  # warm-up
        if not (c[:: max(1, n // 1000)] == 1.0).all():
            raise AssertionError(f"copy n={n} gave a wrong result")
        ts = [_clock(copy, a, c) for _ in range(repeats)]
        rows.append({"n": n, "array_MiB": 8 * n / 2**20,
                     "chunk_MiB": 8 * n / numba.get_num_threads() / 2**20,
                     "GBps": gbps("copy", n, min(ts)),
                     "GBps_median": gbps("copy", n, statistics.median(ts))})
        del a, c
    return rows


_COPY_CHILD = ("import json, sys; from hpcai.launch import load_script; "
               "st = load_script('stream'); "
               "print(json.dumps({'threshold': st.memcpy_nt_threshold_bytes(), "
               "'rows': st.copy_at_sizes([int(sys.argv[1])], int(sys.argv[2]))}))")


def copy_with_nt_threshold(n: int, repeats: int, threshold_bytes: int) -> dict[str, Any]:
    """copy_at_sizes([n]) in a new process whose glibc uses another non-temporal threshold.

    glibc reads its tunables once, at process start (GLIBC_TUNABLES), hence the new process.
    Returns the threshold that process reported and its row."""
    tunable = f"glibc.cpu.x86_non_temporal_threshold={threshold_bytes:#x}"
    env = {**os.environ, "GLIBC_TUNABLES": tunable,
           "PYTHONPATH": os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")]),
           "NUMBA_NUM_THREADS": str(numba.config.NUMBA_NUM_THREADS)}
    proc = subprocess.run([sys.executable, "-c", _COPY_CHILD, str(n), str(repeats)],
                          capture_output=True, text=True, env=env, cwd=repo_root(),
                          timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"copy with {tunable} failed:\n{proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"threshold_MiB": None if out["threshold"] is None else out["threshold"] / 2**20,
            **out["rows"][0]}


# ---------------------------------------------------------------- the C reference
class CUnavailable(RuntimeError):
    """The C triad cannot be built here; the message says why."""


def build_c_triad() -> ctypes.CDLL:
    """Compile stream_triad.c once per (source, flags, compiler) into _build/cache/c/."""
    gcc = shutil.which(os.environ.get("CC", "gcc"))
    if gcc is None:
        raise CUnavailable("gcc not found on PATH (Debian/Ubuntu: apt-get install gcc); "
                           "the C/OpenMP triad comparison is skipped")
    version = subprocess.run([gcc, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256((C_SOURCE.read_text() + " ".join(C_FLAGS) + version).encode())
    lib = build_dir("cache", "c") / f"libstream_triad-{key.hexdigest()[:12]}.so"
    if not lib.exists():
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        proc = subprocess.run([gcc, *C_FLAGS, str(C_SOURCE), "-o", str(tmp)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise CUnavailable(f"compiling {C_SOURCE.name} failed ({' '.join(C_FLAGS)}):\n"
                               f"{proc.stderr.strip()}")
        tmp.replace(lib)  # atomic: parallel runs never load a half-written file
    dll = ctypes.CDLL(str(lib))
    ptr = np.ctypeslib.ndpointer(dtype=np.float64, flags="C_CONTIGUOUS")
    for name, res in (("stream_triad", None), ("stream_triad_streaming", ctypes.c_int)):
        fn = getattr(dll, name)
        fn.argtypes = [ptr, ptr, ptr, ctypes.c_double, ctypes.c_long, ctypes.c_int]
        fn.restype = res
    return dll


# ---------------------------------------------------------------- measuring
def gbps(kernel: str, n: int, seconds: float) -> float:
    return BYTES_PER_ELEMENT[kernel] * n / seconds / 1e9


def _clock(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def stream_kernels(a: np.ndarray, b: np.ndarray, c: np.ndarray, repeats: int
                   ) -> dict[str, list[float]]:
    """STREAM's loop: each repeat runs copy, scale, add, triad once; times per call (s)."""
    times: dict[str, list[float]] = {k: [] for k in BYTES_PER_ELEMENT}
    for _ in range(repeats):
        times["copy"].append(_clock(copy, a, c))
        times["scale"].append(_clock(scale, b, c, SCALAR))
        times["add"].append(_clock(add, a, b, c))
        times["triad"].append(_clock(triad, a, b, c, SCALAR))
    return times


def check_stream(a: np.ndarray, b: np.ndarray, c: np.ndarray, repeats: int) -> None:
    """Replay STREAM's loop on scalars (as STREAM's own check does) and compare."""
    aj, bj, cj = 1.0, 2.0, 0.0
    for _ in range(repeats):
        cj = aj
        bj = SCALAR * cj
        cj = aj + bj
        aj = bj + SCALAR * cj
    for name, arr, want in (("a", a, aj), ("b", b, bj), ("c", c, cj)):
        if not np.allclose(arr[:: max(1, arr.size // 1000)], want, rtol=1e-12):
            raise AssertionError(f"STREAM check failed: array {name} != {want}")


def paired_triad(a: np.ndarray, b: np.ndarray, c: np.ndarray, repeats: int, threads: int,
                 dll: ctypes.CDLL | None) -> dict[str, list[float]]:
    """numba triad, C triad and C streaming-store triad, alternating call by call."""
    out: dict[str, list[float]] = {"numba": [], "c": [], "c_streaming": []}
    n = a.size
    if dll is not None:  # warm-up the C side and check it computes the same thing
        b[:] = 2.0
        c[:] = 0.5
        dll.stream_triad(a, b, c, SCALAR, n, threads)
        if not np.allclose(a[:: max(1, n // 1000)], 3.5):
            raise AssertionError("C triad gave a wrong result")
    for _ in range(repeats):
        out["numba"].append(_clock(triad, a, b, c, SCALAR))
        if dll is not None:
            out["c"].append(_clock(dll.stream_triad, a, b, c, SCALAR, n, threads))
            out["c_streaming"].append(
                _clock(dll.stream_triad_streaming, a, b, c, SCALAR, n, threads))
    return out


def gpu_copy_bandwidth(repeats: int) -> dict[str, Any]:
    """Device-to-device copy on the GPU: bytes = 2 x size (read + write), as STREAM's copy."""
    import torch

    from hpcai.measure import time_it

    n = 2**28  # 2 GiB of fp64 per tensor
    src = torch.ones(n, dtype=torch.float64, device="cuda")
    dst = torch.empty_like(src)
    t = time_it(lambda: dst.copy_(src), warmup=3, repeats=repeats, sync="cuda")
    if not torch.equal(dst[:: 1 << 16], src[:: 1 << 16]):
        raise AssertionError("GPU copy check failed")
    return {"gpu": torch.cuda.get_device_name(0), "n": n,
            "gpu_copy_GBps": 2 * 8 * n / t.min / 1e9,
            "gpu_copy_GBps_median": 2 * 8 * n / t.median / 1e9}


def run(S: Any) -> dict[str, Any]:
    n = int(S.n) or auto_n(float(S.llc_factor))
    threads = int(S.threads) or min(all_cores(), numba.config.NUMBA_NUM_THREADS)
    check_settings(n, int(S.repeats), threads)
    numba.set_num_threads(threads)

    dll, c_reason = None, None
    if S.compare_c:
        try:
            dll = build_c_triad()
        except CUnavailable as err:
            c_reason = str(err)
            print(f"stream.py: {c_reason}", file=sys.stderr)
    else:
        c_reason = "disabled (--compare-c 0)"

    a, b, c = (np.empty(n) for _ in range(3))
    first_touch(a, b, c)  # pages are placed by the threads that use them
    stream_kernels(a, b, c, 1)  # warm-up: compile / load the kernels, start the threads
    first_touch(a, b, c)
    times = stream_kernels(a, b, c, int(S.repeats))
    check_stream(a, b, c, int(S.repeats))
    paired = paired_triad(a, b, c, int(S.repeats), threads, dll)
    del a, b, c

    out: dict[str, Any] = {"n": n, "threads": threads,
                           "numba_threading_layer": numba.threading_layer(),
                           "array_MiB": 8 * n / 2**20,
                           "llc_MiB": (last_level_cache_bytes() or 0) / 2**20,
                           "llc_believed_MiB": (believed_llc_bytes() or 0) / 2**20,
                           "llc_rule": caches.RULE_TEXT,
                           "statistic": "best of repeats (STREAM); *_median alongside"}
    # numba turns the copy loop into memcpy calls, one per thread's chunk; glibc's memcpy
    # switches to non-temporal stores above its threshold (no read of the target lines)
    nt = memcpy_nt_threshold_bytes()
    out["memcpy_nt_threshold_MiB"] = None if nt is None else nt / 2**20
    out["copy_chunk_MiB"] = 8 * n / threads / 2**20
    out["copy_chunk_above_nt_threshold"] = None if nt is None else 8 * n / threads > nt
    for k, ts in times.items():
        out[f"{k}_GBps"] = gbps(k, n, min(ts))
        out[f"{k}_GBps_median"] = gbps(k, n, statistics.median(ts))
    out["rows"] = [{"kernel": k, "median_s": Timing(ts).median, "iqr_s": Timing(ts).iqr,
                    "min_s": min(ts), "GBps": gbps(k, n, min(ts)),
                    "GBps_median": gbps(k, n, Timing(ts).median)}
                   for k, ts in times.items()]
    out["times_s"] = times
    out["paired_numba_triad_GBps"] = gbps("triad", n, min(paired["numba"]))
    if dll is not None:
        out["c_triad_GBps"] = gbps("triad", n, min(paired["c"]))
        out["c_triad_GBps_median"] = gbps("triad", n, statistics.median(paired["c"]))
        out["c_triad_streaming_GBps"] = gbps("triad", n, min(paired["c_streaming"]))
        out["triad_ratio"] = out["paired_numba_triad_GBps"] / out["c_triad_GBps"]
        out["triad_ratio_median"] = (statistics.median(paired["c"])
                                     / statistics.median(paired["numba"]))
        out["c_flags"] = " ".join(C_FLAGS[:3])
    else:
        out["c_triad_GBps"] = None
        out["triad_ratio"] = None
        out["c_skipped"] = c_reason
    out["paired_times_s"] = paired
    if S.profile in ("gpu", "cluster"):
        try:
            import torch

            if torch.cuda.is_available():
                out.update(gpu_copy_bandwidth(int(S.repeats)))
        except ImportError:  # pragma: no cover
            out["gpu_skipped"] = "torch not installed"
    return out


if __name__ == "__main__":
    # Run the kernels from the module as notebooks import it (hpcai.launch.load_script), so that
    # numba's on-disk cache (cache=True) holds one set of compiled kernels for both entry points.
    from hpcai.launch import load_script

    _mod = load_script("stream")
    bench_main(_mod.run, _mod.SIZES, description=__doc__, name="stream", check=_mod.check)
