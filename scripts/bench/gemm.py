"""Peak FLOP/s from a GEMM size sweep: C = A @ B for square n x n matrices.

One multiplication of two n x n matrices costs 2 n^3 floating-point operations (n^3 multiplies
and n^3 adds), whatever the library does internally, so GFLOP/s = 2 n^3 / seconds / 1e9. For
int8 the same count is of integer operations (GOP/s), reported in the same columns.
On the CPU the sweep times NumPy's matmul (the BLAS NumPy was built with, all cores) in fp64
and fp32, and torch.matmul in bfloat16 and torch._int_mm in int8 (int8 x int8 -> int32), which
PyTorch hands to oneDNN; ``onednn`` names the implementation oneDNN chose (``amx`` in its name:
the matrix engine). With ``--profile gpu`` it times torch.matmul on the CUDA device in fp32 and
bf16, synchronising the device before every clock read. Each product is checked before it is
timed (Freivalds' test: C x must equal A (B x) for a random vector x; exactly, for int8).

Each row reports the median rate (``GFLOPs``) and the best one (``GFLOPs_best``). A ceiling is
the best the machine was seen to do, as HPL and STREAM report it: ``peak_GFLOPs`` is the best
rate of any row of the first dtype (fp64 on the CPU, fp32 on the GPU), and
``peak_GFLOPs_by_dtype`` holds the same for every dtype.

On the CPU, ``theoretical`` holds the peak each precision could reach: cores x clock x
operations per cycle of the widest unit the CPU flags announce (``FLOP_PER_CYCLE``). The clock
is ``--clock-ghz``, or with 0 the first of: cpufreq's maximum, lscpu's "CPU max MHz",
/proc/cpuinfo's "cpu MHz", BogoMIPS / 2 (a virtual machine often offers only the last two,
both the nominal clock; ``clock_source`` says which was used).
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from hpcai.cli import bench_main
from hpcai.measure import time_it

CPU_ALL = ["float64", "float32", "bfloat16", "int8"]
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"sizes": [64, 128, 256], "dtypes": CPU_ALL, "repeats": 3,
              "min_seconds": 0.002, "clock_ghz": 0.0},
    "cpu": {"sizes": [64, 128, 256, 512, 1024, 1536, 2048], "dtypes": CPU_ALL,
            "repeats": 5, "min_seconds": 0.02, "clock_ghz": 0.0},
    "gpu": {"sizes": [256, 512, 1024, 2048, 4096, 8192], "dtypes": ["float32", "bfloat16"],
            "repeats": 10, "min_seconds": 0.02, "clock_ghz": 0.0},
}

CPU_DTYPES = set(CPU_ALL)
GPU_DTYPES = {"float64", "float32", "float16", "bfloat16"}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}
NUMPY_DTYPES = {"float64", "float32"}   # timed with NumPy on the CPU; the rest with torch

# Operations per cycle per core (FLOP; int8: integer operations), 2 per multiply-add, of the
# widest unit that a CPU flag announces; first match wins. The AVX-512 rows assume two
# 512-bit FMA units per core, as on Xeon Scalable Gold/Platinum parts (a part with one has
# half); an AMX tile multiply of 16x16 by 16x32 bf16 (16x64 int8) takes 16 cycles.
FLOP_PER_CYCLE: dict[str, list[tuple[str, int, str]]] = {
    "float64": [("avx512f", 32, "2 AVX-512 FMA units x 8 lanes x 2"),
                ("fma", 16, "2 AVX2 FMA units x 4 lanes x 2")],
    "float32": [("avx512f", 64, "2 AVX-512 FMA units x 16 lanes x 2"),
                ("fma", 32, "2 AVX2 FMA units x 8 lanes x 2")],
    "bfloat16": [("amx_bf16", 1024, "AMX tile unit: 16x16x32 multiply-adds x 2 / 16 cycles"),
                 ("avx512_bf16", 128, "2 AVX-512 BF16 units x 16 lanes x 2 pairs x 2")],
    "int8": [("amx_int8", 2048, "AMX tile unit: 16x16x64 multiply-adds x 2 / 16 cycles"),
             ("avx512_vnni", 256, "2 AVX-512 VNNI units x 16 lanes x 4 bytes x 2"),
             ("avx_vnni", 128, "2 AVX-VNNI units x 8 lanes x 4 bytes x 2")],
}


def gemm_flops(n: int) -> float:
    """Floating-point operations of one n x n by n x n product: n^3 multiplies + n^3 adds."""
    return 2.0 * n**3


def arithmetic_intensity(n: int, itemsize: int) -> float:
    """FLOPs per byte if A and B are read once and C written once (the best case)."""
    return gemm_flops(n) / (3 * n * n * itemsize)


# ---------------------------------------------------------------- the theoretical peak
def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty set where there are none)."""
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    m = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return set(m.group(1).split()) if m else set()


def per_cycle(flags: set[str]) -> dict[str, dict[str, Any]]:
    """Per dtype: the widest unit the flags announce, its operations per cycle per core, and
    the next narrower unit (``vector``) where the widest is a matrix engine."""
    out: dict[str, dict[str, Any]] = {}
    for dtype, units in FLOP_PER_CYCLE.items():
        found = [(flag, ops, why) for flag, ops, why in units if flag in flags]
        if found:
            flag, ops, why = found[0]
            out[dtype] = {"flag": flag, "ops": ops, "unit": why}
            if len(found) > 1 and flag.startswith("amx"):
                out[dtype]["vector"] = {"flag": found[1][0], "ops": found[1][1],
                                        "unit": found[1][2]}
    return out


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def clock_candidates(cpuinfo: str | None = None, lscpu: str | None = None
                     ) -> dict[str, float | None]:
    """Every clock (GHz) the machine offers, by source; None where a source says nothing."""
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    if lscpu is None:
        try:
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True,
                                   env={**os.environ, "LC_ALL": "C"}, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            lscpu = ""
    khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.MULTILINE)
    bogo = re.search(r"^bogomips\s*:\s*([\d.]+)", text, re.MULTILINE | re.IGNORECASE)
    lmax = re.search(r"^CPU max MHz:\s*([\d.]+)", lscpu, re.MULTILINE)
    return {"cpufreq cpuinfo_max_freq": float(khz) / 1e6 if khz.isdigit() else None,
            "lscpu CPU max MHz": float(lmax.group(1)) / 1e3 if lmax else None,
            "/proc/cpuinfo cpu MHz": float(mhz.group(1)) / 1e3 if mhz else None,
            "BogoMIPS / 2": float(bogo.group(1)) / 2e3 if bogo else None}


def physical_cores(cpuinfo: str | None = None) -> int:
    """Cores this process may run on, counting two hardware threads of one core once."""
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    sib = re.search(r"^siblings\s*:\s*(\d+)", text, re.MULTILINE)
    cores = re.search(r"^cpu cores\s*:\s*(\d+)", text, re.MULTILINE)
    per_core = int(sib.group(1)) // int(cores.group(1)) if sib and cores else 1
    return max(1, (cpus or 1) // max(1, per_core))


def theoretical_peaks(clock_ghz: float = 0.0, cores: int | None = None,
                      flags: set[str] | None = None) -> dict[str, Any]:
    """cores x clock x operations per cycle for every dtype the CPU has a unit for.

    clock_ghz = 0 takes the first clock the machine offers (see clock_candidates)."""
    candidates = clock_candidates()
    if clock_ghz > 0:
        ghz, source = float(clock_ghz), "given (--clock-ghz)"
    else:
        ghz, source = next(((v, k) for k, v in candidates.items() if v), (None, "none"))
    cores = cores or physical_cores()
    table = per_cycle(cpu_flags() if flags is None else flags)
    peaks: dict[str, float] = {}
    vector: dict[str, float] = {}
    if ghz:
        for dtype, unit in table.items():
            peaks[dtype] = cores * ghz * unit["ops"]
            if "vector" in unit:
                vector[dtype] = cores * ghz * unit["vector"]["ops"]
    return {"clock_GHz": ghz, "clock_source": source, "clock_candidates_GHz": candidates,
            "cores": cores, "per_cycle": table, "peak_GFLOPs_by_dtype": peaks,
            "vector_peak_GFLOPs_by_dtype": vector}


# ---------------------------------------------------------------- checks
def check_settings(sizes: list[int], dtypes: list[str], repeats: int, device: str,
                   clock_ghz: float = 0.0) -> None:
    """Refuse bad input before any work."""
    if not sizes or any(int(n) < 1 or int(n) > 65536 for n in sizes):
        raise ValueError(f"--sizes must be a non-empty list of integers in 1..65536, "
                         f"got {sizes}")
    allowed = GPU_DTYPES if device == "cuda" else CPU_DTYPES
    bad = [d for d in dtypes if d not in allowed]
    if not dtypes or bad:
        raise ValueError(f"--dtypes {','.join(bad or dtypes)} not supported on {device}; "
                         f"use {', '.join(sorted(allowed))}")
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    if not 0 <= clock_ghz <= 10:
        raise ValueError(f"--clock-ghz must be in 0..10 (0: read it from the machine), "
                         f"got {clock_ghz}")


def check(S: Any) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    device = "cuda" if S.profile in ("gpu", "cluster") else "cpu"
    check_settings([int(n) for n in S.sizes], list(S.dtypes), int(S.repeats), device,
                   float(S.get("clock_ghz", 0.0)))


def freivalds_ok(a: Any, b: Any, c: Any, rtol: float) -> bool:
    """Check C == A @ B in O(n^2): compare C x with A (B x) for a random x."""
    x = np.random.default_rng(0).standard_normal(a.shape[1]).astype(np.float64)
    lhs = np.asarray(c, dtype=np.float64) @ x
    rhs = np.asarray(a, dtype=np.float64) @ (np.asarray(b, dtype=np.float64) @ x)
    return bool(np.linalg.norm(lhs - rhs) <= rtol * np.linalg.norm(rhs) + 1e-30)


def freivalds_exact(a: Any, b: Any, c: Any) -> bool:
    """Freivalds' test in int64 for integer products: C x == A (B x) exactly."""
    x = np.random.default_rng(0).integers(-8, 8, a.shape[1], dtype=np.int64)
    a64, b64, c64 = (np.asarray(m, dtype=np.int64) for m in (a, b, c))
    return bool(np.array_equal(c64 @ x, a64 @ (b64 @ x)))


def freivalds_ok_torch(a: Any, b: Any, c: Any, rtol: float) -> bool:
    """Freivalds' test on the tensors' own device, in float64 (fp32 where fp64 is slow)."""
    import torch

    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    x = torch.randn(a.shape[1], 1, device=a.device, dtype=acc,
                    generator=torch.Generator(device=a.device).manual_seed(0))
    lhs = c.to(acc) @ x
    rhs = a.to(acc) @ (b.to(acc) @ x)
    return bool(torch.linalg.norm(lhs - rhs) <= rtol * torch.linalg.norm(rhs) + 1e-30)


def _calls_per_sample(fn: Any, min_seconds: float, sync: Any) -> int:
    """Repeat fast calls inside one sample so that each sample lasts >= min_seconds.

    The probe call is also the warm-up of the timing that follows."""
    t = time_it(fn, warmup=0, repeats=1, sync=sync).median
    return max(1, int(np.ceil(min_seconds / max(t, 1e-9))))


# ---------------------------------------------------------------- the sweeps
def sweep_numpy(sizes: list[int], dtypes: list[str], repeats: int, min_seconds: float
                ) -> list[dict[str, Any]]:
    rows = []
    rng = np.random.default_rng(42)
    for dtype in dtypes:
        for n in sizes:
            a = rng.standard_normal((n, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            c = np.empty((n, n), dtype=dtype)
            np.matmul(a, b, out=c)
            rtol = 1e-10 if dtype == "float64" else 1e-4
            if not freivalds_ok(a, b, c, rtol):
                raise AssertionError(f"numpy matmul {dtype} n={n} failed the check")
            fn = lambda a=a, b=b, c=c: np.matmul(a, b, out=c)  # noqa: E731
            number = _calls_per_sample(fn, min_seconds, None)
            t = time_it(fn, warmup=0, repeats=repeats, number=number)
            rows.append(_row("numpy", "cpu", dtype, n, t))
    return rows


def torch_operands(n: int, dtype: str, device: str, gen: Any) -> tuple[Any, Any]:
    """Two random n x n tensors of `dtype` on `device` (int8: uniform in -128..127)."""
    import torch

    if dtype == "int8":
        return tuple(torch.randint(-128, 128, (n, n), dtype=torch.int8, device=device,
                                   generator=gen) for _ in range(2))
    tdtype = getattr(torch, dtype)
    return tuple(torch.randn(n, n, device=device, generator=gen).to(tdtype)
                 for _ in range(2))


def torch_product(dtype: str) -> Any:
    """The function that multiplies: torch.matmul, or torch._int_mm for int8 (-> int32)."""
    import torch

    return torch._int_mm if dtype == "int8" else torch.matmul


def sweep_torch(sizes: list[int], dtypes: list[str], repeats: int, min_seconds: float,
                device: str) -> list[dict[str, Any]]:
    """torch on `device` ("cpu" or "cuda"); on CUDA every clock read follows a sync."""
    import torch

    rows = []
    sync = "cuda" if device == "cuda" else None
    gen = torch.Generator(device=device).manual_seed(42)
    for dtype in dtypes:
        mm = torch_product(dtype)
        for n in sizes:
            a, b = torch_operands(n, dtype, device, gen)
            c = mm(a, b)
            if device == "cuda":
                torch.cuda.synchronize()
            if dtype == "int8":
                ok = freivalds_exact(a.cpu().numpy(), b.cpu().numpy(), c.cpu().numpy())
            else:
                # TF32 or reduced-precision accumulation is allowed, hence loose tolerances
                rtol = {"float64": 1e-10, "float32": 1e-2, "float16": 3e-2,
                        "bfloat16": 5e-2}[dtype]
                ok = freivalds_ok_torch(a, b, c, rtol)
            if not ok:
                raise AssertionError(f"torch {mm.__name__} {dtype} n={n} failed the check")
            fn = lambda a=a, b=b, mm=mm: mm(a, b)  # noqa: E731
            number = _calls_per_sample(fn, min_seconds, sync)
            t = time_it(fn, warmup=2, repeats=repeats, number=number, sync=sync)
            rows.append(_row("torch", device, dtype, n, t))
    return rows


def sweep_torch_cuda(sizes: list[int], dtypes: list[str], repeats: int, min_seconds: float
                     ) -> list[dict[str, Any]]:
    return sweep_torch(sizes, dtypes, repeats, min_seconds, "cuda")


def onednn_implementations(dtype: str, n: int = 256) -> list[str]:
    """What oneDNN ran for one torch product on the CPU: 'primitive:implementation' lines.

    oneDNN's verbose mode prints one line per primitive it executes, naming the kernel
    (``brg_matmul:avx10_1_512_amx`` = a matrix-engine kernel). It prints to the C library's
    standard output, so the file descriptor is redirected for the one call."""
    import torch

    a, b = torch_operands(n, dtype, "cpu", torch.Generator().manual_seed(0))
    mm = torch_product(dtype)
    mm(a, b)  # the first call may create the primitive; the verbose call then executes it
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                mm(a, b)
            libc.fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    found = []
    for line in text.splitlines():
        f = line.split(",")
        if len(f) > 6 and f[2] == "primitive" and f[3] == "exec":
            found.append(f"{f[5]}:{f[6] or '(not named)'}")
    return sorted(set(found))


def blas_info() -> list[dict[str, Any]]:
    """Which BLAS NumPy calls, its version and thread count (empty if threadpoolctl is absent)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: i.get(k) for k in ("internal_api", "version", "num_threads")}
            for i in threadpool_info() if i.get("user_api") == "blas"]


def _row(library: str, device: str, dtype: str, n: int, t: Any) -> dict[str, Any]:
    return {"library": library, "device": device, "dtype": dtype, "n": n,
            "median_s": t.median, "iqr_s": t.iqr, "min_s": t.min,
            "GFLOPs": gemm_flops(n) / t.median / 1e9,
            "GFLOPs_best": gemm_flops(n) / t.min / 1e9,
            "intensity_flop_per_byte": arithmetic_intensity(n, ITEMSIZE[dtype])}


def run(S: Any) -> dict[str, Any]:
    device = "cuda" if S.profile in ("gpu", "cluster") else "cpu"
    sizes, dtypes = [int(n) for n in S.sizes], list(S.dtypes)
    clock_ghz = float(S.get("clock_ghz", 0.0))
    check_settings(sizes, dtypes, int(S.repeats), device, clock_ghz)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("profile gpu needs CUDA; torch.cuda.is_available() is False")
        rows = sweep_torch_cuda(sizes, dtypes, int(S.repeats), float(S.min_seconds))
        extra = {"gpu": torch.cuda.get_device_name(0),
                 "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    else:
        rows = sweep_numpy(sizes, [d for d in dtypes if d in NUMPY_DTYPES], int(S.repeats),
                           float(S.min_seconds))
        on_torch = [d for d in dtypes if d not in NUMPY_DTYPES]
        extra = {"blas": blas_info(), "theoretical": theoretical_peaks(clock_ghz)}
        if on_torch:
            import torch

            rows += sweep_torch(sizes, on_torch, int(S.repeats), float(S.min_seconds),
                                "cpu")
            extra["torch_threads"] = torch.get_num_threads()
            extra["onednn"] = {d: onednn_implementations(d) for d in on_torch}
        rows.sort(key=lambda r: (dtypes.index(r["dtype"]), r["n"]))
    by_dtype = {d: max(r["GFLOPs_best"] for r in rows if r["dtype"] == d) for d in dtypes}
    return {"device": device, "statistic": "rows: median and best of repeats; peak: best",
            "rows": rows,
            "peak_GFLOPs": by_dtype[dtypes[0]], "peak_dtype": dtypes[0],
            "peak_GFLOPs_by_dtype": by_dtype, **extra}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check,
               choices={"dtypes": ("float64", "float32", "float16", "bfloat16", "int8")})
