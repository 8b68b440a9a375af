"""Chapter 4: the MPI trapezoid-rule pi benchmark, run for real under mpiexec."""

from __future__ import annotations

import math

import pytest

from hpcai.launch import LauncherError, load_script, mpiexec

SCRIPT = "scripts/bench/pi_mpi.py"


def test_blocks_cover_every_trapezoid_once():
    pi = load_script("pi_mpi")
    for n, size in [(10, 3), (7, 7), (5, 8), (1_000_003, 4)]:
        blocks = [pi.block(r, size, n) for r in range(size)]
        assert blocks[0][0] == 0 and blocks[-1][1] == n
        for (_, hi), (lo, _) in zip(blocks, blocks[1:], strict=False):
            assert hi == lo  # contiguous, no gap, no overlap
        lengths = [hi - lo for lo, hi in blocks]
        assert max(lengths) - min(lengths) <= 1


def test_serial_kernel_converges_like_h_squared():
    pi = load_script("pi_mpi")
    e1 = abs(pi.pi_serial(100) - math.pi)
    e2 = abs(pi.pi_serial(200) - math.pi)
    assert e2 == pytest.approx(e1 / 4, rel=0.01)  # trapezoid rule: error ~ 1/(6 n^2)
    assert e1 == pytest.approx(1 / (6 * 100**2), rel=0.01)


@pytest.mark.parametrize("ranks", [1, 2])
def test_pi_mpi_json_at_smoke(ranks):
    out = mpiexec(SCRIPT, ranks, profile="smoke")
    assert out["bench"] == "pi_mpi" and out["profile"] == "smoke"
    assert out["ranks"] == ranks
    assert abs(out["pi"] - math.pi) == pytest.approx(out["error"])
    assert out["error"] < 1e-9
    assert out["median_s"] > 0 and out["iqr_s"] >= 0
    assert len(out["times_s"]) == out["settings"]["repeats"]
    # the slowest rank's compute and the rest add up to its time: a relation of the data
    assert out["compute_s"] + out["rest_s"] == pytest.approx(out["median_s"], rel=1e-12)
    assert 0 < out["compute_s"] <= out["median_s"] and out["rest_s"] >= 0
    assert "machine" in out
    if ranks == 1:  # a one-process run is its own standalone baseline
        assert out["baseline"] == "standalone" and out["efficiency"] == pytest.approx(1.0)
    else:  # no baseline given: no efficiency claimed
        assert "efficiency" not in out and "serial_s" not in out


def test_efficiency_uses_the_given_standalone_baseline():
    out = mpiexec(SCRIPT, 2, profile="smoke",
                  args=["--n", "1000000", "--serial-s", "0.5", "--baseline", "true"])
    assert out["serial_s"] == 0.5 and out["baseline"] == "standalone"
    assert out["efficiency"] == pytest.approx(0.5 / (2 * out["median_s"]))
    # the in-run serial samples are reported beside it, not used as the baseline
    assert len(out["inrun_serial_times_s"]) == out["settings"]["repeats"]
    assert out["inrun_efficiency"] == pytest.approx(
        out["inrun_serial_s"] / (2 * out["median_s"]))


def test_weak_scaling_multiplies_the_work():
    out = mpiexec(SCRIPT, 2, profile="smoke",
                  args=["--weak", "true", "--n", "100000", "--serial-s", "0.01"])
    assert out["weak"] is True and out["n"] == 200_000
    assert out["error"] < 1e-8
    assert out["speedup"] is None and out["efficiency"] == pytest.approx(0.01 / out["median_s"])


def test_bad_input_fails_before_work():
    with pytest.raises(LauncherError, match="exited with 2[\\s\\S]*error: --n must be a positive integer"):
        mpiexec(SCRIPT, 1, profile="smoke", args=["--n", "0"])
