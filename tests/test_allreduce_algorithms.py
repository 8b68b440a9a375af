"""Tests of hpcai.allreduce: the cost models, and the hand-written all-reduces against
torch.distributed's own all_reduce on gloo (bandwidth bookkeeping: tests/test_dist.py)."""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hpcai import allreduce as C

# --------------------------------------------------------------------------
# cost models (no processes needed)
# --------------------------------------------------------------------------


def test_cost_models_limits():
    a, b = 1e-6, C.beta_from_GBps(10.0)
    n = 1e8
    # large messages: ring moves 2(p-1)/p of the data, naive 2(p-1) times all of it
    ring, rd = C.cost_ring(n, 8, a, b), C.cost_recursive_doubling(n, 8, a, b)
    assert ring < rd < C.cost_naive(n, 8, a, b)
    # tiny messages: recursive doubling pays log2 p latencies, ring 2(p-1)
    assert C.cost_recursive_doubling(8, 8, a, b) < C.cost_ring(8, 8, a, b)
    assert C.cost_ring(n, 2, a, b) == pytest.approx(2 * a + n / b)
    assert C.cost_recursive_doubling(n, 6, a, b) == pytest.approx(4 * (a + n / b))
    assert C.cost_tree(n, 1, a, b) == 0.0
    assert math.isclose(C.beta_from_GBps(1.0), 1e9)   # beta is a bandwidth, bytes/s
    with pytest.raises(ValueError, match="bandwidth"):
        C.cost_ring(n, 2, a, 0.0)
    assert C.cost_ring(n, 2, a, math.inf) == pytest.approx(2 * a)


# --------------------------------------------------------------------------
# the algorithms, on 2-4 real gloo processes
# --------------------------------------------------------------------------

SHAPES = [(1,), (2,), (7,), (1000,), (33, 5), (4096,)]


def _worker(rank: int, world: int, init_file: str, results: dict) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
    )
    failures = []
    try:
        for name, fn in C.ALLREDUCE_ALGORITHMS.items():
            for shape in SHAPES:
                # integers: the sum is exact, so compare bit for bit
                gen = torch.Generator().manual_seed(1000 * rank + len(shape))
                x = torch.randint(-1000, 1000, shape, generator=gen, dtype=torch.int64)
                expected = x.clone()
                dist.all_reduce(expected)
                got = fn(x)
                if got is not x:
                    failures.append(f"{name}{shape}: not in place")
                if not torch.equal(x, expected):
                    failures.append(f"{name}{shape} int64 differs from dist.all_reduce")
                # floats: close to the library, identical across ranks
                y = torch.randn(shape, generator=gen, dtype=torch.float32)
                ref = y.clone()
                dist.all_reduce(ref)
                fn(y)
                if not torch.allclose(y, ref, rtol=1e-5, atol=1e-5):
                    failures.append(f"{name}{shape} float32 not close to library")
                first = y.clone()
                dist.broadcast(first, src=0)
                if not torch.equal(first, y):
                    failures.append(f"{name}{shape} float32 differs between ranks")
            # a non-contiguous tensor (a transposed view) is reduced in place too
            z = torch.arange(12, dtype=torch.float64).reshape(3, 4).t() * (rank + 1)
            fn(z)
            expected_z = torch.arange(12, dtype=torch.float64).reshape(3, 4).t() * (
                world * (world + 1) / 2
            )
            if not torch.equal(z, expected_z):
                failures.append(f"{name} non-contiguous differs")
    finally:
        dist.destroy_process_group()
    results[rank] = failures


@pytest.mark.parametrize("world", [3, 4])  # 2 ranks: tests/test_ch04_allreduce.py
def test_handwritten_allreduce_matches_library(world):
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, ctx.Manager() as manager:
        results = manager.dict()
        init_file = os.path.join(tmp, "init")
        mp.start_processes(
            _worker, args=(world, init_file, results), nprocs=world, join=True,
            start_method="spawn",
        )
        assert sorted(results.keys()) == list(range(world))
        for rank in range(world):
            assert results[rank] == [], f"rank {rank}: {results[rank]}"


def test_requires_initialised_group():
    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    with pytest.raises(RuntimeError, match="not initialised"):
        C.ring_allreduce_(torch.ones(4))
