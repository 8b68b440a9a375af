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


def test_fit_needs_two_parallel_worker_counts():
    sc = load_script("scaling")
    with pytest.raises(ValueError, match="two or more"):
        sc.fit_amdahl(np.ones(5), np.ones(5))
    # one parallel point (p = 2) fixes f without testing anything: no fit either
    with pytest.raises(ValueError, match="two or more"):
        sc.fit_amdahl(np.array([1, 1, 2, 2]), np.array([1.0, 1.0, 1.8, 1.7]))


def test_implied_serial_fraction_is_amdahl_solved_for_f():
    sc = load_script("scaling")
    assert sc.implied_serial_fraction(2, 1.6) == pytest.approx(2 / 1.6 - 1)
    for p, f in [(2, 0.1), (8, 0.03), (64, 0.2)]:
        assert sc.implied_serial_fraction(p, sc.amdahl(p, f)) == pytest.approx(f)
    with pytest.raises(ValueError):
        sc.implied_serial_fraction(1, 1.0)


def test_thread_counts_real_then_oversubscribed():
    sc = load_script("scaling")
    pool = sc.numba.config.NUMBA_NUM_THREADS
    real, over = sc.thread_counts(2, 4)
    assert real == [1, 2] and over == [p for p in (4, 8) if p <= pool]
    assert sc.thread_counts(3, 1) == ([1, 2, 3], [])
    assert sc.weak_counts([1, 2, 3], [6, 12]) == [1, 2, 3]


def test_phases_add_up_to_the_total():
    sc = load_script("scaling")
    x = sc.make_input(5000)
    y, z = np.empty_like(x), np.empty_like(x)
    t_map, t_scan = sc.timed_two_phase(x, 2, y, z)
    assert t_map > 0 and t_scan > 0
    row = sc.summarise([(3.0, 1.0), (1.0, 0.5), (2.0, 1.0)])
    assert row["median_s"] == 3.0 and row["map_s"] + row["scan_s"] == row["median_s"]


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
    assert out["workers"][0] == 1 and out["workers"][-1] == out["cores"]
    assert len(out["strong"]) == len(out["workers"]) + len(out["oversubscribed"])
    assert all(r["oversubscribed"] == (r["p"] > out["cores"]) for r in out["strong"])
    assert out["strong"][0]["speedup"] == pytest.approx(1.0)
    assert 0 < out["f_phase"] < 1
    for r in out["strong"] + out["weak"]:  # every sample: map + scan = total
        assert np.allclose(np.add(r["map_times_s"], r["scan_times_s"]), r["times_s"])
        assert r["map_s"] + r["scan_s"] == pytest.approx(r["median_s"], rel=1e-12)
    for r in out["weak"]:  # the work per thread is constant, the scan fixed
        assert r["n"] == r["scan_n"] * r["p"] and r["scaled_speedup"] > 0
    if cores >= 2:
        assert set(out["f_implied"]) == {str(p) for p in out["workers"][1:]}
    if cores <= 2:  # one parallel point on real cores: no fit
        assert out["amdahl"] is None and "no Amdahl fit" in out["fit_skipped"]


@pytest.mark.parametrize("args", [["--n", "10"], ["--work", "0"], ["--max-workers", "100000"],
                                  ["--oversubscribe", "9"]])
def test_bad_input_fails_before_work(args):
    with pytest.raises(LauncherError, match=f"exited with 2[\\s\\S]*error: {args[0]}"):
        run_script(SCRIPT, profile="smoke", args=args)
