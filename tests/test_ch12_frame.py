"""Chapter 12 without other processes: the frame of distributed benchmarks
(:func:`hpcai.dist.run_ranks`), the sampler's checks, the scaling arithmetic, and the
figures drawn byte for byte the same from the same rows."""

from __future__ import annotations

import math

import matplotlib
import pytest

matplotlib.use("Agg")

from hpcai import dist as hd  # noqa: E402
from hpcai import scalecost as sc  # noqa: E402
from hpcai.launch import load_script  # noqa: E402

# ------------------------------------------------------------------ run_ranks


@pytest.fixture
def no_group(monkeypatch):
    """No process group and no launcher's variables: run_ranks makes a world of one."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)


def test_run_ranks_in_a_world_of_one(no_group):
    import torch.distributed as dist

    seen = {}

    def body(world):
        seen["init"] = dist.is_initialized()
        return {"answer": 42, "world": "mine"}

    out = hd.run_ranks(body, backend="gloo", hang_timeout_s=60)
    assert seen["init"] and not dist.is_initialized()  # joined, then left
    assert out["answer"] == 42 and out["world"] == "mine"  # body's keys win
    assert out["ranks"] == 1 and out["backend"] == "gloo" and out["device"] == "cpu"
    assert [p["rank"] for p in out["placement"]] == [0]


def test_run_ranks_refuses_a_world_it_cannot_split(no_group, capsys):
    import torch.distributed as dist

    def check(world):
        raise ValueError(f"--thing 3 is not divisible by the {world.size} ranks")

    with pytest.raises(SystemExit) as err:
        hd.run_ranks(lambda w: {}, backend="gloo", check_world=check)
    assert err.value.code == 2 and not dist.is_initialized()
    assert capsys.readouterr().err.strip() == \
        "error: --thing 3 is not divisible by the 1 ranks"


def test_parallelism_names_its_strategies_without_torch():
    from hpcai.parallel import STRATEGIES

    par = load_script("parallelism")
    assert list(par.STRATEGY_NAMES) == list(STRATEGIES)


# ------------------------------------------------------------------ the sampler


def _shards(n, size, epochs, seed=0):
    from types import SimpleNamespace

    sam = load_script("ddp_sampler")
    return [sam.shards(n, SimpleNamespace(rank=r, size=size), epochs, seed)
            for r in range(size)]


@pytest.mark.parametrize("n,size", [(11, 2), (21, 2), (20, 4), (10, 3)])
def test_sampler_contract(n, size):
    sam = load_script("ddp_sampler")
    checks = sam.shard_checks(n, _shards(n, size, 3))
    assert checks["padded_total"] == math.ceil(n / size) * size
    assert checks["repeated"] == checks["padded_total"] - n
    assert checks["dropped"] == n % size
    assert checks["orders_differ"]


def test_sampler_checks_catch_a_shared_shard():
    sam = load_script("ddp_sampler")
    per_rank = _shards(12, 2, 2)
    per_rank[1] = per_rank[0]  # both ranks on the same samples
    with pytest.raises(AssertionError):
        sam.shard_checks(12, per_rank)


# ------------------------------------------------------------------ scalecost


def test_efficiency_gain_and_cost():
    n, x, t = [1, 2, 4], [100.0, 180.0, 300.0], [60.0, 36.0, 24.0]
    assert sc.efficiency(n, x) == pytest.approx([1.0, 0.9, 0.75])
    assert sc.efficiency(n, t, kind="time") == pytest.approx([1.0, 60 / 72, 60 / 96])
    assert sc.marginal_gain(n, x) == [None, pytest.approx(1.8), pytest.approx(300 / 180)]
    assert sc.marginal_gain(n, t, kind="time")[1:] == pytest.approx([60 / 36, 1.5])
    assert sc.cost_per_run(4, 3600, 2.0) == 8.0
    rows = sc.study_rows(n, x, t, 3.0)
    for r, e in zip(rows, sc.efficiency(n, t, kind="time")):
        assert r["cost_ratio"] == pytest.approx(1 / e)  # C(N)/C(1) = 1/E_T(N)
    with pytest.raises(ValueError):
        sc.efficiency([1, 2], [1.0])
    with pytest.raises(ValueError):
        sc.efficiency([1, 2], [1.0, 2.0], kind="speed")


def test_time_to_target():
    assert sc.time_to_target([1, 2, 3], [0.5, 0.3, 0.2], 0.3) == 2
    assert sc.time_to_target([1, 2], [0.5, 0.4], 0.1) is None


def test_reference_tables_are_the_reference_s():
    vit = sc.REFERENCE_VIT
    e = sc.efficiency(vit["devices"], vit["samples_per_s"])
    assert round(100 * e[-1]) == 68  # "efficiency 68 %" at 32 GPUs
    assert sc.REFERENCE_LLAMA["efficiency"][1:] == [0.96, 0.90, 0.88, 0.87, 0.86]
    assert round(41_424 / 48_229, 2) == sc.REFERENCE_LLAMA["efficiency"][-1]


# ------------------------------------------------------------------ figures


def _rank_events(shift: float, overlap: bool) -> list[dict]:
    def ev(name, ts, end, level):
        return {"name": name, "ts": ts + shift, "end": end + shift, "level": level}

    comm = (ev("gloo:all_reduce", 700, 950, None) if overlap
            else ev("gloo:all_reduce", 1010, 1300, None))
    return [ev("ProfilerStep#2", 0, 1500, None), ev("forward", 10, 400, 0),
            ev("backward", 400, 1350, 0), ev("grad_sync", 1000, 1350, 1), comm,
            ev("optimizer", 1360, 1480, 0)]


def test_timeline_lanes_cut_backward_at_grad_sync():
    from hpcai.ddp_figures import timeline_lanes

    lanes = timeline_lanes(_rank_events(5000, True))
    assert lanes["backward"] == [(0.4, 0.6)]  # 400..1000 us, in ms from the step
    assert lanes["grad_sync"] == [(1.0, 0.35)]
    assert lanes["all-reduce"] == [(0.7, 0.25)]


def test_figures_are_byte_identical(tmp_path):
    import matplotlib.pyplot as plt

    from hpcai.ddp_figures import draw_bucket_sweep, draw_ddp_timeline
    from hpcai.plotting import savefig, use_style

    traces = {"naive": [_rank_events(0, False), _rank_events(3, False)],
              "bucketed": [_rank_events(0, True), _rank_events(7, True)]}
    sweep = [{"bucket_mb": m, "n_buckets": k, "torch_step_median_s": 0.01 * m,
              "torch_step_iqr_s": 0.001, "bucketed_step_median_s": 0.011 * m,
              "bucketed_step_iqr_s": 0.002} for m, k in ((0.5, 8), (1.0, 4), (4.0, 1))]
    blobs = []
    for i in range(2):
        use_style()
        fig, axes = plt.subplots(2, 1)
        draw_ddp_timeline(axes, traces, {"naive": [0.0, 0.0], "bucketed": [0.7, 0.6]})
        fig2, ax = plt.subplots()
        draw_bucket_sweep(ax, sweep)
        a = savefig(fig, tmp_path / f"timeline{i}.svg").read_bytes()
        b = savefig(fig2, tmp_path / f"sweep{i}.svg").read_bytes()
        plt.close("all")
        blobs.append((a, b))
    assert blobs[0] == blobs[1]
