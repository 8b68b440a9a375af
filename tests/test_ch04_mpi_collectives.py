"""Chapter 4: every MPI collective checked under mpiexec, and the figures drawn from them."""

from __future__ import annotations

import sys

import numpy as np

from hpcai import mpi_reference as mc
from hpcai.launch import mpiexec
from hpcai.paths import repo_root


def test_reference_semantics_small_cases():
    p, k = 3, 1
    before = [mc.initial("allreduce", r, p, k) for r in range(p)]
    total = sum(before)
    for got in mc.reference("allreduce", before):
        assert np.array_equal(got, total)
    a2a = mc.reference("alltoall", [mc.initial("alltoall", r, p, k) for r in range(p)])
    # block j of rank r lands in slot r of rank j: a transpose of the (rank, block) grid
    assert a2a[2][0][0] == 100 * 0 + 10 * 2 and a2a[0][2][0] == 100 * 2


def test_every_collective_under_mpiexec():
    out = mpiexec("scripts/bench/mpi_collectives.py", 3, profile="smoke")
    assert out["ranks"] == 3 and out["all_ok"] is True
    assert set(out["checks"]) == set(mc.OPS)
    for op, check in out["checks"].items():  # re-check on this side what rank 0 gathered
        before = [np.array(b) for b in check["before"]]
        expected = mc.reference(op, before)
        for got, exp in zip(check["after"], expected, strict=True):
            assert np.array_equal(np.array(got), exp), op
    ops = [r["op"] for r in out["rows"]]
    assert ops == list(mc.OPS)
    assert all(r["median_s"] > 0 and r["iqr_s"] >= 0 for r in out["rows"])


def test_figures_draw(tmp_path):
    sys.path.insert(0, str(repo_root()))
    from figures import ch04_collectives

    paths = ch04_collectives.draw(tmp_path)
    assert [p.name for p in paths] == ["ch04_collectives.svg", "ch04_ring.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)
    final = ch04_collectives.ring_states(5)[-1][1]
    assert all(len(cell) == 5 for row in final for cell in row)
