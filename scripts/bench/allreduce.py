"""All-reduce over torch.distributed: the library's and three written by hand.

Run under torchrun, one process per rank (gloo on CPU tensors, NCCL on GPUs):

    torchrun --standalone --nproc-per-node 2 scripts/bench/allreduce.py --profile cpu --json
    ... --algo ring                 # one algorithm
    ... --algo all                  # library, ring, recursive_doubling, naive in one run

For every message size and algorithm the script first checks the result against
``dist.all_reduce`` (exact integer-valued sums, so the comparison is bit for bit),
then times it. Repeats of the algorithms are interleaved (library, ring, ...,
library, ring, ...) so that a slow moment of a shared machine hits all of them
alike. One sample = ``iters`` back-to-back all-reduces between two barriers,
timed on every rank; the slowest rank's time counts. ``time_s`` is the median
over repeats, per operation.

Bandwidths follow nccl-tests (doc/PERFORMANCE.md): ``algbw = bytes / time`` and
``busbw = algbw * 2 (n-1) / n`` for all-reduce, see :mod:`hpcai.collectives`.
Only rank 0 prints; ``rows`` holds one entry per (algorithm, size).
"""

from __future__ import annotations

import os
import statistics
import time

import torch
import torch.distributed as dist

from hpcai.cli import bench_main
from hpcai.collectives import ALLREDUCE_ALGORITHMS, algbw_GBps, busbw_GBps

KiB, MiB = 1024, 1024 * 1024

SIZES = {
    # message sizes (bytes per rank) from min_bytes to max_bytes in steps of x`step`;
    # each sample runs enough operations to move about target_bytes (max_iters at most)
    "smoke": {"algo": "all", "min_bytes": 8, "max_bytes": 256 * KiB, "step": 8,
              "repeats": 3, "warmup": 1, "target_bytes": 1 * MiB, "max_iters": 20,
              "dtype": "float32"},
    "cpu": {"algo": "all", "min_bytes": 8, "max_bytes": 16 * MiB, "step": 8,
            "repeats": 7, "warmup": 2, "target_bytes": 16 * MiB, "max_iters": 20,
            "dtype": "float32"},
    "gpu": {"algo": "all", "min_bytes": 8, "max_bytes": 256 * MiB, "step": 4,
            "repeats": 10, "warmup": 3, "target_bytes": 256 * MiB, "max_iters": 100,
            "dtype": "float32"},
}

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "int32": torch.int32, "int64": torch.int64}


def message_sizes(min_bytes: int, max_bytes: int, step: int, itemsize: int) -> list[int]:
    """Geometric sizes in bytes, each a whole number of elements, always ending at max_bytes."""
    if min_bytes < itemsize or max_bytes < min_bytes or step < 2:
        raise ValueError(
            f"need itemsize <= min_bytes <= max_bytes and step >= 2; got min_bytes={min_bytes}, "
            f"max_bytes={max_bytes}, step={step}, itemsize={itemsize}"
        )
    sizes, m = [], min_bytes
    while m < max_bytes:
        sizes.append(m - m % itemsize)
        m *= step
    sizes.append(max_bytes - max_bytes % itemsize)
    return sorted(set(sizes))


def parse_algos(text: str) -> list[str]:
    """``all`` or a comma-separated list of algorithm names, checked."""
    if text == "all":
        return list(ALLREDUCE_ALGORITHMS)
    algos = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALLREDUCE_ALGORITHMS]
    if not algos or unknown:
        raise SystemExit(
            f"unknown --algo {text!r}; choose 'all' or some of {sorted(ALLREDUCE_ALGORITHMS)}"
        )
    return algos


def _check_against_library(fn, numel: int, dtype, device, rank: int) -> None:
    """The hand-written result must equal dist.all_reduce exactly (integer-valued data)."""
    x = (torch.arange(numel, device=device) % 13 + rank).to(dtype)
    expected = x.clone()
    dist.all_reduce(expected)
    fn(x)
    if not torch.equal(x, expected):
        bad = (x != expected).nonzero()[:5].flatten().tolist()
        raise AssertionError(f"{fn.__name__} differs from dist.all_reduce at indices {bad}")


def run(S) -> dict | None:
    algos = parse_algos(str(S.algo))
    dtype = _DTYPES.get(str(S.dtype))
    if dtype is None:
        raise SystemExit(f"unknown --dtype {S.dtype!r}; choose from {sorted(_DTYPES)}")
    itemsize = torch.tensor([], dtype=dtype).element_size()
    sizes = message_sizes(int(S.min_bytes), int(S.max_bytes), int(S.step), itemsize)
    if "RANK" not in os.environ:
        raise SystemExit("run me under torchrun, e.g. torchrun --nproc-per-node 2 " + __file__)

    use_cuda = torch.cuda.is_available() and S.profile in ("gpu", "cluster")
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    device = torch.device("cuda") if use_cuda else torch.device("cpu")
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    sync = torch.cuda.synchronize if use_cuda else (lambda: None)
    tmax = torch.zeros(1, dtype=torch.float64, device=device)

    def slowest(seconds: float) -> float:
        tmax.fill_(seconds)
        dist.all_reduce(tmax, op=dist.ReduceOp.MAX)
        return float(tmax.item())

    samples: dict[tuple[str, int], list[float]] = {}
    iters_of: dict[int, int] = {}
    checks_passed = 0  # (algorithm, size) pairs that matched dist.all_reduce bit for bit
    for nbytes in sizes:
        numel = nbytes // itemsize
        for name in algos:
            _check_against_library(ALLREDUCE_ALGORITHMS[name], numel, dtype, device, rank)
            checks_passed += 1
        iters = max(1, min(int(S.max_iters), int(S.target_bytes) // max(nbytes, 1)))
        iters_of[nbytes] = iters
        buf = torch.zeros(numel, dtype=dtype, device=device)  # zeros stay zeros: no overflow
        for rep in range(int(S.warmup) + int(S.repeats)):
            for name in algos:  # interleaved: noise hits every algorithm alike
                fn = ALLREDUCE_ALGORITHMS[name]
                sync()
                dist.barrier()
                t0 = time.perf_counter()
                for _ in range(iters):
                    fn(buf)
                sync()
                t = slowest(time.perf_counter() - t0) / iters
                if rep >= int(S.warmup):
                    samples.setdefault((name, nbytes), []).append(t)

    rows = []
    for name in algos:
        for nbytes in sizes:
            ts = samples[(name, nbytes)]
            t = statistics.median(ts)
            q = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) > 1 else [t, t, t]
            rows.append({"algo": name, "bytes": nbytes, "time_s": t, "iqr_s": q[2] - q[0],
                         "iters": iters_of[nbytes],
                         "algbw_GBps": algbw_GBps(nbytes, t),
                         "busbw_GBps": busbw_GBps("allreduce", nbytes, t, world)})
    dist.barrier()
    dist.destroy_process_group()
    if rank != 0:
        return None
    by_algo = {a: [r for r in rows if r["algo"] == a] for a in algos}
    out = {"rows": rows, "by_algo": by_algo, "algos": algos, "world": world,
           "ranks": world, "backend": backend, "device": str(device),
           "dtype": str(S.dtype), "checked_against_library": True,
           "checks_passed": checks_passed}
    largest = sizes[-1]
    if "ring" in algos and "library" in algos:
        ring = next(r for r in by_algo["ring"] if r["bytes"] == largest)
        lib = next(r for r in by_algo["library"] if r["bytes"] == largest)
        out["largest_bytes"] = largest
        out["ring_over_library_busbw"] = ring["busbw_GBps"] / lib["busbw_GBps"]
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__)
