"""hpcai.dist: start-up, reductions, exchange, sizes, placement and nccl-tests bookkeeping.

A world of one runs in this process; two and three ranks run under torchrun
(tests/dist_ranks.py). No timing is asserted anywhere.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from hpcai import dist as hd
from hpcai.launch import torchrun

# --------------------------------------------------------------------------- no processes


def test_message_sizes_are_geometric_whole_and_end_at_max():
    assert hd.message_sizes(1024, 2**18, 16, 4) == [1024, 16384, 262144]
    sizes = hd.message_sizes(8, 1000, 4, 4)
    assert sizes[0] == 8 and sizes[-1] == 1000
    assert all(s % 4 == 0 for s in sizes) and sizes == sorted(set(sizes))
    assert hd.message_sizes(6, 6, 2) == [6]


@pytest.mark.parametrize("bad", [(2, 1024, 4, 4), (4096, 1024, 4, 4), (1024, 4096, 1, 4),
                                 (8, 16, 2, 0)])
def test_message_sizes_refuse_bad_bounds(bad):
    with pytest.raises(ValueError, match="min_bytes"):
        hd.message_sizes(*bad)


def test_choose_backend():
    assert hd.choose_backend("gloo") == "gloo"
    expected = "nccl" if torch.cuda.is_available() else "gloo"
    assert hd.choose_backend("auto") == expected
    with pytest.raises(ValueError, match="backend must be one of"):
        hd.choose_backend("mpi")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            hd.choose_backend("nccl")


def test_node_name_prefers_slurm(monkeypatch):
    monkeypatch.delenv("SLURMD_NODENAME", raising=False)
    assert hd.node_name() == socket.gethostname()
    monkeypatch.setenv("SLURMD_NODENAME", "n2")
    assert hd.node_name() == "n2"


def test_algbw_is_bytes_over_time():
    assert hd.algbw_GBps(2e9, 0.5) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        hd.algbw_GBps(1, 0.0)


@pytest.mark.parametrize("op,n,expected", [
    ("allreduce", 2, 1.0), ("all_reduce", 8, 2 * 7 / 8), ("allgather", 4, 3 / 4),
    ("reduce_scatter", 4, 3 / 4), ("alltoall", 4, 3 / 4), ("broadcast", 16, 1.0),
    ("reduce", 3, 1.0),
])
def test_busbw_factor_matches_nccl_tests(op, n, expected):
    assert hd.busbw_factor(op, n) == pytest.approx(expected)


def test_busbw_unknown_op_is_an_error():
    with pytest.raises(ValueError, match="unknown collective"):
        hd.busbw_factor("allsum", 4)


def test_busbw_is_algbw_times_factor():
    t, nbytes, n = 1e-3, 8e6, 4
    assert hd.busbw_GBps("allreduce", nbytes, t, n) == pytest.approx(
        hd.algbw_GBps(nbytes, t) * 1.5)


# --------------------------------------------------------------------------- a world of one


# (the world_of_one fixture lives in conftest.py)


def test_world_of_one_without_a_launcher(world_of_one):
    w = world_of_one
    assert (w.rank, w.size, w.backend, w.device.type) == (0, 1, "gloo", "cpu")
    assert w.is_root and dist.is_initialized()
    assert hd.init("gloo").size == 1  # a second init returns the same group
    assert hd.slowest(0.25) == 0.25
    assert hd.reduce_floats([1.0, 2.0], "sum") == [1.0, 2.0]
    with pytest.raises(ValueError, match="op must be one of"):
        hd.reduce_floats([1.0], "mean")
    assert hd.placement() == [{"rank": 0, "node": hd.node_name()}]
    hd.exchange([], [])  # nothing to do is fine
    w.sync()


def test_teardown_leaves_no_group(world_of_one):
    hd.teardown()
    assert not dist.is_initialized()
    hd.teardown()  # a second call is harmless


# --------------------------------------------------------------------------- real ranks


@pytest.mark.parametrize("world", [2, 3])
def test_exchange_and_reductions_across_ranks(world):
    out = torchrun("tests/dist_ranks.py", world, profile="smoke")
    assert out["world"] == world and out["backend"] == "gloo"
    assert [p["rank"] for p in out["placement"]] == list(range(world))
    assert all(p["node"] for p in out["placement"])
    for r, seen in enumerate(out["ranks"]):
        assert seen["rank"] == r
        assert seen["from_left"] == [float((r - 1) % world)] * 5
        assert seen["from_right"] == [float((r + 1) % world)] * 5
        assert seen["slowest"] == 0.5 + (world - 1)  # the largest value, on every rank
        assert seen["sums"] == [float(world), float(sum(range(world)))]
        assert seen["mins"] == [0.0]
