"""Chapter 5: fixed costs against problem size."""

from __future__ import annotations

import numpy as np
import pytest

from hpcai.launch import LauncherError, load_script, run_script

SCRIPT = "scripts/bench/overheads.py"


@pytest.fixture(scope="module")
def oh():
    return load_script("overheads")


def test_fit_recovers_a_known_model(oh):
    n = np.array(oh.sizes(1, 7, 2), dtype=float)
    t0, c = 5e-6, 2e-10
    noise = 1 + 0.02 * np.random.default_rng(0).standard_normal(n.size)
    fit = oh.fit_fixed_plus_linear(n, (t0 + c * n) * noise)
    assert fit["t0_s"] == pytest.approx(t0, rel=0.1)
    assert fit["c_s_per_elem"] == pytest.approx(c, rel=0.1)
    assert fit["n_star"] == pytest.approx(t0 / c, rel=0.2)


def test_crossover_from_data(oh):
    n = [10, 100, 1000, 10000]
    slow = [1.0, 2.0, 4.0, 8.0]
    assert oh.crossover(n, slow, [2.0, 4.0, 2.0, 1.0]) == pytest.approx(
        10 ** (2 + 0.5), rel=1e-6)                       # ratio 2 at 100, 0.5 at 1000
    assert oh.crossover(n, slow, [0.5, 1.0, 2.0, 4.0]) == 10.0     # always faster
    assert oh.crossover(n, slow, [2.0, 4.0, 8.0, 16.0]) is None    # never faster
    assert oh.crossover(n, slow, [0.5, 4.0, 2.0, 1.0]) == pytest.approx(10 ** 2.5, rel=1e-6)


def test_sizes_are_validated(oh):
    assert oh.sizes(1, 3, 1) == [10, 100, 1000]
    with pytest.raises(ValueError):
        oh.sizes(3, 3, 1)


def test_overheads_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke", args=["--parts", "region,dispatch,alloc",
                                                    "--hi", "4"])
    assert out["bench"] == "overheads" and "machine" in out and "process" not in out
    assert out["sizes"] == [10, 100, 1000, 10000]
    for series in (out["region"]["serial"], out["region"]["parallel"],
                   out["dispatch"]["torch_add"], out["dispatch"]["numpy_add"],
                   out["alloc"]["np_empty"], out["alloc"]["np_ones"]):
        assert len(series["best_s"]) == 4
        assert all(0 < b <= m for b, m in zip(series["best_s"], series["median_s"]))
        assert series["fit"]["t0_s"] >= 0 and series["fit"]["c_s_per_elem"] > 0
    # a PyTorch call has a real fixed cost: a 10-element add is not 1000x cheaper than 10,000
    t = out["dispatch"]["torch_add"]["best_s"]
    assert t[0] > t[-1] / 1000 and out["dispatch"]["torch_add"]["fit"]["t0_s"] > 1e-8


def test_process_start():
    out = run_script(SCRIPT, profile="smoke", args=["--parts", "process"])
    p = out["process"]
    assert p["python_pass"]["median_s"] > 0
    assert p["python_numpy"]["median_s"] >= p["python_pass"]["min_s"] * 0.5
    # mpiexec ships with the book's environment (the mpich wheel), so it must have been timed
    assert "error" not in p["mpiexec_2_true"], p["mpiexec_2_true"]
    assert p["mpiexec_2_true"]["median_s"] > 0


def test_unknown_part_is_refused():
    with pytest.raises(LauncherError, match="unknown parts"):
        run_script(SCRIPT, profile="smoke", args=["--parts", "everything"])
