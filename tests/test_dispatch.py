"""Chapter 9: eager dispatch cost (scripts/bench/dispatch.py), the shared fixed-cost fit
(hpcai.fixedcost) and the NumPy-vs-PyTorch lockstep check (hpcai.lockstep)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from hpcai import fixedcost, lockstep, nn
from hpcai.launch import LauncherError, load_script, run_script

SCRIPT = "scripts/bench/dispatch.py"
IMPLS = {"torch_add", "numpy_add", "eager_chain", "fused_chain", "loop_add", "foreach_add"}


def test_fit_recovers_known_t0_and_c():
    n = np.array(fixedcost.sizes(0, 6, 3), dtype=float)
    t0, c = 1.5e-6, 1e-10
    noise = 1 + 0.03 * np.random.default_rng(1).standard_normal(n.size)
    fit = fixedcost.fit_fixed_plus_linear(n, (t0 + c * n) * noise)
    assert fit["t0_s"] == pytest.approx(t0, rel=0.1)
    assert fit["c_s_per_elem"] == pytest.approx(c, rel=0.1)
    assert fit["n_star"] == pytest.approx(t0 / c, rel=0.2)
    exact = fixedcost.fit_fixed_plus_linear(n, t0 + c * n)
    assert exact["n_star"] == pytest.approx(15_000, rel=1e-9)


def test_efficiency_is_one_half_at_n_star():
    t0, c = 2e-6, 4e-10
    n_star = t0 / c
    eff = fixedcost.efficiency([n_star], [t0 + c * n_star], c)
    assert eff[0] == pytest.approx(0.5)


def test_crossover_and_sizes():
    n = [1, 10, 100, 1000]
    assert fixedcost.crossover(n, [4, 4, 4, 4], [8, 2, 1, 1]) == pytest.approx(
        10 ** 0.5, rel=1e-6)                         # ratio 2 at 1, 0.5 at 10
    assert fixedcost.crossover(n, [1, 1, 1, 1], [2, 2, 2, 2]) is None
    assert fixedcost.sizes(0, 2, 1) == [1, 10, 100]
    with pytest.raises(ValueError):
        fixedcost.sizes(2, 2, 1)


def test_fused_chain_equals_the_eager_chain():
    import torch

    bench = load_script("dispatch")
    x = torch.linspace(-2, 2, 1001)
    for k in (1, 3, 4, 7):
        ref = bench.eager_chain(x, torch.empty_like(x), k)
        got = np.empty(x.numel(), np.float32)
        bench._cpu_fused(k)(x.numpy(), got)
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-6, atol=1e-7)


def test_dispatch_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke")
    assert out["bench"] == "dispatch" and out["device"] == "cpu" and "machine" in out
    assert out["sizes"][0] == 1
    assert math.isfinite(out["overhead_us"]) and out["overhead_us"] > 0
    assert math.isfinite(out["crossover_elems"]) and out["crossover_elems"] > 0
    assert out["crossover_elems"] == pytest.approx(
        out["fits"]["torch_add"]["t0_s"] / out["fits"]["torch_add"]["c_s_per_elem"])
    assert out["numpy_overhead_us"] > 0
    assert {r["impl"] for r in out["rows"]} == IMPLS
    assert len(out["rows"]) == len(IMPLS) * len(out["sizes"])
    for r in out["rows"]:
        assert r["size"] in out["sizes"]
        assert 0 < r["best_s"] <= r["median_s"] and r["iqr_s"] >= 0
    assert out["fused_max_abs_err"] <= 1e-5
    for gain in (out["fusion_gain"], out["foreach_gain"]):
        assert gain["small"] > 0 and gain["large"] > 0
    th = out["threads"]
    assert th["counts"] == [1, 2]
    assert {r["work"] for r in th["rows"]} == {"gemm", "wide_step", "digits_step",
                                               "tiny_add"}
    for work in th["speedups"].values():
        s = work["2"]
        assert 0 < s["lo"] <= s["speedup"] <= s["hi"] < math.inf


def test_bad_settings_are_refused_before_work():
    with pytest.raises(LauncherError, match="unknown parts"):
        run_script(SCRIPT, profile="smoke", args=["--parts", "everything"])
    too_many = (os.cpu_count() or 1) + 1
    with pytest.raises(LauncherError, match="thread-counts"):
        run_script(SCRIPT, profile="smoke", args=["--thread-counts", f"1,{too_many}"])


def test_batches_are_fixed_and_cover_each_epoch():
    a = lockstep.batches(10, 4, 6, seed=3)
    b = lockstep.batches(10, 4, 6, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert [len(x) for x in a] == [4, 4, 2, 4, 4, 2]
    assert sorted(np.concatenate(a[:3]).tolist()) == list(range(10))
    with pytest.raises(ValueError):
        lockstep.batches(0, 4, 1)


def test_numpy_and_torch_agree_in_float64():
    rng = np.random.default_rng(0)
    X = rng.random((120, 16))
    y = rng.integers(0, 5, 120)
    out = lockstep.lockstep([16, 12, 5], X, y, steps=25, batch=16, lr=0.2)
    assert out["max_param_diff"] < 1e-10
    assert out["max_loss_diff"] < 1e-10
    assert out["loss_numpy"][-1] < out["loss_numpy"][0]
    # the check can fail: one changed weight is seen
    out["params"][0][0][0, 0] += 1e-6
    assert lockstep.max_param_diff(out["params"], out["model"]) >= 1e-6 * 0.99
    with pytest.raises(ValueError):
        lockstep.max_param_diff(nn.init_mlp([16, 5]), out["model"])
