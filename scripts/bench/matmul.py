"""Matrix multiplication C = A @ B, from a textbook triple loop to the vendor library.

CPU variants (numba, float64 by default):

* ``naive``    the i-j-k triple loop, one dot product per element of C;
* ``blocked``  the same arithmetic in tiles of ``tile`` x ``tile`` with a contiguous inner loop;
* ``parallel`` the blocked kernel with row tiles spread over threads (``numba.prange``);
* ``blas``     NumPy's ``A @ B`` (the BLAS library NumPy was built with).

CUDA variants (numba.cuda, float32 by default on a GPU):

* ``cuda_naive`` one thread per element of C, every operand read from global memory;
* ``cuda_tiled`` blocks of ``cuda_tile`` x ``cuda_tile`` threads stage tiles of A and B in
  shared memory, so each value fetched from global memory is used ``cuda_tile`` times;
* ``torch``      ``torch.matmul`` on the GPU (cuBLAS), the vendor reference.

CUDA variants are timed with CUDA events and need a GPU. On a machine without one, set
``NUMBA_ENABLE_CUDASIM=1`` *before* numba is imported to run the same kernels on numba's CUDA
simulator (for correctness only, at tiny sizes: simulated timings mean nothing).

Every variant is checked against NumPy before it is timed; the row says ``verified``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange

from hpcai import time_it
from hpcai.cli import bench_main

CPU_VARIANTS = ("naive", "blocked", "parallel", "blas")
GPU_VARIANTS = ("cuda_naive", "cuda_tiled", "torch")
VARIANTS = CPU_VARIANTS + GPU_VARIANTS
GROUPS = {"cpu": CPU_VARIANTS, "gpu": GPU_VARIANTS, "all": VARIANTS}

SIZES = {
    # n: matrices are n x n. variant: one name, a comma list, or cpu|gpu|all (the gpu profile
    # runs the CUDA variants only; the CPU ones at n = 4096 would take many minutes).
    # tile: CPU tile edge (elements); cuda_tile: threads per block edge (compile-time constant).
    "smoke": {"n": 128, "variant": "cpu", "tile": 32, "cuda_tile": 16, "dtype": "float64",
              "repeats": 3},
    "cpu": {"n": 512, "variant": "cpu", "tile": 32, "cuda_tile": 16, "dtype": "float64",
            "repeats": 5},
    "gpu": {"n": 4096, "variant": "gpu", "tile": 32, "cuda_tile": 16, "dtype": "float32",
            "repeats": 10},
    "cluster": {"n": 4096, "variant": "gpu", "tile": 32, "cuda_tile": 16, "dtype": "float32",
                "repeats": 10},
}


# --------------------------------------------------------------------------- CPU kernels
@njit
def matmul_naive(A, B, C):
    """C[i, j] = sum_k A[i, k] * B[k, j]; the inner loop walks down a column of B."""
    n, m = A.shape
    p = B.shape[1]
    for i in range(n):
        for j in range(p):
            acc = 0.0
            for k in range(m):  # B[k, j] jumps a whole row (p * 8 bytes) per step
                acc += A[i, k] * B[k, j]
            C[i, j] = acc


@njit
def _tile_rows(A, B, C, i0, i1, tile):
    """Accumulate rows i0:i1 of C = A @ B, one panel of `tile` rows of B at a time.

    While the rows i0:i1 are worked on, the panel B[k0:k1, :] is used by every one of them,
    so it is read from memory once and then served from cache (C rows must start at zero).
    """
    m = A.shape[1]
    p = B.shape[1]
    for k0 in range(0, m, tile):
        k1 = min(k0 + tile, m)
        for i in range(i0, i1):
            for k in range(k0, k1):
                a = A[i, k]
                for j in range(p):  # contiguous in C and B: unit stride, SIMD-friendly
                    C[i, j] += a * B[k, j]


@njit
def matmul_blocked(A, B, C, tile):
    """Tiled (blocked) matmul on one thread."""
    n = A.shape[0]
    C[:, :] = 0.0
    for i0 in range(0, n, tile):
        _tile_rows(A, B, C, i0, min(i0 + tile, n), tile)


@njit(parallel=True)
def matmul_parallel(A, B, C, tile):
    """Tiled matmul; each thread owns whole row tiles of C, so no two threads write one value."""
    n = A.shape[0]
    n_tiles = (n + tile - 1) // tile
    for t in prange(n_tiles):
        i0 = t * tile
        i1 = min(i0 + tile, n)
        C[i0:i1, :] = 0.0
        _tile_rows(A, B, C, i0, i1, tile)


def matmul_blas(A, B, C):
    """NumPy's matmul, which calls the BLAS routine dgemm/sgemm."""
    np.matmul(A, B, out=C)


# --------------------------------------------------------------------------- CUDA kernels
def cuda_mode() -> str:
    """'simulator' if NUMBA_ENABLE_CUDASIM is set, 'gpu' if numba sees a GPU, else 'none'."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return "simulator"
    return "gpu" if import_cuda().is_available() else "none"


# numba.cuda, imported on first use (see _cuda). The kernels below name it as a module
# global, which is what the simulator swaps for its fake CUDA module while a kernel runs.
cuda: Any = None


def import_cuda():
    """Import numba.cuda, making sure numba's config agrees with NUMBA_ENABLE_CUDASIM."""
    global cuda
    if cuda is None:
        from numba.core import config

        want = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
        if bool(config.ENABLE_CUDASIM) != want:
            config.reload_config()
        from numba import cuda as numba_cuda

        cuda = numba_cuda
    return cuda


_KERNELS: dict[tuple[int, str], dict[str, Callable[..., None]]] = {}


def cuda_kernels(tile: int = 16, dtype: str = "float32") -> dict[str, Callable[..., None]]:
    """Compile-on-first-call CUDA kernels: vector add, naive matmul, tiled matmul.

    ``tile`` is baked into the tiled kernel as a compile-time constant (shared-memory arrays
    need a fixed shape), so each (tile, dtype) pair gets its own kernel object.
    """
    import_cuda()
    from numba import float32, float64

    ntype = {"float32": float32, "float64": float64}[dtype]
    key = (tile, dtype)
    if key in _KERNELS:
        return _KERNELS[key]

    @cuda.jit
    def vector_add(a, b, out):
        i = cuda.grid(1)  # blockIdx.x * blockDim.x + threadIdx.x
        if i < out.size:  # the last block may stick out past the end
            out[i] = a[i] + b[i]

    # [kernel-naive]  (shown in notebooks/ch05_cuda_model.md)
    @cuda.jit
    def matmul_naive_cuda(A, B, C):
        col, row = cuda.grid(2)  # x (fastest) walks columns: neighbouring threads, neighbouring C
        if row < C.shape[0] and col < C.shape[1]:
            acc = ntype(0.0)  # accumulate in the input precision (a bare 0.0 would be float64)
            for k in range(A.shape[1]):
                acc += A[row, k] * B[k, col]
            C[row, col] = acc
    # [/kernel-naive]

    T = tile

    # [kernel-tiled]  (shown in notebooks/ch05_cuda_model.md)
    @cuda.jit
    def matmul_tiled_cuda(A, B, C):
        # one shared array per line: the simulator identifies them by source line
        sA = cuda.shared.array((T, T), ntype)
        sB = cuda.shared.array((T, T), ntype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        col = cuda.blockIdx.x * T + tx
        row = cuda.blockIdx.y * T + ty
        m = A.shape[1]
        acc = ntype(0.0)
        for t0 in range(0, m, T):
            # each thread loads one element of each tile (zero outside the matrix)
            a = ntype(0.0)
            b = ntype(0.0)
            if row < A.shape[0] and t0 + tx < m:
                a = A[row, t0 + tx]
            if col < B.shape[1] and t0 + ty < m:
                b = B[t0 + ty, col]
            sA[ty, tx] = a
            sB[ty, tx] = b
            cuda.syncthreads()  # the whole tile is loaded before anyone reads it
            for k in range(T):
                acc += sA[ty, k] * sB[k, tx]
            cuda.syncthreads()  # everyone is done reading before the next load overwrites
        if row < C.shape[0] and col < C.shape[1]:
            C[row, col] = acc
    # [/kernel-tiled]

    _KERNELS[key] = {"vector_add": vector_add, "naive": matmul_naive_cuda,
                     "tiled": matmul_tiled_cuda}
    return _KERNELS[key]


def grid_2d(n_rows: int, n_cols: int, tile: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(blocks, threads) covering an n_rows x n_cols output with tile x tile thread blocks."""
    threads = (tile, tile)  # (x = columns, y = rows)
    blocks = (math.ceil(n_cols / tile), math.ceil(n_rows / tile))
    return blocks, threads


def cuda_matmul(A: np.ndarray, B: np.ndarray, kind: str = "tiled", tile: int = 16) -> np.ndarray:
    """Host wrapper: copy A and B to the device, launch, copy C back (works on the simulator)."""
    import_cuda()
    check_shapes(A, B)
    kernels = cuda_kernels(tile, A.dtype.name)
    dA = cuda.to_device(A)
    dB = cuda.to_device(B)
    dC = cuda.device_array((A.shape[0], B.shape[1]), dtype=A.dtype)
    blocks, threads = grid_2d(A.shape[0], B.shape[1], tile)
    kernels[kind][blocks, threads](dA, dB, dC)
    return dC.copy_to_host()


# --------------------------------------------------------------------------- helpers
def check_shapes(A: np.ndarray, B: np.ndarray) -> None:
    """Fail before any work on shapes or dtypes the kernels do not handle."""
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
        raise ValueError(f"need 2-D A (n x m) and B (m x p); got {A.shape} and {B.shape}")
    if A.dtype != B.dtype or A.dtype not in (np.float32, np.float64):
        raise ValueError(f"need two float32 or two float64 arrays; got {A.dtype}, {B.dtype}")


def make_inputs(n: int, dtype: str = "float64", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two n x n matrices with entries uniform in [-1, 1), fixed seed."""
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    rng = np.random.default_rng(seed)
    A = rng.uniform(-1, 1, (n, n)).astype(dtype)
    B = rng.uniform(-1, 1, (n, n)).astype(dtype)
    return A, B


def tolerance(dtype: str, n: int) -> float:
    """Max abs error allowed against a float64 reference: a dot product of n terms can
    gather about n rounding errors of size eps (a safe, not a tight, bound)."""
    return float(20 * np.finfo(dtype).eps * n)


def verify(C: np.ndarray, ref: np.ndarray, dtype: str) -> tuple[bool, float]:
    err = float(np.max(np.abs(C.astype(np.float64) - ref)))
    return err <= tolerance(dtype, ref.shape[0]), err


def flops(n: int) -> float:
    """n^3 multiply-adds = 2 n^3 floating-point operations."""
    return 2.0 * n**3


def model_intensity(variant: str, n: int, tile: int, itemsize: int) -> float:
    """Arithmetic intensity (FLOP per byte moved from main memory) that a kernel's loop
    structure implies if only the tile it works on stays close (cache or shared memory).

    * naive (CPU or CUDA): 2 FLOPs per two operands fetched -> 1 / itemsize;
    * CUDA tiled: per tile step 2*T^2 values loaded, 2*T^3 FLOPs -> T / itemsize;
    * CPU blocked/parallel: per (row tile, k panel) step the panel of B and the row tile of C
      (read and written) cross memory, 3*T*n values for 2*T^2*n FLOPs -> 2*T / (3*itemsize);
    * BLAS: the ideal, each matrix crosses memory once -> 2 n^3 / (3 n^2 itemsize).
    """
    if variant in ("naive", "cuda_naive"):
        return 1.0 / itemsize
    if variant == "cuda_tiled":
        return tile / itemsize
    if variant in ("blocked", "parallel"):
        return 2.0 * tile / (3.0 * itemsize)
    if variant in ("blas", "torch"):
        return flops(n) / (3.0 * n * n * itemsize)
    raise ValueError(f"unknown variant {variant!r}")


def resolve_variants(spec: str) -> list[str]:
    names: list[str] = []
    for part in str(spec).split(","):
        part = part.strip()
        if part in GROUPS:
            names += [v for v in GROUPS[part] if v not in names]
        elif part in VARIANTS:
            if part not in names:
                names.append(part)
        else:
            raise ValueError(
                f"--variant: unknown variant {part!r}; choose from {', '.join(VARIANTS)} "
                "or cpu|gpu|all (one name or a comma-separated list)"
            )
    return names


# --------------------------------------------------------------------------- timing
def _row(variant: str, n: int, dtype: str, median: float, iqr: float, ok: bool, err: float,
         **extra: Any) -> dict[str, Any]:
    return {"variant": variant, "n": n, "dtype": dtype, "median_s": median, "iqr_s": iqr,
            "GFLOPs": flops(n) / median / 1e9, "verified": ok, "max_abs_err": err, **extra}


def bench_cpu(variant: str, A: np.ndarray, B: np.ndarray, ref: np.ndarray, tile: int,
              repeats: int) -> dict[str, Any]:
    """Verify one CPU variant against NumPy, then time it (the first call compiles)."""
    n = A.shape[0]
    C = np.empty_like(A)
    calls = {
        "naive": lambda: matmul_naive(A, B, C),
        "blocked": lambda: matmul_blocked(A, B, C, tile),
        "parallel": lambda: matmul_parallel(A, B, C, tile),
        "blas": lambda: matmul_blas(A, B, C),
    }
    fn = calls[variant]
    fn()  # compile (numba) and produce C
    ok, err = verify(C, ref, A.dtype.name)
    if not ok:
        raise AssertionError(f"{variant}: max abs error {err:.3g} exceeds tolerance; not timing")
    t = time_it(fn, warmup=1, repeats=repeats)
    extra: dict[str, Any] = {"tile": tile if variant in ("blocked", "parallel") else None}
    if variant == "parallel":
        import numba

        extra["threads"] = numba.get_num_threads()
    return _row(variant, n, A.dtype.name, t.median, t.iqr, ok, err, **extra)


def _event_times(launch: Callable[[], None], repeats: int, warmup: int = 2) -> np.ndarray:
    """Seconds per launch measured with CUDA events (the GPU's own clock)."""
    import_cuda()
    for _ in range(warmup):
        launch()
    cuda.synchronize()
    out = []
    for _ in range(repeats):
        start, end = cuda.event(), cuda.event()
        start.record()
        launch()
        end.record()
        end.synchronize()  # wait until the GPU has passed `end` before reading the clocks
        out.append(start.elapsed_time(end) / 1e3)  # ms -> s
    return np.array(out)


def bench_gpu(variant: str, A: np.ndarray, B: np.ndarray, ref: np.ndarray, tile: int,
              repeats: int) -> dict[str, Any]:
    """Verify one GPU variant against NumPy, then time the kernel alone with CUDA events."""
    n = A.shape[0]
    dtype = A.dtype.name
    if variant == "torch":
        import torch

        tA = torch.from_numpy(A).cuda()
        tB = torch.from_numpy(B).cuda()
        C = torch.matmul(tA, tB).cpu().numpy()
        ok, err = verify(C, ref, dtype)
        if not ok:
            raise AssertionError(f"torch: max abs error {err:.3g} exceeds tolerance; not timing")

        def launch() -> None:
            torch.matmul(tA, tB)

        times = _event_times(launch, repeats)
        extra = {"tf32": bool(torch.backends.cuda.matmul.allow_tf32)}
    else:
        kernel = cuda_kernels(tile, dtype)["naive" if variant == "cuda_naive" else "tiled"]
        dA, dB = cuda.to_device(A), cuda.to_device(B)
        dC = cuda.device_array((n, n), dtype=A.dtype)
        blocks, threads = grid_2d(n, n, tile)
        kernel[blocks, threads](dA, dB, dC)
        ok, err = verify(dC.copy_to_host(), ref, dtype)
        if not ok:
            raise AssertionError(f"{variant}: max abs error {err:.3g} exceeds tolerance")

        def launch() -> None:
            kernel[blocks, threads](dA, dB, dC)

        times = _event_times(launch, repeats)
        extra = {"tile": tile, "blocks": list(blocks), "threads": list(threads)}
    q1, med, q3 = np.percentile(times, [25, 50, 75])
    return _row(variant, n, dtype, float(med), float(q3 - q1), ok, err, timer="cuda_events",
                **extra)


DTYPES = ("float64", "float32")


def check(S) -> None:
    """Refuse bad settings before any work (bench_main calls it; so does run)."""
    variants = resolve_variants(S.variant)
    if S.n < 1 or S.tile < 1 or S.cuda_tile < 1:
        raise ValueError("--n, --tile and --cuda-tile must be positive")
    if S.cuda_tile > 32:
        raise ValueError("--cuda-tile > 32 would need more than 1024 threads per block")
    if S.dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {S.dtype!r}")
    need = 4 * S.n * S.n * 8  # A, B, C and the float64 reference
    try:
        import psutil

        free = int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover
        free = need
    if need > free // 2:
        raise ValueError(f"--n {S.n}: four {S.n} x {S.n} matrices need {need / 2**30:.1f} GiB, "
                         f"more than half of the available {free / 2**30:.1f} GiB")
    gpu_wanted = [v for v in variants if v in GPU_VARIANTS]
    if gpu_wanted and S.variant not in GROUPS and cuda_mode() != "gpu":
        raise ValueError(f"--variant: variants {gpu_wanted} need a CUDA GPU (numba.cuda: "
                         f"{cuda_mode()}); use --variant cpu here, or run on a GPU node")


def run(S) -> dict[str, Any]:
    check(S)
    variants = resolve_variants(S.variant)
    gpu_wanted = [v for v in variants if v in GPU_VARIANTS]
    mode = cuda_mode() if gpu_wanted else "not used"
    if gpu_wanted and mode != "gpu":
        if S.variant in GROUPS:  # asked for a group: run what this machine can
            variants = [v for v in variants if v in CPU_VARIANTS]
        else:
            raise ValueError(f"variants {gpu_wanted} need a CUDA GPU (numba.cuda: {mode}); "
                             "use --variant cpu here, or run on a GPU node")
    A, B = make_inputs(S.n, S.dtype)
    ref = A.astype(np.float64) @ B.astype(np.float64)
    rows = []
    for v in variants:
        bench = bench_gpu if v in GPU_VARIANTS else bench_cpu
        tile = S.cuda_tile if v in GPU_VARIANTS else S.tile
        rows.append(bench(v, A, B, ref, tile, S.repeats))
    by = {r["variant"]: r for r in rows}
    speedups = {}
    if "naive" in by:
        speedups.update({f"{v}_over_naive": by["naive"]["median_s"] / by[v]["median_s"]
                         for v in CPU_VARIANTS if v in by and v != "naive"})
    if "cuda_naive" in by:
        speedups.update({f"{v}_over_cuda_naive": by["cuda_naive"]["median_s"] / by[v]["median_s"]
                         for v in GPU_VARIANTS if v in by and v != "cuda_naive"})
    itemsize = np.dtype(S.dtype).itemsize
    for r in rows:
        tile = S.cuda_tile if r["variant"] in GPU_VARIANTS else S.tile
        r["intensity"] = model_intensity(r["variant"], S.n, tile, itemsize)
    return {"rows": rows, "speedups": speedups, "cuda": mode}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__.split("\n")[0], check=check,
               choices={"dtype": DTYPES})
