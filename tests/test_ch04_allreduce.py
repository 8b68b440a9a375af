"""Chapter 4: the all-reduce benchmark under torchrun; hand-written algorithms vs gloo."""

from __future__ import annotations

import pytest

from hpcai.collectives import ALLREDUCE_ALGORITHMS, busbw_GBps
from hpcai.launch import LauncherError, load_script, torchrun

SCRIPT = "scripts/bench/allreduce.py"


def test_message_sizes_are_whole_elements_and_end_at_max():
    ar = load_script("allreduce")
    sizes = ar.message_sizes(8, 1000, 4, 4)
    assert sizes[0] == 8 and sizes[-1] == 1000
    assert all(s % 4 == 0 for s in sizes) and sizes == sorted(set(sizes))
    with pytest.raises(ValueError):
        ar.message_sizes(2, 1000, 4, 4)


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
            assert r["time_s"] > 0
            assert r["algbw_GBps"] == pytest.approx(r["bytes"] / r["time_s"] / 1e9)
            assert r["busbw_GBps"] == pytest.approx(
                busbw_GBps("allreduce", r["bytes"], r["time_s"], 2))
    assert out["ring_over_library_busbw"] > 0


def test_single_algorithm_on_three_ranks():
    out = torchrun(SCRIPT, 3, profile="smoke",
                   args=["--algo", "ring", "--max-bytes", "4096", "--repeats", "1"])
    assert out["algos"] == ["ring"] and out["world"] == 3
    assert all(r["algo"] == "ring" for r in out["rows"])
    assert "ring_over_library_busbw" not in out


def test_unknown_algorithm_is_rejected():
    with pytest.raises(LauncherError, match="unknown --algo"):
        torchrun(SCRIPT, 1, profile="smoke", args=["--algo", "butterfly"])
