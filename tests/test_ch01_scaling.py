"""Chapter 1: the two-phase kernel, the scaling laws and the Amdahl fit."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hpcai.launch import LauncherError, load_script, run_script

SCRIPT = "scripts/bench/scaling.py"


def test_laws_at_known_points():
    sc = load_script("scaling")
    assert sc.amdahl(1, 0.3) == pytest.approx(1.0)
    assert sc.amdahl(1e12, 0.05) == pytest.approx(20.0, rel=1e-6)
    assert sc.amdahl(11, 0.1) == pytest.approx(1 / (0.1 + 0.9 / 11))
    assert sc.gustafson(1, 0.2) == pytest.approx(1.0)
    assert sc.gustafson(10, 0.2) == pytest.approx(8.2)


def test_fit_recovers_a_known_serial_fraction():
    sc = load_script("scaling")
    rng = np.random.default_rng(3)
    p = np.repeat(np.arange(1, 17), 5)
    s = sc.amdahl(p, 0.07) * (1 + 0.01 * rng.standard_normal(p.size))
    fit = sc.fit_amdahl(p, s)
    assert fit["f"] == pytest.approx(0.07, abs=0.01)
    assert fit["f_stderr"] < 0.01 and fit["rms_residual"] < 0.2


def test_fit_needs_two_worker_counts():
    sc = load_script("scaling")
    with pytest.raises(ValueError, match="two or more"):
        sc.fit_amdahl(np.ones(5), np.ones(5))


def test_kernel_check_accepts_the_kernel_and_rejects_errors():
    sc = load_script("scaling")
    x = sc.make_input(5000)
    y, z = np.empty_like(x), np.empty_like(x)
    sc.two_phase(x, 3, y, z)
    sc.check_kernel(x, 3, y, z)
    y_bad = y.copy()
    y_bad[10] += 0.1
    with pytest.raises(AssertionError, match="quadrature"):
        sc.check_kernel(x, 3, y_bad, z)
    z_bad = z.copy()
    z_bad[-1] += 1.0
    with pytest.raises(AssertionError, match="running sum"):
        sc.check_kernel(x, 3, y, z_bad)


def test_scaling_json_at_smoke():
    out = run_script(SCRIPT, profile="smoke")
    cores = len(os.sched_getaffinity(0))
    assert out["bench"] == "scaling" and "machine" in out
    assert out["workers"][0] == 1 and len(out["strong"]) == len(out["weak"]) == len(out["workers"])
    assert out["strong"][0]["speedup"] == pytest.approx(1.0)
    assert 0 < out["f_phase"] < 1
    for r in out["weak"]:
        assert r["work"] == out["work"] * r["p"] and r["scaled_speedup"] > 0
    if cores >= 2:
        assert 0.0 <= out["f_fit"] <= 1.0
        assert out["amdahl"]["points"] == sum(len(r["times_s"]) for r in out["strong"])


@pytest.mark.parametrize("args", [["--n", "10"], ["--work", "0"], ["--max-workers", "100000"]])
def test_bad_input_fails_before_work(args):
    with pytest.raises(LauncherError, match=f"exited with 2[\\s\\S]*error: {args[0]}"):
        run_script(SCRIPT, profile="smoke", args=args)
