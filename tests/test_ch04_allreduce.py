"""Chapter 4: the all-reduce benchmark under torchrun; hand-written algorithms vs gloo."""

from __future__ import annotations

import pytest

from hpcai.allreduce import ALLREDUCE_ALGORITHMS
from hpcai.dist import busbw_GBps
from hpcai.launch import LauncherError, torchrun

SCRIPT = "scripts/bench/allreduce.py"


def test_all_algorithms_in_one_run_agree_with_library():
    # the script asserts bit-equality with dist.all_reduce at every size before timing
    out = torchrun(SCRIPT, 2, profile="smoke",
                   args=["--max-bytes", "65536", "--repeats", "2"])
    assert out["checked_against_library"] is True
    assert out["world"] == 2 and out["backend"] == "gloo"
    assert set(out["algos"]) == set(ALLREDUCE_ALGORITHMS)
    sizes = sorted({r["bytes"] for r in out["rows"]})
    assert sizes[-1] == 65536
    assert out["checks_passed"] == len(out["algos"]) * len(sizes)  # every pair checked first
    for algo, rows in out["by_algo"].items():
        assert [r["bytes"] for r in rows] == sizes, algo
        for r in rows:
            assert r["median_s"] > 0 and r["iqr_s"] >= 0
            assert r["algbw_GBps"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9)
            assert r["busbw_GBps"] == pytest.approx(
                busbw_GBps("allreduce", r["bytes"], r["median_s"], 2))
    assert [p["rank"] for p in out["placement"]] == [0, 1]
    assert out["ring_over_library_busbw"] > 0


def test_single_algorithm_on_three_ranks():
    out = torchrun(SCRIPT, 3, profile="smoke",
                   args=["--algo", "ring", "--max-bytes", "4096", "--repeats", "1"])
    assert out["algos"] == ["ring"] and out["world"] == 3
    assert all(r["algo"] == "ring" for r in out["rows"])
    assert "ring_over_library_busbw" not in out


def test_unknown_algorithm_is_rejected():
    with pytest.raises(LauncherError, match="--algo must be all or"):
        torchrun(SCRIPT, 1, profile="smoke", args=["--algo", "butterfly"])
