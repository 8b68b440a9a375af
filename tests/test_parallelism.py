"""hpcai.parallel: every parallelism matches one process; bytes and memory as counted.

The counting helpers and the model run in this process (a world of one where a process
group is needed); every strategy runs on two ranks in ONE torchrun launch of
``scripts/bench/parallelism.py`` at the smoke profile. No timing is asserted.

Bytes are buffer bytes as nccl-tests counts them (the tensor of an all-reduce, the full
output of an all-gather, the full input of a reduce-scatter, the tensor of a send), per
rank and step: data parallelism's all-reduce of every gradient is exactly the parameter
bytes ``P``, ZeRO-3 ``3 P``, the ZeRO-2-like setting ``2 P``; wire bytes (what a rank
sends by ring) are those times ``2 (n-1)/n`` or ``(n-1)/n``.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from hpcai.launch import torchrun
from hpcai.parallel import STRATEGIES, build
from hpcai.parallel.model import (
    ModelConfig,
    batch,
    build_model,
    param_bytes,
    reference_run,
)
from hpcai.parallel.pipeline import bubble_formula
from hpcai.parallel.tracking import (
    CommCounter,
    collective_kind,
    measure_peak,
    nbytes,
    wire_factor,
)

TOL = 1e-5  # the bar, fp32

# ------------------------------------------------------------------------ no processes


@pytest.mark.parametrize("name,kind", [
    ("allreduce_", "allreduce"), ("all_reduce", "allreduce"),
    ("_allgather_base_", "allgather"), ("all_gather_into_tensor", "allgather"),
    ("_reduce_scatter_base_", "reducescatter"),
    ("reduce_scatter_tensor", "reducescatter"),
    ("broadcast_", "broadcast"), ("send", "send"), ("recv_", "recv"),
    ("recv_any_source_", "recv"), ("alltoall_base_", "alltoall"),
    ("all_to_all_single", "alltoall"), ("barrier", None), ("wait_tensor", None),
    ("_wrap_tensor_autograd", None), ("monitored_barrier_", None),
])
def test_collective_kind(name, kind):
    assert collective_kind(name) == kind


def test_wire_factor_is_the_ring_share():
    assert wire_factor("allreduce", 2) == pytest.approx(1.0)
    assert wire_factor("allreduce", 4) == pytest.approx(1.5)
    assert wire_factor("allgather", 4) == pytest.approx(0.75)
    assert wire_factor("reducescatter", 8) == pytest.approx(7 / 8)
    assert wire_factor("send", 2) == 1.0 and wire_factor("recv", 2) == 0.0
    assert wire_factor("allreduce", 1) == 0.0  # a world of one moves nothing


def test_nbytes_of_nested_arguments():
    a, b = torch.zeros(3, 4), torch.zeros(5, dtype=torch.float64)
    assert nbytes(a) == 48 and nbytes([a, [b]]) == 48 + 40
    assert nbytes((None, 3, "x")) == 0


def test_batches_are_deterministic_and_sliceable():
    cfg = ModelConfig(dim=8, hidden=16, n_blocks=2)
    x, y = batch(cfg, 3, 10)
    x2, y2 = batch(cfg, 3, 10, slice(4, 8))
    assert torch.equal(x[4:8], x2) and torch.equal(y[4:8], y2)
    assert not torch.equal(batch(cfg, 4, 10)[0], x)  # another step, another batch


def test_reference_run_is_reproducible_and_learns():
    cfg = ModelConfig(dim=8, hidden=16, n_blocks=2)
    a, b = reference_run(6, 16, cfg), reference_run(6, 16, cfg)
    assert a.losses == b.losses
    assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)
    assert a.losses[-1] < a.losses[0]
    assert sorted(a.params) == sorted(n for n, _ in build_model(cfg).named_parameters())


def test_param_bytes():
    cfg = ModelConfig(dim=8, hidden=16, n_blocks=3)
    assert param_bytes(build_model(cfg)) == 3 * (8 * 16 * 2 + 16 + 8) * 4


def test_bubble_formula():
    assert bubble_formula(2, 1) == pytest.approx(0.5)
    assert bubble_formula(4, 13) == pytest.approx(3 / 16)
    assert bubble_formula(1, 8) == 0.0


# ---------------------------------------------------------------------- a world of one


# (the world_of_one fixture lives in conftest.py)


def test_comm_counter_counts_what_is_issued(world_of_one):
    t = torch.ones(10)
    with CommCounter() as c:
        dist.all_reduce(t)
        dist.broadcast(t, src=0)
        dist.barrier()  # moves no data: not counted
        out = torch.empty(10)
        dist.all_gather_single(out, t)
    assert [k for k, _ in c.calls] == ["allreduce", "broadcast", "allgather"]
    assert c.bytes == 3 * 40 and c.wire_bytes(1) == 0.0
    assert c.by_kind()["allreduce"] == {"calls": 1, "bytes": 40}


def test_peak_memory_holds_the_training_state(world_of_one):
    cfg = ModelConfig(dim=16, hidden=64, n_blocks=2)
    strat = build("dp_naive", world_of_one, cfg, 8, 1)
    _, peak = measure_peak(lambda: strat.step(0), *strat.track)
    P = param_bytes(build_model(cfg))
    assert peak["Total"] >= 3 * P  # parameters, gradients, momentum
    assert peak["Parameter"] == P


# --------------------------------------------------------------------------- two ranks


@pytest.fixture(scope="module")
def two_ranks():
    return torchrun("scripts/bench/parallelism.py", 2, profile="smoke", timeout=300)


def test_every_strategy_matches_one_process(two_ranks):
    out = two_ranks
    assert out["world"] == 2 and out["backend"] == "gloo"
    rows = {r["strategy"]: r for r in out["rows"]}
    assert sorted(rows) == sorted(STRATEGIES)
    keys = {"max_loss_diff", "max_param_diff", "peak_bytes_per_rank",
            "comm_bytes_per_step", "wire_bytes_per_step", "step_median_s"}
    for name, row in rows.items():
        assert keys <= set(row), name
        assert row["max_loss_diff"] <= TOL, (name, row["max_loss_diff"])
        assert row["max_param_diff"] <= TOL, (name, row["max_param_diff"])
        assert len(row["losses"]) == len(out["reference_losses"])
        assert row["peak_bytes_per_rank"] > 0 and row["step_median_s"] > 0


def test_bytes_are_the_formulas(two_ranks):
    rows = {r["strategy"]: r for r in two_ranks["rows"]}
    P, n = two_ranks["param_bytes"], two_ranks["world"]
    for name, row in rows.items():  # every count equals its formula, to the byte
        assert row["comm_bytes_per_step"] == row["predicted_comm_bytes"], name
    for name in ("dp_naive", "ddp"):  # one all-reduce of every gradient
        assert rows[name]["comm_bytes_per_step"] == P
        assert rows[name]["wire_bytes_per_step"] == pytest.approx(2 * (n - 1) / n * P)
    assert rows["fsdp"]["comm_bytes_per_step"] == 3 * P  # ZeRO-3: AG, AG, RS
    assert rows["fsdp"]["wire_bytes_per_step"] == pytest.approx(3 * (n - 1) / n * P)
    assert rows["zero2"]["comm_bytes_per_step"] == 2 * P  # AG, RS
    assert set(rows["dp_naive"]["per_rank"][0]["calls"]) == {"allreduce"}
    # sequence parallel: each all-reduce of tp_attn becomes a reduce-scatter and an
    # all-gather, the same wire bytes (plus the norms' small gradient all-reduce)
    sp, tp = rows["tp_sp"], rows["tp_attn"]
    assert set(sp["per_rank"][0]["calls"]) == {"allgather", "reducescatter",
                                               "allreduce"}
    assert sp["wire_bytes_per_step"] > tp["wire_bytes_per_step"]
    assert sp["wire_bytes_per_step"] < 1.1 * tp["wire_bytes_per_step"]


def test_sharding_saves_memory(two_ranks):
    rows = {r["strategy"]: r for r in two_ranks["rows"]}
    ddp = rows["ddp"]["peak_bytes_per_rank"]
    for name in ("fsdp", "zero2", "tp", "tp_naive", "pp", "pp_naive"):  # same model
        assert rows[name]["peak_bytes_per_rank"] < ddp, name
    assert rows["tp_sp"]["peak_bytes_per_rank"] < rows["tp_attn"]["peak_bytes_per_rank"]


def test_bubble_rows(two_ranks):
    for row in two_ranks["bubble"]:
        assert row["formula"] == pytest.approx(bubble_formula(2, row["microbatches"]))
        assert 0.0 <= row["bubble"] < 1.0
