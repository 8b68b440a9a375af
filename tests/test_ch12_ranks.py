"""Chapter 12 on two ranks (torchrun, smoke): the sampler's shards and the metric over
ranks (``scripts/bench/ddp_sampler.py``), and the scaling job whose strong-scaling run
trains exactly like one process (``scripts/bench/ddp_scaling.py``). No timing is
asserted."""

from __future__ import annotations

import pytest

from hpcai.launch import torchrun


@pytest.fixture(scope="module")
def sampler():
    return torchrun("scripts/bench/ddp_sampler.py", 2, profile="smoke", timeout=300)


@pytest.fixture(scope="module")
def scaling():
    return torchrun("scripts/bench/ddp_scaling.py", 2, profile="smoke", timeout=300)


def test_every_rank_knows_who_it_is(sampler):
    assert sampler["world"] == 2
    for r in sampler["per_rank"]:
        e = r["env"]
        assert int(e["RANK"]) == e["dist_rank"] == r["rank"]
        assert int(e["WORLD_SIZE"]) == e["dist_world_size"] == 2
    assert len(sampler["log"]) == 2  # rank 0's lines only
    groups = [r["groups"] for r in sampler["per_rank"]]
    assert [g["subgroup"] for g in groups] == [[0], [1]]
    assert [g["world_sum"] for g in groups] == [3.0, 3.0]
    assert [g["subgroup_sum"] for g in groups] == [1.0, 2.0]


def test_shards_and_set_epoch(sampler):
    n = sampler["n_samples"]
    assert n % 2  # odd on purpose: padding is exercised
    c = sampler["checks"]
    assert c["repeated"] == 1 and c["dropped"] == 1 and c["orders_differ"]
    r0 = sampler["per_rank"][0]["shards"]
    assert r0["no_set_epoch"][0] == r0["no_set_epoch"][-1]
    assert r0["set_epoch"][0] != r0["set_epoch"][1]


def test_metric_over_ranks_is_the_one_process_metric(sampler):
    m = sampler["metric"]
    assert sampler["metric_diff"] <= 1e-12 and m["count"] == sampler["n_samples"]
    assert sampler["mean_of_means_diff"] > 1e-12  # unequal shards: the shortcut is off
    assert m["padded_count"] == sampler["n_samples"] + 1


def test_strong_scaling_trains_like_one_process(scaling):
    runs = {r["scaling"]: r for r in scaling["runs"]}
    assert set(runs) == {"strong", "weak"} and scaling["world"] == 2
    S = scaling["settings"]
    strong, weak = runs["strong"], runs["weak"]
    assert strong["max_loss_diff"] <= 1e-5
    assert strong["global_batch"] == S["global_batch"] == 2 * strong["batch_per_rank"]
    assert weak["global_batch"] == 2 * S["global_batch"] and weak["lr"] == 2 * S["lr"]
    assert weak["steps_per_epoch"] * 2 == strong["steps_per_epoch"]
    for r in (strong, weak):
        assert len(r["epoch_s"]) == len(r["epoch_loss"]) == S["epochs"]
        assert r["samples_per_s"] > 0 and r["train_s"] == pytest.approx(sum(r["epoch_s"]))
