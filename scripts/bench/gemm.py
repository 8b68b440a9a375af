"""Peak FLOP/s from a GEMM size sweep: C = A @ B for square n x n matrices.

One multiplication of two n x n matrices costs 2 n^3 floating-point operations (n^3 multiplies
and n^3 adds), whatever the library does internally, so GFLOP/s = 2 n^3 / seconds / 1e9.
On the CPU the sweep times NumPy's matmul (the BLAS NumPy was built with, all cores) in fp64
and fp32; with ``--profile gpu`` it times torch.matmul on the CUDA device in fp32 and bf16,
synchronising the device before every clock read. Each product is checked before it is timed
(Freivalds' test: C x must equal A (B x) for a random vector x).

Each row reports the median rate (``GFLOPs``) and the best one (``GFLOPs_best``). A ceiling is
the best the machine was seen to do, as HPL and STREAM report it: ``peak_GFLOPs`` is the best
rate of any row of the first dtype (fp64 on the CPU, fp32 on the GPU), and
``peak_GFLOPs_by_dtype`` holds the same for every dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcai.cli import bench_main
from hpcai.measure import time_it

SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"sizes": [64, 128, 256], "dtypes": ["float64", "float32"], "repeats": 3,
              "min_seconds": 0.002},
    "cpu": {"sizes": [64, 128, 256, 512, 1024, 1536], "dtypes": ["float64", "float32"],
            "repeats": 5, "min_seconds": 0.02},
    "gpu": {"sizes": [256, 512, 1024, 2048, 4096, 8192], "dtypes": ["float32", "bfloat16"],
            "repeats": 10, "min_seconds": 0.02},
}

CPU_DTYPES = {"float64", "float32"}
GPU_DTYPES = {"float64", "float32", "float16", "bfloat16"}


def gemm_flops(n: int) -> float:
    """Floating-point operations of one n x n by n x n product: n^3 multiplies + n^3 adds."""
    return 2.0 * n**3


def arithmetic_intensity(n: int, itemsize: int) -> float:
    """FLOPs per byte if A and B are read once and C written once (the best case)."""
    return gemm_flops(n) / (3 * n * n * itemsize)


def check_settings(sizes: list[int], dtypes: list[str], repeats: int, device: str) -> None:
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


def check(S: Any) -> None:
    """The command line's check, before any work (bench_main calls it)."""
    device = "cuda" if S.profile in ("gpu", "cluster") else "cpu"
    check_settings([int(n) for n in S.sizes], list(S.dtypes), int(S.repeats), device)


def freivalds_ok(a: Any, b: Any, c: Any, rtol: float) -> bool:
    """Check C == A @ B in O(n^2): compare C x with A (B x) for a random x."""
    x = np.random.default_rng(0).standard_normal(a.shape[1]).astype(np.float64)
    lhs = np.asarray(c, dtype=np.float64) @ x
    rhs = np.asarray(a, dtype=np.float64) @ (np.asarray(b, dtype=np.float64) @ x)
    return bool(np.linalg.norm(lhs - rhs) <= rtol * np.linalg.norm(rhs) + 1e-30)


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


def sweep_torch_cuda(sizes: list[int], dtypes: list[str], repeats: int, min_seconds: float
                     ) -> list[dict[str, Any]]:
    import torch

    rows = []
    gen = torch.Generator(device="cuda").manual_seed(42)
    for dtype in dtypes:
        tdtype = getattr(torch, dtype)
        for n in sizes:
            a = torch.randn(n, n, device="cuda", generator=gen).to(tdtype)
            b = torch.randn(n, n, device="cuda", generator=gen).to(tdtype)
            c = torch.matmul(a, b)
            torch.cuda.synchronize()
            rtol = {"float64": 1e-10, "float32": 1e-2, "float16": 3e-2, "bfloat16": 5e-2}[dtype]
            # TF32 or reduced-precision accumulation is allowed, hence the loose tolerances.
            if not freivalds_ok_torch(a, b, c, rtol):
                raise AssertionError(f"torch.matmul {dtype} n={n} failed the check")
            fn = lambda a=a, b=b: torch.matmul(a, b)  # noqa: E731
            number = _calls_per_sample(fn, min_seconds, "cuda")
            t = time_it(fn, warmup=2, repeats=repeats, number=number, sync="cuda")
            rows.append(_row("torch", "cuda", dtype, n, t))
    return rows


def blas_info() -> list[dict[str, Any]]:
    """Which BLAS NumPy calls, its version and thread count (empty if threadpoolctl is absent)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: i.get(k) for k in ("internal_api", "version", "num_threads")}
            for i in threadpool_info() if i.get("user_api") == "blas"]


def _row(library: str, device: str, dtype: str, n: int, t: Any) -> dict[str, Any]:
    itemsize = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    return {"library": library, "device": device, "dtype": dtype, "n": n,
            "median_s": t.median, "iqr_s": t.iqr, "min_s": t.min,
            "GFLOPs": gemm_flops(n) / t.median / 1e9,
            "GFLOPs_best": gemm_flops(n) / t.min / 1e9,
            "intensity_flop_per_byte": arithmetic_intensity(n, itemsize)}


def run(S: Any) -> dict[str, Any]:
    device = "cuda" if S.profile in ("gpu", "cluster") else "cpu"
    sizes, dtypes = [int(n) for n in S.sizes], list(S.dtypes)
    check_settings(sizes, dtypes, int(S.repeats), device)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("profile gpu needs CUDA; torch.cuda.is_available() is False")
        rows = sweep_torch_cuda(sizes, dtypes, int(S.repeats), float(S.min_seconds))
        extra = {"gpu": torch.cuda.get_device_name(0),
                 "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    else:
        rows = sweep_numpy(sizes, dtypes, int(S.repeats), float(S.min_seconds))
        extra = {"blas": blas_info()}
    by_dtype = {d: max(r["GFLOPs_best"] for r in rows if r["dtype"] == d) for d in dtypes}
    return {"device": device, "statistic": "rows: median and best of repeats; peak: best",
            "rows": rows,
            "peak_GFLOPs": by_dtype[dtypes[0]], "peak_dtype": dtypes[0],
            "peak_GFLOPs_by_dtype": by_dtype, **extra}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check,
               choices={"dtypes": ("float64", "float32", "float16", "bfloat16")})
