"""Chapter 6: distributed Jacobi matches the single-process solve exactly (torchrun and MPI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpcai import stencil as st
from hpcai.launch import LauncherError, load_script, mpiexec, run_script, torchrun

SCRIPT = "scripts/bench/jacobi.py"
jac = load_script("jacobi")


def test_vectorised_step_equals_point_loops():
    u = jac.initial_grid(9, torch.float64)
    u[3:6, 2:7] = torch.arange(15, dtype=torch.float64).reshape(3, 5)  # something non-trivial
    out = u.clone()
    jac.jacobi_step(u, out)
    a = u.numpy()
    want = a.copy()
    for i in range(1, 8):
        for j in range(1, 8):
            want[i, j] = 0.25 * (a[i - 1, j] + a[i + 1, j] + a[i, j - 1] + a[i, j + 1])
    assert np.array_equal(out.numpy(), want)


@pytest.mark.parametrize("n,p", [(10, 1), (10, 3), (34, 4), (7, 5)])
def test_stripes_cover_the_interior_once(n, p):
    bounds = [jac.stripe_bounds(n, p, r) for r in range(p)]
    assert bounds[0][0] == 1 and bounds[-1][1] == n - 1
    assert all(b[1] == c[0] for b, c in zip(bounds, bounds[1:]))
    heights = [stop - start for start, stop in bounds]
    assert max(heights) - min(heights) <= 1 and min(heights) >= 1


def test_too_many_stripes_is_an_error():
    with pytest.raises(ValueError):
        jac.stripe_bounds(5, 4, 0)  # 3 interior rows, 4 ranks


@pytest.fixture(scope="module")
def solved():
    return torchrun(SCRIPT, 2, profile="smoke")


def test_two_ranks_match_the_reference_exactly(solved):
    out = solved
    assert out["world"] == 2 and out["backend"] == "gloo"
    assert out["max_err_vs_reference"] == 0.0 and out["blocking_max_err"] == 0.0
    for key in ("median_s", "compute_s", "comm_s"):
        assert out[key] > 0
    assert out["iqr_s"] >= 0 and [p["rank"] for p in out["placement"]] == [0, 1]
    sizes = out["settings"]["sizes"]
    assert {(r["n"], r["ranks"]) for r in out["rows"]} == {(n, p) for n in sizes for p in (1, 2)}


def test_scaling_rows_are_consistent(solved):
    for r in solved["rows"]:
        assert r["max_err_vs_reference"] == 0.0
        assert r["compute_s"] > 0 and r["comm_s"] >= 0
        assert r["median_s"] > 0 and r["iqr_s"] >= 0
        assert r["speedup"] == pytest.approx(r["efficiency"] * r["ranks"])
        if r["ranks"] == 1:
            assert r["speedup"] == pytest.approx(1.0) and r["halo_bytes_per_iter"] == 0
        else:  # two ranks: each has one neighbour and sends one float32 row per sweep
            assert r["halo_bytes_per_iter"] == 4 * r["n"]
        assert r["mlups"] == pytest.approx((r["n"] - 2) ** 2 * r["iters"] / r["median_s"] / 1e6)


def test_grid_too_small_for_the_ranks_is_rejected():
    with pytest.raises(LauncherError, match="at least 4 rows"):  # one rank: 2 interior rows
        run_script(SCRIPT, profile="smoke", args=["--sizes", "3"])


def test_unknown_exchange_is_rejected():
    with pytest.raises(LauncherError, match="exchange must be one of"):
        run_script(SCRIPT, profile="smoke", args=["--exchange", "telepathy"])


# --------------------------------------------------------------------------- the MPI version
MPI_SCRIPT = "scripts/bench/jacobi_mpi.py"


def test_numba_sweeps_equal_the_numpy_and_torch_references():
    n, iters = 20, 15
    ref = st.reference(n, iters)
    assert np.array_equal(ref, jac.jacobi_reference(n, iters).numpy())  # same problem, bitwise
    for split in (False, True):
        u = st.initial_grid(n)
        out = u.copy()
        for _ in range(iters):
            if split:  # three pieces, as the overlapped sweep does them
                st.sweep_rows(u, out, 2, n - 2)
                st.sweep_rows(u, out, 1, 2)
                st.sweep_rows(u, out, n - 2, n - 1)
            else:
                st.sweep_parallel(u, out)
            u, out = out, u
        assert np.array_equal(u, ref)


@pytest.fixture(scope="module")
def mpi_solved():
    return mpiexec(MPI_SCRIPT, 2, profile="smoke", env={"OMP_NUM_THREADS": "1"})


def test_mpi_variants_match_the_reference_exactly(mpi_solved):
    out = mpi_solved
    assert out["ranks"] == 2 and [p["rank"] for p in out["placement"]] == [0, 1]
    assert out["max_err_vs_reference"] == 0.0
    assert [r["n"] for r in out["rows"]] == out["settings"]["sizes"]
    for r in out["rows"]:
        assert {"blocking", "overlap", "standalone_1"} <= set(r["errors"])
        assert max(r["errors"].values()) == 0.0
        assert r["halo_bytes_per_iter"] == 4 * r["n"]  # one float32 row to one neighbour


def test_mpi_rows_are_consistent(mpi_solved):
    for r in mpi_solved["rows"]:
        for v in ("blocking", "overlap", "compute", "exchange"):
            assert r[f"{v}_s"] > 0 and r[f"{v}_iqr_s"] >= 0
            assert len(r[f"{v}_times_s"]) == mpi_solved["settings"]["repeats"]
        assert r["best_threads"] in mpi_solved["standalone_threads"]
        assert r["best_standalone_s"] == min(s["median_s"] for s in r["standalone"].values())
        assert r["speedup_overlap"] == pytest.approx(r["best_standalone_s"] / r["overlap_s"])
        b, o, c = (r[f"{v}_times_s"] for v in ("blocking", "overlap", "compute"))
        # paired differences, round by round, then the median
        assert r["saved_s"] == pytest.approx(np.median(np.subtract(b, o)))
        assert r["exposed_exchange_s"] == pytest.approx(np.median(np.subtract(b, c)))
        if r["exposed_exchange_s"] > 0:
            assert r["hidden_fraction"] == pytest.approx(r["saved_s"] / r["exposed_exchange_s"])
        else:
            assert r["hidden_fraction"] is None


def test_mpi_grid_too_small_is_rejected():
    with pytest.raises(LauncherError, match="at least 4 rows"):  # one rank: 2 interior rows
        run_script(MPI_SCRIPT, profile="smoke", args=["--sizes", "3"])


def test_mpi_unknown_dtype_is_rejected():
    with pytest.raises(LauncherError, match="dtype must be one of"):
        run_script(MPI_SCRIPT, profile="smoke", args=["--dtype", "int8"])
