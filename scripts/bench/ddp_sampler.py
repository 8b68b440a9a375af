"""What torchrun gives each process, how ``DistributedSampler`` shards the data, and a
metric averaged over ranks that equals the one-process metric (chapter 12).

Run under torchrun, one process per rank (gloo on CPU, NCCL on GPUs):

    torchrun --standalone --nproc-per-node 2 scripts/bench/ddp_sampler.py \\
        --profile cpu --json

(As a plain ``python`` program it runs in a world of one.) Each rank reports:

* ``env``: the variables ``torchrun`` set for it (``RANK``, ``LOCAL_RANK``,
  ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR``,
  ``MASTER_PORT``, ``TORCHELASTIC_RUN_ID``) and what the process group says
  (``dist.get_rank()``, ``dist.get_world_size()``, the backend);
* ``groups``: an all-reduce in the default group and in a subgroup made with
  ``new_group`` (the even ranks, or the odd ones; :func:`groups`), with the sums rank 0
  checks;
* ``shards``: for each of ``epochs`` epochs, the indices ``DistributedSampler`` hands
  it, once with ``set_epoch(epoch)`` called before the epoch and once without; and the
  indices with ``drop_last=True``.

Rank 0 checks, on everyone's indices gathered with ``all_gather_object``
(:func:`shard_checks`): the ranks' shards are disjoint and cover the data set, padded
to a multiple of the ranks by repeating the first indices (``drop_last=False``) or cut
to one (``drop_last=True``); with ``set_epoch`` the order changes from epoch to epoch,
without it every epoch repeats the first.

Then a metric (:func:`evaluate`): a fixed seeded linear model's mean squared error over
the ``n_samples`` samples, in float64. Each rank sums the loss and counts the samples of
its shard; one ``all_reduce`` of ``(sum, count)`` gives the global mean, which must equal
the one-process mean (``metric_diff``, to 1e-12). Two common shortcuts are measured
beside it: the mean of the ranks' means (wrong when the shards differ in size) and the
sum over the padded sampler's shards (it counts the repeated samples twice). Only rank 0
prints (``log``: the lines rank 0 would log).
"""

from __future__ import annotations

import os
from typing import Any

from hpcai import dist as hd
from hpcai.cli import bench_main

SIZES = {
    "smoke": {"n_samples": 11, "epochs": 3, "features": 8, "seed": 0,
              "hang_timeout_s": 120, "backend": "gloo"},
    "cpu": {"n_samples": 21, "epochs": 3, "features": 16, "seed": 0,
            "hang_timeout_s": 120, "backend": "gloo"},
    "gpu": {"n_samples": 1001, "epochs": 3, "features": 64, "seed": 0,
            "hang_timeout_s": 300, "backend": "auto"},
}

ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
       "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def shards(n: int, world: hd.World, epochs: int, seed: int) -> dict[str, Any]:
    """This rank's indices per epoch: with ``set_epoch``, without it, ``drop_last``."""
    from torch.utils.data import DistributedSampler

    data = range(n)  # a sampler needs only len(); the indices are the samples
    with_epoch = DistributedSampler(data, num_replicas=world.size, rank=world.rank,
                                    shuffle=True, seed=seed)
    without = DistributedSampler(data, num_replicas=world.size, rank=world.rank,
                                 shuffle=True, seed=seed)
    dropped = DistributedSampler(data, num_replicas=world.size, rank=world.rank,
                                 shuffle=True, seed=seed, drop_last=True)
    out: dict[str, Any] = {"set_epoch": [], "no_set_epoch": [], "drop_last": []}
    for epoch in range(epochs):
        with_epoch.set_epoch(epoch)  # the line that is easy to forget
        dropped.set_epoch(epoch)
        out["set_epoch"].append(list(with_epoch))
        out["no_set_epoch"].append(list(without))
        out["drop_last"].append(list(dropped))
    return out


def shard_checks(n: int, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The sampler's contract, checked on every rank's indices (``AssertionError``)."""
    size = len(per_rank)
    epochs = len(per_rank[0]["set_epoch"])
    padded = -(-n // size) * size  # ceil(n / size) * size
    for e in range(epochs):
        got = [r["set_epoch"][e] for r in per_rank]
        flat = [i for shard in got for i in shard]
        assert len(flat) == padded and set(flat) == set(range(n)), (e, got)
        assert all(len(s) == padded // size for s in got)
        cut = [i for r in per_rank for i in r["drop_last"][e]]
        assert len(cut) == len(set(cut)) == n // size * size, (e, cut)
        assert [r["no_set_epoch"][e] for r in per_rank] == \
            [r["no_set_epoch"][0] for r in per_rank]  # no set_epoch: the same order
    orders = [tuple(i for r in per_rank for i in r["set_epoch"][e]) for e in range(epochs)]
    changed = len(set(orders)) == epochs
    if n >= 8 and epochs > 1:  # two equal shuffles of 8+ items: about 1 in 40,000
        assert changed, orders
    return {"padded_total": padded, "repeated": padded - n,
            "dropped": n - n // size * size, "orders_differ": changed}


def _data(n: int, features: int, seed: int) -> tuple[Any, Any, Any]:
    """Inputs, targets and the weights of a fixed linear model, float64, seeded."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g, dtype=torch.float64)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    w = torch.randn(features, generator=g, dtype=torch.float64) / features ** 0.5
    return x, y, w


def evaluate(n: int, features: int, seed: int, world: hd.World,
             padded_indices: list[int]) -> dict[str, float]:
    """The mean squared error over all samples, four ways (see the module docstring)."""
    import torch
    import torch.distributed as dist

    x, y, w = _data(n, features, seed)
    err = (x @ w - y) ** 2  # per-sample loss; every rank could compute it all
    one_process = float(err.mean())
    mine = torch.arange(world.rank, n, world.size)  # an unpadded shard: rank, rank+W, ..
    stats = torch.tensor([float(err[mine].sum()), float(len(mine))], dtype=torch.float64)
    local_mean = float(stats[0] / stats[1])
    padded = torch.tensor([float(err[padded_indices].sum()), float(len(padded_indices))],
                          dtype=torch.float64)
    means = torch.tensor([local_mean], dtype=torch.float64)
    dev = torch.device("cuda", torch.cuda.current_device()) \
        if world.backend == "nccl" else torch.device("cpu")
    stats, padded, means = stats.to(dev), padded.to(dev), means.to(dev)
    for t in (stats, padded, means):
        dist.all_reduce(t)  # sums over the ranks
    return {"one_process": one_process,
            "allreduced": float(stats[0] / stats[1]),
            "count": float(stats[1]),
            "mean_of_means": float(means[0]) / world.size,
            "padded_sampler": float(padded[0] / padded[1]),
            "padded_count": float(padded[1]),
            "local_mean": local_mean}


def groups(world: hd.World) -> dict[str, Any]:
    """The default group and subgroups of it: ``new_group`` with the even ranks and with
    the odd ones (every rank must call ``new_group`` for every group, in the same order,
    members or not). One all-reduce of ``rank + 1`` in each group this rank is in."""
    import torch
    import torch.distributed as dist

    halves = [list(range(0, world.size, 2)), list(range(1, world.size, 2))]
    made = [dist.new_group(ranks) if ranks else None for ranks in halves]
    mine = world.rank % 2
    dev = torch.device("cuda", torch.cuda.current_device()) \
        if world.backend == "nccl" else torch.device("cpu")
    everyone = torch.tensor([world.rank + 1.0], device=dev)
    dist.all_reduce(everyone)  # the default group: every rank
    half = torch.tensor([world.rank + 1.0], device=dev)
    dist.all_reduce(half, group=made[mine])  # only the ranks of my half
    return {"subgroup": halves[mine], "subgroup_rank": dist.get_rank(made[mine]),
            "world_sum": float(everyone.item()), "subgroup_sum": float(half.item())}


def log0(world: hd.World, lines: list[str], text: str) -> None:
    """Rank-0 logging: only the first rank keeps (and would print) the line."""
    if world.is_root:
        lines.append(text)


def measure(S: Any, world: hd.World) -> dict[str, Any]:
    import torch.distributed as dist

    n, epochs, seed = int(S.n_samples), int(S.epochs), int(S.seed)
    lines: list[str] = []
    env = {k: os.environ.get(k) for k in ENV}
    env.update(dist_rank=dist.get_rank(), dist_world_size=dist.get_world_size(),
               dist_backend=str(dist.get_backend()))
    mine = {"rank": world.rank, "env": env, "groups": groups(world),
            "shards": shards(n, world, epochs, seed)}
    log0(world, lines, f"world of {world.size} over {world.backend}")
    metric = evaluate(n, int(S.features), seed, world, mine["shards"]["set_epoch"][0])
    log0(world, lines, f"eval mse {metric['allreduced']:.6f} over "
         f"{metric['count']:.0f} samples")
    everyone: list[Any] = [None] * world.size
    if world.size > 1:
        dist.all_gather_object(everyone, mine)
    else:
        everyone = [mine]
    if not world.is_root:
        return {}
    per_rank = sorted(everyone, key=lambda r: r["rank"])
    W = world.size
    for r in per_rank:  # the sums each group must give
        g = r["groups"]
        assert g["world_sum"] == W * (W + 1) / 2, g
        assert g["subgroup_sum"] == sum(k + 1 for k in g["subgroup"]), g
        assert g["subgroup"][g["subgroup_rank"]] == r["rank"], g
    checks = shard_checks(n, [r["shards"] for r in per_rank])
    diff = abs(metric["allreduced"] - metric["one_process"])
    assert diff <= 1e-12 and metric["count"] == n, metric
    return {"per_rank": per_rank, "checks": checks, "metric": metric,
            "metric_diff": diff,
            "mean_of_means_diff": abs(metric["mean_of_means"] - metric["one_process"]),
            "padded_diff": abs(metric["padded_sampler"] - metric["one_process"]),
            "log": lines, "n_samples": n, "epochs": epochs}


def check_settings(S: Any) -> None:
    if int(S.n_samples) < 2:
        raise ValueError(f"--n-samples must be at least 2, got {S.n_samples}")


def run(S: Any) -> dict[str, Any] | None:
    def check(world: hd.World) -> None:
        if int(S.n_samples) < world.size:
            raise ValueError(f"--n-samples {S.n_samples} is fewer than the "
                             f"{world.size} ranks")
    return hd.run_ranks(lambda world: measure(S, world), backend=str(S.backend),
                        hang_timeout_s=float(S.hang_timeout_s), check_world=check)


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"backend": hd.BACKENDS})
