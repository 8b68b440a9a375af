"""Eager dispatch: what one PyTorch operation costs before it does any work, and what helps.

Parts (``--parts``, comma-separated, or all):

* ``dispatch``  one eager ``torch.add(x, y, out=z)`` over sizes from 1 element up, with one
                intra-op thread, next to NumPy's ``np.add``; the fit t(n) = t0 + c*n gives
                ``overhead_us`` (t0 of the PyTorch call) and ``crossover_elems`` (n* = t0/c,
                the size at which the work equals the fixed cost, as in chapter 5);
* ``fusion``    two ways to pay the fixed cost less often: a chain of ``chain`` elementwise
                operations (multiply, add, relu, multiply, ...) as that many eager calls
                against one fused kernel doing the whole chain in one pass (numba; on a GPU
                a numba.cuda kernel on the same tensors), checked equal; and ``tensors``
                small tensors updated one ``add_`` call each against one
                ``torch._foreach_add_`` call for all of them (what ``foreach=True`` optimisers
                do);
* ``threads``   intra-op threads: a square GEMM, one training step of a wide MLP, one step
                of chapter 7's digits MLP and one tiny ``torch.add``, each at every count of
                ``thread_counts`` (``torch.set_num_threads``), samples interleaved so that a
                drift of the machine hits every count alike; CPU only. Each speed-up is
                the ratio of medians, with a range from the quartiles (q1/q3 .. q3/q1)
                and the ratio of the best samples (the quietest moments of the machine).

With profile ``gpu`` and a CUDA device the first two parts run on the GPU, with
``torch.cuda.synchronize`` before each clock read: a sample queues many calls and waits for
the last, so tiny sizes measure the launch-bound rate. NumPy stays on the CPU for comparison.

``rows``: one entry per implementation and size, with the time of one call (for ``loop_add``
and ``foreach_add`` the time of updating all ``tensors`` tensors): ``median_s``, ``iqr_s``
(the spread) and ``best_s``. The fits use the best sample of each size (noise only adds).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from hpcai.cli import bench_main
from hpcai.fixedcost import series, sizes, time_call
from hpcai.measure import time_it

SIZES = {
    # sizes 10**lo .. 10**hi elements (float32), per_decade points per factor of ten; hi = 5
    # keeps every operand in the caches (chapter 5, Task 5.15), where one c fits.
    # target_s: length of one timed sample (tiny calls are repeated inside it).
    # chain: elementwise operations in the chain; tensors: tensors per foreach update.
    # gemm_n: square GEMM of the threads part; wide: width of its wide MLP.
    "smoke": {"lo": 0, "hi": 5, "per_decade": 1, "repeats": 5, "target_s": 0.002,
              "chain": 4, "tensors": 32, "gemm_n": 256, "wide": 256, "wide_batch": 64,
              "thread_counts": [1, 2], "thread_repeats": 5,
              "parts": "dispatch,fusion,threads"},
    "cpu": {"lo": 0, "hi": 5, "per_decade": 3, "repeats": 7, "target_s": 0.005,
            "chain": 4, "tensors": 32, "gemm_n": 1024, "wide": 1024, "wide_batch": 256,
            "thread_counts": [1, 2], "thread_repeats": 9,
            "parts": "dispatch,fusion,threads"},
    "gpu": {"lo": 0, "hi": 8, "per_decade": 2, "repeats": 7, "target_s": 0.005,
            "chain": 4, "tensors": 32, "gemm_n": 2048, "wide": 2048, "wide_batch": 512,
            "thread_counts": [1, 2, 4, 8], "thread_repeats": 7,
            "parts": "dispatch,fusion,threads"},
}
SIZES["cluster"] = SIZES["gpu"]
PARTS = ("dispatch", "fusion", "threads")
CHAIN_OPS = ("mul", "add", "relu", "mul2")   # cycled: x*a, +b, relu, *s, x*a, ...
A, B, SCALE = 1.0001, 0.5, 0.999             # constants of the chain
DIGITS_SIZES = [64, 64, 10]                  # chapter 7's first network
DIGITS_BATCH = 32


# ------------------------------------------------------------------ the chain, two ways
def eager_chain(x: Any, out: Any, k: int) -> Any:
    """``k`` elementwise operations as ``k`` eager PyTorch calls (the first writes ``out``)."""
    import torch

    torch.mul(x, A, out=out)
    for j in range(1, k):
        op = CHAIN_OPS[j % 4]
        if op == "mul":
            out.mul_(A)
        elif op == "add":
            out.add_(B)
        elif op == "relu":
            out.relu_()
        else:
            out.mul_(SCALE)
    return out


def _chain_body(k: int) -> Callable[[Any], Any]:
    """The chain on one value, for numba: ``k`` is a constant, so the loop unrolls away."""
    from numba import njit

    a, b, s, zero = np.float32(A), np.float32(B), np.float32(SCALE), np.float32(0.0)

    @njit(inline="always")
    def body(v):
        v = v * a
        for j in range(1, k):
            op = j % 4
            if op == 0:
                v = v * a
            elif op == 1:
                v = v + b
            elif op == 2:
                v = max(v, zero)
            else:
                v = v * s
        return v

    return body


def _cpu_fused(k: int) -> Callable[[Any, Any], None]:
    from numba import njit

    body = _chain_body(k)

    @njit
    def fused_chain(x, out):
        """The whole chain in one pass over memory: one call, one read, one write."""
        for i in range(x.size):
            out[i] = body(x[i])

    return fused_chain


def _gpu_fused(k: int) -> Callable[[Any, Any], None]:
    from numba import cuda

    body = _chain_body(k)
    dev_body = cuda.jit(device=True)(body.py_func)

    @cuda.jit
    def fused_kernel(x, out):
        i = cuda.grid(1)
        if i < x.size:
            out[i] = dev_body(x[i])

    def fused_chain(x, out):
        tpb = 256
        fused_kernel[(x.size + tpb - 1) // tpb, tpb](x, out)

    return fused_chain


# ------------------------------------------------------------------ parts
def _rows(impl: str, s: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"impl": impl, "size": n, "median_s": m, "iqr_s": q, "best_s": b}
            for n, m, q, b in zip(s["n"], s["median_s"], s["iqr_s"], s["best_s"])]


def part_dispatch(S, ns: list[int], device: str, sync: Any) -> dict[str, dict[str, Any]]:
    import torch

    def make(n: int) -> Callable[[], Any]:
        x, y, z = (torch.ones(n, device=device) for _ in range(3))
        return lambda: torch.add(x, y, out=z)

    def make_np(n: int) -> Callable[[], Any]:
        x, y, z = np.ones(n, np.float32), np.ones(n, np.float32), np.empty(n, np.float32)
        return lambda: np.add(x, y, out=z)

    return {"torch_add": series(make, ns, target_s=S.target_s, repeats=S.repeats,
                                sync=sync),
            "numpy_add": series(make_np, ns, target_s=S.target_s, repeats=S.repeats)}


def part_fusion(S, ns: list[int], device: str, sync: Any) -> tuple[dict, dict]:
    import torch

    k = S.chain
    if device == "cuda":
        from numba import cuda

        fused, view = _gpu_fused(k), cuda.as_cuda_array
    else:
        fused, view = _cpu_fused(k), (lambda t: t.numpy())
    # correctness first: the fused kernel must compute what the eager chain computes
    x = torch.linspace(-1, 1, 10_001, device=device)
    ref = eager_chain(x, torch.empty_like(x), k)
    got = torch.empty_like(x)
    fused(view(x), view(got))
    if sync:
        torch.cuda.synchronize()
    err = float((got - ref).abs().max())
    if err > 1e-5:
        raise RuntimeError(f"fused chain differs from the eager chain by {err:.2e}")

    def make_eager(n: int) -> Callable[[], Any]:
        x, out = torch.ones(n, device=device), torch.empty(n, device=device)
        return lambda: eager_chain(x, out, k)

    def make_fused(n: int) -> Callable[[], Any]:
        x, out = torch.ones(n, device=device), torch.empty(n, device=device)
        xv, ov = view(x), view(out)
        return lambda: fused(xv, ov)

    def tensors(n: int) -> tuple[list[Any], list[Any]]:
        ps = [torch.ones(n, device=device) for _ in range(S.tensors)]
        gs = [torch.full((n,), 1e-3, device=device) for _ in range(S.tensors)]
        return ps, gs

    def make_loop(n: int) -> Callable[[], Any]:
        ps, gs = tensors(n)

        def step() -> None:
            for p, g in zip(ps, gs):
                p.add_(g, alpha=-0.1)
        return step

    def make_foreach(n: int) -> Callable[[], Any]:
        ps, gs = tensors(n)
        return lambda: torch._foreach_add_(ps, gs, alpha=-0.1)

    kw = {"target_s": S.target_s, "repeats": S.repeats, "sync": sync}
    out = {"eager_chain": series(make_eager, ns, **kw),
           "fused_chain": series(make_fused, ns, **kw),
           "loop_add": series(make_loop, ns, **kw),
           "foreach_add": series(make_foreach, ns, **kw)}
    return out, {"fused_max_abs_err": err, "fused_with": "numba.cuda" if sync else "numba"}


def _quartiles(times: list[float]) -> tuple[float, float, float]:
    if len(times) < 2:
        return times[0], times[0], times[0]
    q1, q2, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return q1, q2, q3


def _train_step(sizes_: list[int], batch: int) -> Callable[[], Any]:
    """One SGD step (forward, loss, backward, update) of an MLP on a fixed random batch.

    The update is written out (``p -= lr * grad``, what ``torch.optim.SGD`` does without
    momentum): constructing a ``torch.optim`` optimiser costs a second of imports here.
    """
    import torch

    from hpcai.nn import torch_mlp

    gen = torch.Generator().manual_seed(0)
    model = torch_mlp(sizes_)
    params = list(model.parameters())
    X = torch.randn(batch, sizes_[0], generator=gen)
    y = torch.randint(0, sizes_[-1], (batch,), generator=gen)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        for p in params:
            p.grad = None
        loss_fn(model(X), y).backward()
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-1e-3)
    return step


def part_threads(S) -> dict[str, Any]:
    import torch

    n = S.gemm_n
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    c = torch.empty(n, n)
    x, y, z = torch.ones(100), torch.ones(100), torch.empty(100)
    works: dict[str, Callable[[], Any]] = {
        "gemm": lambda: torch.mm(a, b, out=c),
        "wide_step": _train_step([64, S.wide, S.wide, 10], S.wide_batch),
        "digits_step": _train_step(DIGITS_SIZES, DIGITS_BATCH),
        "tiny_add": lambda: torch.add(x, y, out=z),
    }
    counts = list(S.thread_counts)
    before = torch.get_num_threads()
    rows, speedups = [], {}
    try:
        for name, fn in works.items():
            torch.set_num_threads(counts[0])
            # calls per sample from the one-thread probe, the same for every count
            probe = time_call(fn, target_s=S.target_s, repeats=1).median
            number = int(min(10_000, max(1, 4 * S.target_s / max(probe, 1e-8))))
            samples: dict[int, list[float]] = {t: [] for t in counts}
            for t in counts:                       # warm each pool size once
                torch.set_num_threads(t)
                fn()
            for _ in range(S.thread_repeats):
                for t in counts:
                    torch.set_num_threads(t)
                    samples[t].append(time_it(fn, warmup=1, repeats=1, number=number).min)
            for t in counts:
                q1, med, q3 = _quartiles(samples[t])
                rows.append({"work": name, "threads": t, "median_s": med, "iqr_s": q3 - q1,
                             "best_s": min(samples[t]), "number": number})
            q1a, meda, q3a = _quartiles(samples[counts[0]])
            speedups[name] = {}
            for t in counts[1:]:
                q1b, medb, q3b = _quartiles(samples[t])
                speedups[name][str(t)] = {"speedup": meda / medb, "lo": q1a / q3b,
                                          "hi": q3a / q1b,
                                          "best": min(samples[counts[0]]) / min(samples[t])}
    finally:
        torch.set_num_threads(before)
    gemm_gflops = {r["threads"]: 2 * n**3 / r["median_s"] / 1e9 for r in rows
                   if r["work"] == "gemm"}
    return {"counts": counts, "rows": rows, "speedups": speedups,
            "gemm_n": n, "gemm_GFLOPs": {str(t): g for t, g in gemm_gflops.items()},
            "wide_sizes": [64, S.wide, S.wide, 10], "wide_batch": S.wide_batch,
            "digits_sizes": DIGITS_SIZES, "digits_batch": DIGITS_BATCH, "tiny_elems": 100,
            "parallel_backend": next((line.split(":", 1)[1].strip() for line in
                                      torch.__config__.parallel_info().splitlines()
                                      if line.startswith("ATen parallel backend")), "?")}


# ------------------------------------------------------------------ driver
def wanted_parts(spec: str) -> list[str]:
    """The parts named by --parts (a comma-separated list, or all)."""
    wanted = [p.strip() for p in spec.split(",") if p.strip()]
    if wanted == ["all"]:
        return list(PARTS)
    unknown = [p for p in wanted if p not in PARTS]
    if unknown or not wanted:
        raise ValueError(f"--parts: unknown parts {unknown}; choose from "
                         f"{', '.join(PARTS)} (comma-separated) or all")
    return wanted


def check(S) -> None:
    """Refuse bad settings before any work (bench_main calls it; so does run)."""
    sizes(S.lo, S.hi, S.per_decade)
    wanted_parts(S.parts)
    if S.chain < 1:
        raise ValueError(f"--chain must be at least 1, got {S.chain}")
    counts = list(S.thread_counts)
    cores = os.cpu_count() or 1
    if len(counts) < 2 or len(set(counts)) != len(counts) or max(counts) > cores:
        raise ValueError(f"--thread-counts needs at least two different counts, each at "
                         f"most this machine's {cores} logical cores; got {counts}")


def run(S) -> dict[str, Any]:
    check(S)
    import torch

    device = "cuda" if S.profile in ("gpu", "cluster") and torch.cuda.is_available() \
        else "cpu"
    sync = "cuda" if device == "cuda" else None
    ns = sizes(S.lo, S.hi, S.per_decade)
    wanted = wanted_parts(S.parts)
    out: dict[str, Any] = {"device": device, "sizes": ns, "intra_op_threads": 1}
    found: dict[str, dict[str, Any]] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(1)   # like NumPy's add: dispatch alone, no thread pool to wake
    try:
        if "dispatch" in wanted:
            found.update(part_dispatch(S, ns, device, sync))
        if "fusion" in wanted:
            series_, info = part_fusion(S, ns, device, sync)
            found.update(series_)
            out.update(info, chain_k=S.chain, tensors=S.tensors)
    finally:
        torch.set_num_threads(before)
    out["rows"] = [row for impl, s in found.items() for row in _rows(impl, s)]
    out["fits"] = {impl: s["fit"] for impl, s in found.items()}
    if "torch_add" in found:
        fit = found["torch_add"]["fit"]
        out["overhead_us"] = fit["t0_s"] * 1e6
        out["crossover_elems"] = fit["n_star"]
        out["numpy_overhead_us"] = found["numpy_add"]["fit"]["t0_s"] * 1e6
    if "eager_chain" in found:
        e, f = found["eager_chain"]["best_s"], found["fused_chain"]["best_s"]
        lp, fe = found["loop_add"]["best_s"], found["foreach_add"]["best_s"]
        out["fusion_gain"] = {"small": e[0] / f[0], "large": e[-1] / f[-1]}
        out["foreach_gain"] = {"small": lp[0] / fe[0], "large": lp[-1] / fe[-1]}
    if "threads" in wanted:
        out["threads"] = part_threads(S)
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__.split("\n")[0], check=check)
