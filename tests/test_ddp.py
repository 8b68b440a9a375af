"""DDP by hand (chapter 12): naive and bucketed match one process and the library.

The bucket assignment and the hooks run in this process (a world of one where a
process group is needed); the three implementations run on two ranks in ONE torchrun
launch of ``scripts/bench/ddp.py`` at the smoke profile. No timing is asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpcai.launch import torchrun
from hpcai.parallel.ddp_hand import (
    BucketedDDP,
    MiB,
    assign_buckets,
    naive_sync,
    overlap_fraction,
)
from hpcai.parallel.model import ModelConfig, batch, build_model, loss_fn

TOL = 1e-5  # the bar, fp32


def n_buckets(sizes: list[int], cap: int) -> int:
    """The number of buckets by the closing rule, from the running sums of the sizes:
    a bucket closes at the first tensor that brings it to ``cap`` bytes or more."""
    count, filled = 0, 0
    for size in sizes:
        filled += size
        if filled >= cap:
            count, filled = count + 1, 0
    return count + (filled > 0)


def reversed_sizes(cfg: ModelConfig) -> list[int]:
    """Bytes of the parameters in the order their gradients arrive (last layer first):
    per block fc2.bias (dim), fc2.weight (dim x hidden), fc1.bias, fc1.weight."""
    d, h = cfg.dim, cfg.hidden
    return [4 * n for _ in range(cfg.n_blocks) for n in (d, d * h, h, h * d)]


# ------------------------------------------------------------------------ no processes


def test_buckets_close_at_the_cap():
    assert assign_buckets([4, 4, 4, 4], 8) == [[0, 1], [2, 3]]
    assert assign_buckets([4, 4, 4, 4], 9) == [[0, 1, 2], [3]]
    assert assign_buckets([10, 1, 1], 8) == [[0], [1, 2]]  # one tensor over the cap
    assert assign_buckets([1, 2, 3], 1) == [[0], [1], [2]]  # a tensor a bucket
    assert assign_buckets([1, 2, 3], 100) == [[0, 1, 2]]  # one bucket for all
    assert assign_buckets([], 8) == []
    with pytest.raises(ValueError):
        assign_buckets([1], 0)


@pytest.mark.parametrize("cap", [1, 100, 4_000, 33_000, 70_000, 10 ** 9])
def test_bucket_rule(cap):
    sizes = reversed_sizes(ModelConfig(dim=16, hidden=64, n_blocks=3))
    buckets = assign_buckets(sizes, cap)
    assert [i for b in buckets for i in b] == list(range(len(sizes)))  # order kept
    assert len(buckets) == n_buckets(sizes, cap)
    for b in buckets[:-1]:  # full, and not yet full before its last tensor
        assert sum(sizes[i] for i in b) >= cap > sum(sizes[i] for i in b[:-1])


def test_reversed_sizes_are_the_model_s():
    cfg = ModelConfig(dim=8, hidden=16, n_blocks=2)
    params = list(build_model(cfg).parameters())[::-1]
    assert reversed_sizes(cfg) == [p.numel() * p.element_size() for p in params]


def test_overlap_fraction():
    def ev(name, ts, end):
        return {"name": name, "ts": ts, "end": end}

    step = [ev("backward", 0, 100), ev("grad_sync", 80, 100)]
    assert overlap_fraction(step) is None  # no all-reduce at all
    early = ev("gloo:all_reduce", 40, 90)  # 40 of its 50 before the wait
    late = ev("gloo:all_reduce", 85, 95)  # issued by the wait: none
    assert overlap_fraction([*step, early]) == pytest.approx(0.8)
    assert overlap_fraction([*step, late]) == 0.0
    assert overlap_fraction([*step, early, late]) == pytest.approx(40 / 60)
    no_sync = [ev("backward", 0, 100), ev("gloo:all_reduce", 90, 110)]
    assert overlap_fraction(no_sync) == pytest.approx(0.5)  # cut at the end


# ---------------------------------------------------------------------- a world of one


# (the world_of_one fixture lives in conftest.py)


def test_hooks_fill_every_bucket_and_keep_the_gradients(world_of_one):
    cfg = ModelConfig(dim=8, hidden=16, n_blocks=3)
    plain, hand = build_model(cfg), build_model(cfg)
    cap_mb = 700 / MiB  # a few tensors a bucket
    ddp = BucketedDDP(hand, cap_mb)
    assert len(ddp.buckets) == n_buckets(reversed_sizes(cfg), 700)
    assert sum(ddp.bucket_bytes) == sum(reversed_sizes(cfg))
    x, y = batch(cfg, 0, 4)
    for step in range(2):  # the second step reuses the buffers
        for net in (plain, hand):
            net.zero_grad(set_to_none=True)
            loss_fn(net(x), y).backward()
        assert ddp.finish() == len(ddp.buckets)
        for a, b in zip(plain.parameters(), hand.parameters()):
            assert torch.equal(a.grad, b.grad), step  # a world of one: the mean is it
    assert naive_sync(plain.parameters(), 1) == 4 * cfg.n_blocks


def test_a_parameter_without_gradient_is_an_error(world_of_one):
    cfg = ModelConfig(dim=8, hidden=16, n_blocks=2)
    net = build_model(cfg)
    ddp = BucketedDDP(net, 1e-6)  # a bucket per tensor
    x, _ = batch(cfg, 0, 4)
    net.blocks[0](x).sum().backward()  # block 1 gets no gradient
    with pytest.raises(RuntimeError, match="no gradient"):
        ddp.finish()


# --------------------------------------------------------------------------- two ranks


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    traces = tmp_path_factory.mktemp("ddp-traces")
    return torchrun("scripts/bench/ddp.py", 2, profile="smoke", timeout=300,
                    args=["--trace", str(traces)])


def test_every_impl_matches_one_process(two_ranks):
    out = two_ranks
    assert out["world"] == 2 and out["backend"] == "gloo"
    rows = {r["impl"]: r for r in out["rows"]}
    assert sorted(rows) == ["bucketed", "naive", "torch"]
    keys = {"step_median_s", "step_iqr_s", "max_param_diff", "max_loss_diff",
            "comm_bytes_per_step", "n_allreduce_per_step"}
    for name, row in rows.items():
        assert keys <= set(row), name
        assert row["max_param_diff"] <= TOL, (name, row["max_param_diff"])
        assert row["max_loss_diff"] <= TOL, (name, row["max_loss_diff"])
        assert row["step_median_s"] > 0 and row["timed_steps"] >= 1
        # one copy of every gradient all-reduced per step
        assert row["comm_bytes_per_step"] == out["param_bytes"], name
        assert set(row["calls"]) == {"allreduce"}, name
    assert out["ratio_bucketed_over_torch"] > 0
    for entry in out["sweep"]:
        assert entry["max_param_diff"] <= TOL, entry


def test_allreduce_counts(two_ranks):
    S = two_ranks["settings"]
    cfg = ModelConfig(dim=S["dim"], hidden=S["hidden"], n_blocks=S["n_blocks"])
    rows = {r["impl"]: r for r in two_ranks["rows"]}
    assert rows["naive"]["n_allreduce_per_step"] == 4 * cfg.n_blocks  # one per tensor
    sizes = reversed_sizes(cfg)
    want = n_buckets(sizes, int(S["bucket_mb"] * MiB))
    assert rows["bucketed"]["n_allreduce_per_step"] == want == two_ranks["n_buckets"]
    assert 1 < want < len(sizes)  # the smoke cap makes several buckets of many tensors
    assert rows["torch"]["n_allreduce_per_step"] >= 1
    for entry in two_ranks["sweep"]:
        assert entry["n_buckets"] == n_buckets(sizes, int(entry["bucket_mb"] * MiB))


def test_traces_of_both_ranks(two_ranks):
    traces = sorted(two_ranks["traces"], key=lambda t: t["rank"])
    assert [t["rank"] for t in traces] == [0, 1]
    for t in traces:
        assert len(t["paths"]) == 3
        assert all(Path(p).stat().st_size > 0 for p in t["paths"])
        assert t["overlap"]["naive"] == 0.0  # every all-reduce waits for backward
        assert 0.0 <= t["overlap"]["bucketed"] <= 1.0
