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
timed on every rank; the slowest rank's time counts. ``median_s`` and ``iqr_s``
are the median and inter-quartile range over repeats, per operation.

Bandwidths follow nccl-tests (doc/PERFORMANCE.md): ``algbw = bytes / time`` and
``busbw = algbw * 2 (n-1) / n`` for all-reduce, see :mod:`hpcai.dist`.
Only rank 0 prints; ``rows`` holds one entry per (algorithm, size) and
``placement`` the node of every rank.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from hpcai import dist as hd
from hpcai.allreduce import ALLREDUCE_ALGORITHMS
from hpcai.cli import bench_main
from hpcai.dist import algbw_GBps, busbw_GBps
from hpcai.measure import Timing

# torch takes seconds to import: the functions import it when they run, so that a bad
# command-line value is refused at once
if TYPE_CHECKING:
    import torch

KiB, MiB = 1024, 1024 * 1024

SIZES = {
    # message sizes (bytes per rank) from min_bytes to max_bytes in steps of x`step`;
    # each sample runs enough operations to move about target_bytes (max_iters at most)
    "smoke": {"algo": "all", "min_bytes": 8, "max_bytes": 256 * KiB, "step": 8,
              "repeats": 3, "warmup": 1, "target_bytes": 1 * MiB, "max_iters": 20,
              "dtype": "float32", "backend": "gloo"},
    "cpu": {"algo": "all", "min_bytes": 8, "max_bytes": 16 * MiB, "step": 8,
            "repeats": 7, "warmup": 2, "target_bytes": 16 * MiB, "max_iters": 20,
            "dtype": "float32", "backend": "gloo"},
    "gpu": {"algo": "all", "min_bytes": 8, "max_bytes": 256 * MiB, "step": 4,
            "repeats": 10, "warmup": 3, "target_bytes": 256 * MiB, "max_iters": 100,
            "dtype": "float32", "backend": "auto"},
}

# bytes per element of each torch dtype by name (run() checks them against torch)
_DTYPES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int32": 4, "int64": 8}


def parse_algos(text: str) -> list[str]:
    """``all`` or a comma-separated list of algorithm names; ``ValueError`` otherwise."""
    if text == "all":
        return list(ALLREDUCE_ALGORITHMS)
    algos = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALLREDUCE_ALGORITHMS]
    if not algos or unknown:
        raise ValueError(f"--algo must be all or a comma-separated list drawn from "
                         f"{', '.join(ALLREDUCE_ALGORITHMS)}; got {text!r}")
    return algos


def itemsize_of(dtype: str) -> int:
    """Bytes per element of ``dtype`` (a key of ``_DTYPES``)."""
    return _DTYPES[dtype]


def sizes_of(S: Any) -> list[int]:
    """The message sizes of a run: whole elements, ``min_bytes`` to ``max_bytes``."""
    return hd.message_sizes(int(S.min_bytes), int(S.max_bytes), int(S.step),
                            itemsize_of(str(S.dtype)))


def check_settings(S: Any) -> None:
    """Bad algorithm names or size bounds, refused before any work."""
    parse_algos(str(S.algo))
    sizes_of(S)


def _check_against_library(fn: Any, numel: int, dtype: torch.dtype, device: torch.device,
                           rank: int) -> None:
    """The hand-written result must equal dist.all_reduce exactly (integer-valued data)."""
    import torch
    import torch.distributed as dist

    x = (torch.arange(numel, device=device) % 13 + rank).to(dtype)
    expected = x.clone()
    dist.all_reduce(expected)
    fn(x)
    if not torch.equal(x, expected):
        bad = (x != expected).nonzero()[:5].flatten().tolist()
        raise AssertionError(f"{fn.__name__} differs from dist.all_reduce at indices {bad}")


def run(S: Any) -> dict[str, Any] | None:
    import torch
    import torch.distributed as dist

    algos = parse_algos(str(S.algo))
    dtype = getattr(torch, str(S.dtype))
    itemsize = itemsize_of(str(S.dtype))
    assert torch.empty((), dtype=dtype).element_size() == itemsize, S.dtype
    sizes = sizes_of(S)
    world = hd.init(str(S.backend))
    rank, device = world.rank, world.device

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
                world.sync()
                dist.barrier()
                t0 = time.perf_counter()
                for _ in range(iters):
                    fn(buf)
                world.sync()
                t = hd.slowest(time.perf_counter() - t0) / iters
                if rep >= int(S.warmup):
                    samples.setdefault((name, nbytes), []).append(t)

    rows = []
    for name in algos:
        for nbytes in sizes:
            timing = Timing(samples[(name, nbytes)])
            t = timing.median
            rows.append({"algo": name, "bytes": nbytes, "median_s": t, "iqr_s": timing.iqr,
                         "iters": iters_of[nbytes],
                         "algbw_GBps": algbw_GBps(nbytes, t),
                         "busbw_GBps": busbw_GBps("allreduce", nbytes, t, world.size)})
    placement = hd.placement()
    hd.teardown()
    if rank != 0:
        return None
    by_algo = {a: [r for r in rows if r["algo"] == a] for a in algos}
    out = {"rows": rows, "by_algo": by_algo, "algos": algos, "world": world.size,
           "ranks": world.size, "backend": world.backend, "device": str(device),
           "dtype": str(S.dtype), "checked_against_library": True,
           "checks_passed": checks_passed, "placement": placement}
    largest = sizes[-1]
    # With one rank nothing crosses a link (busbw is 0 by definition): no ratio then.
    if "ring" in algos and "library" in algos and world.size > 1:
        ring = next(r for r in by_algo["ring"] if r["bytes"] == largest)
        lib = next(r for r in by_algo["library"] if r["bytes"] == largest)
        out["largest_bytes"] = largest
        out["ring_over_library_busbw"] = ring["busbw_GBps"] / lib["busbw_GBps"]
    return out


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"dtype": tuple(_DTYPES), "backend": hd.BACKENDS})
