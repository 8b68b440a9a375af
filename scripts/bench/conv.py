"""One 2-D convolution three ways: a direct loop, im2col + one GEMM, and torch's conv2d.

The layer is ``x (N, C_in, H, W)`` convolved with ``w (C_out, C_in, k, k)`` at ``stride`` and
``padding``, in float32. Three implementations compute it on the CPU, all on every core:

* ``direct``: the loop nest of the definition, compiled by Numba (hpcai.conv.conv2d_direct);
* ``im2col``: the patches copied into an ``(N H_out W_out, C_in k k)`` matrix, then one NumPy
  matmul (hpcai.conv.conv2d_im2col);
* ``torch``: torch.nn.functional.conv2d (oneDNN on a CPU).

Each is checked against torch.nn.functional.conv2d on the CPU before it is timed; ``max_abs_err``
is the largest absolute difference over the CPU implementations (float32, outputs of order 1).
Each timing follows ``warmup`` untimed calls (the first call of the direct loop compiles it, so
the compile time is never timed) and reports the median of ``repeats`` samples, the
inter-quartile range and the best, with GFLOP/s = ``2 N C_out H_out W_out C_in k k`` / median.

With ``--profile gpu`` (or cluster) and CUDA, two rows more: torch's conv2d on the GPU
(cuDNN) and im2col on the GPU (``F.unfold`` + one matmul), the device synchronised before every
clock read; their largest difference from the CPU result is ``max_abs_err_cuda`` (cuDNN and
cuBLAS may use TF32 for float32, so expect about 1e-3, not 1e-6; the flags are reported).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from hpcai import conv
from hpcai.cli import bench_main
from hpcai.measure import time_it

if TYPE_CHECKING:
    import torch

SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"batch": 4, "c_in": 8, "c_out": 16, "image": 16, "kernel": 3, "stride": 1,
              "padding": 0, "repeats": 3, "warmup": 1},
    "cpu": {"batch": 8, "c_in": 16, "c_out": 32, "image": 32, "kernel": 3, "stride": 1,
            "padding": 1, "repeats": 7, "warmup": 2},
    "gpu": {"batch": 16, "c_in": 32, "c_out": 64, "image": 56, "kernel": 3, "stride": 1,
            "padding": 1, "repeats": 10, "warmup": 3},
}
SIZES["cluster"] = SIZES["gpu"]


def check(S: Any) -> None:
    """Refuse a kernel that does not fit the padded image, before any work."""
    if S.padding < 0:
        raise ValueError(f"--padding must be >= 0, got {S.padding}")
    conv.out_size(int(S.image), int(S.kernel), int(S.stride), int(S.padding))
    if S.warmup < 1:
        raise ValueError("--warmup must be >= 1 (the first call compiles the direct loop)")


def operands(S: Any) -> tuple[np.ndarray, np.ndarray]:
    """A random input and weights scaled by 1/sqrt(fan-in), so outputs are of order 1."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((S.batch, S.c_in, S.image, S.image)).astype(np.float32)
    fan_in = S.c_in * S.kernel * S.kernel
    w = (rng.standard_normal((S.c_out, S.c_in, S.kernel, S.kernel))
         / np.sqrt(fan_in)).astype(np.float32)
    return x, w


def _row(impl: str, device: str, t: Any, flops: int) -> dict[str, Any]:
    return {"impl": impl, "device": device, "median_s": t.median, "iqr_s": t.iqr,
            "min_s": t.min, "repeats": len(t.times), "GFLOPs": flops / t.median / 1e9,
            "GFLOPs_best": flops / t.min / 1e9}


def im2col_torch(x: torch.Tensor, w: torch.Tensor, stride: int, padding: int
                 ) -> torch.Tensor:
    """im2col on any device: F.unfold gives (N, C_in k k, L) columns; one matmul."""
    import torch.nn.functional as F
    N, C_out, k = x.shape[0], w.shape[0], w.shape[2]
    H_out = conv.out_size(x.shape[2], k, stride, padding)
    W_out = conv.out_size(x.shape[3], k, stride, padding)
    cols = F.unfold(x, k, padding=padding, stride=stride)          # (N, C_in k k, L)
    out = w.reshape(C_out, -1) @ cols                              # (N, C_out, L)
    return out.reshape(N, C_out, H_out, W_out)


def run(S: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    on_gpu = S.profile in ("gpu", "cluster")
    if on_gpu and not torch.cuda.is_available():
        raise RuntimeError("profile gpu needs CUDA; torch.cuda.is_available() is False")
    x, w = operands(S)
    s, p = int(S.stride), int(S.padding)
    flops = conv.conv_flops(S.batch, S.c_in, S.image, S.image, S.c_out, S.kernel, s, p)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    ref = F.conv2d(xt, wt, stride=s, padding=p).numpy()
    impls = {"direct": lambda: conv.conv2d_direct(x, w, None, s, p),
             "im2col": lambda: conv.conv2d_im2col(x, w, None, s, p),
             "torch": lambda: F.conv2d(xt, wt, stride=s, padding=p).numpy()}
    rows, errs = [], {}
    for impl, fn in impls.items():
        errs[impl] = float(np.abs(fn() - ref).max())     # also the direct loop's compile
        t = time_it(fn, warmup=int(S.warmup), repeats=int(S.repeats))
        rows.append(_row(impl, "cpu", t, flops))
    out: dict[str, Any] = {
        "dtype": "float32", "device": "cuda" if on_gpu else "cpu",
        "x_shape": list(x.shape), "w_shape": list(w.shape), "out_shape": list(ref.shape),
        "stride": s, "padding": p, "flops": flops,
        "im2col_bytes": conv.im2col_bytes(S.batch, S.c_in, S.image, S.image, S.kernel, s, p,
                                          itemsize=4),
        "input_bytes": conv.input_bytes(S.batch, S.c_in, S.image, S.image, itemsize=4),
        "max_abs_err": max(errs.values()), "abs_err_by_impl": errs,
        "torch_threads": torch.get_num_threads(), "numba_threads": conv.numba.get_num_threads(),
    }
    if on_gpu:
        xg, wg = xt.cuda(), wt.cuda()
        gpu = {"torch": lambda: F.conv2d(xg, wg, stride=s, padding=p),
               "im2col": lambda: im2col_torch(xg, wg, s, p)}
        cuda_errs = {}
        for impl, fn in gpu.items():
            cuda_errs[impl] = float((fn().cpu() - torch.from_numpy(ref)).abs().max())
            t = time_it(fn, warmup=int(S.warmup), repeats=int(S.repeats), sync="cuda")
            rows.append(_row(impl, "cuda", t, flops))
        out.update(gpu=torch.cuda.get_device_name(0), max_abs_err_cuda=max(cuda_errs.values()),
                   abs_err_cuda_by_impl=cuda_errs,
                   cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32),
                   matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    by = {r["impl"]: r["median_s"] for r in rows if r["device"] == "cpu"}
    best = {r["impl"]: r["min_s"] for r in rows if r["device"] == "cpu"}
    out.update(rows=rows, im2col_speedup=by["direct"] / by["im2col"],
               torch_over_im2col=by["im2col"] / by["torch"],
               im2col_speedup_best=best["direct"] / best["im2col"],
               torch_over_im2col_best=best["im2col"] / best["torch"],
               statistic="median, IQR and best of repeats after warm-up; the speed-ups "
                         "are ratios of medians (_best: of the best samples)")
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
