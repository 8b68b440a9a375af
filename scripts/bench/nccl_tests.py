"""Collective bandwidth over torch.distributed, reported the way nccl-tests reports it.

Times all-reduce, all-gather, reduce-scatter and broadcast (the backend's own
implementations: gloo on CPUs, NCCL on GPUs) over a sweep of message sizes, and, in the
same run, the hand-written ring all-reduce of chapter 4 (``hpcai.allreduce``). Every
operation is checked against the exact expected result before it is timed. Each row reports
``median_s`` and ``iqr_s``: the slowest rank's median and inter-quartile range over repeats.

Run it under a launcher, one process per rank (one per GPU on a GPU node)::

    torchrun --nproc-per-node 2 scripts/bench/nccl_tests.py --profile cpu --json

Sizes follow nccl-tests: for all-gather and reduce-scatter ``bytes`` is the size of the
full (gathered, or to-be-scattered) buffer, i.e. world size times the per-rank chunk.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpcai import Timing, time_it
from hpcai import dist as hd
from hpcai.allreduce import ring_allreduce_
from hpcai.cli import bench_main
from hpcai.dist import algbw_GBps, busbw_factor, busbw_GBps

# torch takes seconds to import: the functions import it when they run, so that a bad
# command-line value is refused at once
if TYPE_CHECKING:
    import torch

SIZES: dict[str, dict[str, Any]] = {
    # nproc is read by the launchers (notebook, job script); the script itself uses the
    # world size torchrun gives it.
    "smoke": {"nproc": 2, "min_bytes": 1024, "max_bytes": 2**18, "factor": 16,
              "warmup": 1, "repeats": 3, "iters": 1, "backend": "gloo"},
    "cpu": {"nproc": 2, "min_bytes": 1024, "max_bytes": 16 * 2**20, "factor": 4,
            "warmup": 2, "repeats": 7, "iters": 3, "backend": "gloo"},
    "gpu": {"nproc": 0, "min_bytes": 2**16, "max_bytes": 2**30, "factor": 4,
            "warmup": 5, "repeats": 10, "iters": 20, "backend": "auto"},
    "cluster": {"nproc": 0, "min_bytes": 2**16, "max_bytes": 2**31, "factor": 4,
                "warmup": 5, "repeats": 10, "iters": 20, "backend": "auto"},
}

OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
BUSBW_NAME = {"all_reduce": "allreduce", "all_gather": "allgather",
              "reduce_scatter": "reducescatter", "broadcast": "broadcast",
              "ring_allreduce": "allreduce"}
DTYPE = "float32"  # the torch dtype, by name
ITEM = 4  # bytes per float32


# --------------------------------------------------------------------------- setup
def _pick(*names: str) -> tuple[str, Callable[..., Any]]:
    """The first of ``names`` this torch.distributed provides (APIs were renamed over time)."""
    import torch.distributed as dist

    for name in names:
        if hasattr(dist, name):
            return name, getattr(dist, name)
    raise RuntimeError(f"torch.distributed offers none of {names}")


def count_for(nbytes: int, world: int) -> int:
    """Number of float32 elements: ``nbytes`` rounded down to a multiple of 4 * world (>= world)."""
    return max(world, (nbytes // ITEM) // world * world)


def size_sweep(S: Any) -> list[int]:
    """The message sizes of a run: ``min_bytes`` times powers of ``factor``, and ``max_bytes``."""
    return hd.message_sizes(int(S.min_bytes), int(S.max_bytes), int(S.factor), ITEM)


def check_settings(S: Any) -> None:
    """Bad size bounds, refused before any work (bench_main checks the numbers' signs)."""
    size_sweep(S)


# --------------------------------------------------------------------------- one operation
OpParts = tuple[Callable[[], Any], Callable[[], bool], Callable[[], Any]]


def make_op(op: str, count: int, rank: int, world: int, device: torch.device,
            api: dict[str, str]) -> OpParts:
    """Buffers for ``op`` on ``count`` elements, returning (run, check, zero).

    Inputs hold small integers (exact in float32): rank r's element i is ``i % 7 + r + 1``,
    so every expected result is known exactly. ``check`` runs the operation once on those
    inputs and compares; ``zero`` clears the buffers before timing so that repeated
    in-place sums cannot overflow.
    """
    import torch
    import torch.distributed as dist

    dtype = getattr(torch, DTYPE)
    base = (torch.arange(count, device=device) % 7).to(dtype)
    sum_ranks = world * (world + 1) / 2  # sum over r of (r + 1)
    chunk = count // world

    if op in ("all_reduce", "ring_allreduce"):
        buf = torch.empty(count, dtype=dtype, device=device)
        reduce = ring_allreduce_ if op == "ring_allreduce" else dist.all_reduce

        def run() -> None:
            reduce(buf)

        def check() -> bool:
            buf.copy_(base + rank + 1)
            run()
            return bool(torch.equal(buf, base * world + sum_ranks))

        return run, check, buf.zero_

    if op == "all_gather":
        name, fn = _pick("all_gather_single", "all_gather_into_tensor")
        api["all_gather"] = name
        inp = torch.empty(chunk, dtype=dtype, device=device)
        out = torch.empty(chunk * world, dtype=dtype, device=device)

        def run() -> None:
            fn(out, inp)

        def check() -> bool:
            inp.copy_(base[:chunk] + rank + 1)
            run()
            want = torch.cat([base[:chunk] + r + 1 for r in range(world)])
            return bool(torch.equal(out, want))

        return run, check, lambda: (inp.zero_(), out.zero_())

    if op == "reduce_scatter":
        name, fn = _pick("reduce_scatter_single", "reduce_scatter_tensor")
        api["reduce_scatter"] = name
        inp = torch.empty(chunk * world, dtype=dtype, device=device)
        out = torch.empty(chunk, dtype=dtype, device=device)

        def run() -> None:
            fn(out, inp)

        def check() -> bool:
            inp.copy_(base[: chunk * world] + rank + 1)
            run()
            want = base[rank * chunk:(rank + 1) * chunk] * world + sum_ranks
            return bool(torch.equal(out, want))

        return run, check, lambda: (inp.zero_(), out.zero_())

    if op == "broadcast":
        buf = torch.empty(count, dtype=dtype, device=device)

        def run() -> None:
            dist.broadcast(buf, src=0)

        def check() -> bool:
            buf.copy_(base + rank + 1)
            run()
            return bool(torch.equal(buf, base + 1))  # rank 0's data everywhere

        return run, check, buf.zero_

    raise ValueError(f"unknown operation {op!r}; expected one of {OPS + ('ring_allreduce',)}")


def measure_size(ops: tuple[str, ...], nbytes: int, S: Any, device: torch.device,
                 api: dict[str, str], notes: dict[str, str]) -> list[dict[str, Any]]:
    """Check every operation at one size, then time them; one table row per operation.

    Samples are interleaved (op A, op B, ..., op A, op B, ...) so that a busy moment of a
    shared machine slows all operations alike instead of one of them.
    """
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    count = count_for(nbytes, world)
    nbytes = count * ITEM
    rows: dict[str, dict[str, Any]] = {}
    runs: dict[str, Callable[[], Any]] = {}
    for op in ops:
        row: dict[str, Any] = {"op": op, "bytes": nbytes, "count": count, "type": "float",
                               "redop": "sum" if "reduce" in op else "none",
                               "root": 0 if op == "broadcast" else -1}
        try:
            run, check, zero = make_op(op, count, rank, world, device, api)
            ok = check()
        except (RuntimeError, NotImplementedError) as err:  # a backend lacking an op
            notes[op] = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            rows[op] = {**row, "supported": False, "correct": None, "median_s": None,
                        "iqr_s": None, "algbw_GBps": None, "busbw_GBps": None}
            continue
        wrong = hd.slowest(0.0 if ok else 1.0)  # any rank wrong -> row wrong
        zero()  # timed calls sum zeros: no overflow however many repeats
        rows[op] = {**row, "supported": True, "correct": wrong == 0.0}
        runs[op] = run
    sync = "cuda" if device.type == "cuda" else None
    samples: dict[str, list[float]] = {op: [] for op in runs}
    for run in runs.values():  # warm-up
        time_it(run, warmup=S.warmup, repeats=1, number=1, sync=sync)
    for _ in range(S.repeats):
        for op, run in runs.items():
            samples[op] += time_it(run, warmup=0, repeats=1, number=S.iters, sync=sync).times
    for op in runs:
        timing = Timing(samples[op])
        median, iqr = hd.reduce_floats([timing.median, timing.iqr], "max")  # slowest rank
        name = BUSBW_NAME[op]
        rows[op].update(median_s=median, iqr_s=iqr, algbw_GBps=algbw_GBps(nbytes, median),
                        busbw_GBps=busbw_GBps(name, nbytes, median, world),
                        busbw_factor=busbw_factor(name, world))
    return [rows[op] for op in ops]


# --------------------------------------------------------------------------- report
def format_table(rows: list[dict[str, Any]]) -> str:
    """An nccl-tests-like text table, one block per operation."""
    lines = []
    head = (f"#{'size':>11} {'count':>11} {'type':>6} {'redop':>6} {'root':>5} "
            f"{'time':>10} {'algbw':>8} {'busbw':>8} {'#wrong':>7}")
    units = (f"#{'(B)':>11} {'(elements)':>11} {'':>6} {'':>6} {'':>5} "
             f"{'(us)':>10} {'(GB/s)':>8} {'(GB/s)':>8}")
    for op in dict.fromkeys(r["op"] for r in rows):
        lines += [f"# {op}", head, units]
        for r in (r for r in rows if r["op"] == op):
            if not r["supported"]:
                lines.append(f" {r['bytes']:>11} {r['count']:>11}   not supported by this backend")
                continue
            lines.append(
                f" {r['bytes']:>11} {r['count']:>11} {r['type']:>6} {r['redop']:>6} "
                f"{r['root']:>5} {r['median_s'] * 1e6:>10.1f} {r['algbw_GBps']:>8.3f} "
                f"{r['busbw_GBps']:>8.3f} {0 if r['correct'] else 1:>7}")
    return "\n".join(lines)


def ring_vs_library(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """busbw of the hand-written ring divided by the library's all-reduce, size by size."""
    lib = {r["bytes"]: r for r in rows if r["op"] == "all_reduce" and r["supported"]}
    out = []
    for r in rows:
        if r["op"] == "ring_allreduce" and r["bytes"] in lib:
            out.append({"bytes": r["bytes"], "ring_median_s": r["median_s"],
                        "library_median_s": lib[r["bytes"]]["median_s"],
                        "time_ratio": r["median_s"] / lib[r["bytes"]]["median_s"]})
    return out


def run(S: Any) -> dict[str, Any] | None:
    import torch

    sizes = size_sweep(S)
    w = hd.init(S.backend)
    backend, device, world, rank = w.backend, w.device, w.size, w.rank
    if S.nproc and S.nproc != world:
        print(f"note: profile expects {S.nproc} ranks, running with {world}", file=sys.stderr)
    api: dict[str, str] = {"all_reduce": "all_reduce", "broadcast": "broadcast",
                           "ring_allreduce": "hpcai.allreduce.ring_allreduce_"}
    notes: dict[str, str] = {}
    by_size = [measure_size((*OPS, "ring_allreduce"), n, S, device, api, notes) for n in sizes]
    rows = [row for op_index in range(len(OPS) + 1) for row in (b[op_index] for b in by_size)]
    placement = hd.placement()
    hd.teardown()
    if rank != 0:
        return None
    print(f"# world {world}, backend {backend}, device {device.type}, float32")
    print(format_table(rows), flush=True)
    checked = [r["correct"] for r in rows if r["supported"]]
    if not all(checked):
        raise SystemExit("a collective returned a wrong result (see #wrong); not reporting it")
    ratios = ring_vs_library(rows)
    largest = max(r["bytes"] for r in rows)
    ring_big = next(r for r in rows if r["op"] == "ring_allreduce" and r["bytes"] == largest)
    lib_big = next(r for r in rows if r["op"] == "all_reduce" and r["bytes"] == largest)
    return {
        "world": world, "backend": backend, "device": device.type, "dtype": "float32",
        "torch": torch.__version__, "api": api, "unsupported": notes,
        "all_correct": all(checked), "rows": rows, "ring_vs_library": ratios,
        "placement": placement,
        # busbw ratio ring/library at the largest size (1 = as fast as the library)
        "ring_busbw_ratio": (ring_big["busbw_GBps"] / lib_big["busbw_GBps"]
                             if world > 1 else None),
    }


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"backend": hd.BACKENDS})
