"""Chapter 6: the nccl-tests-style sweep under torchrun (gloo), checked result by result."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpcai import repo_root
from hpcai.dist import busbw_factor
from hpcai.launch import LauncherError, load_script, run_script, torchrun
from hpcai.profiles import resolve

SCRIPT = "scripts/bench/nccl_tests.py"


def test_size_sweep_and_counts():
    bench = load_script("nccl_tests")
    assert bench.size_sweep(resolve("smoke", bench.SIZES)) == [1024, 16384, 262144]
    # element counts are whole multiples of the world size, never zero
    assert bench.count_for(1024, 3) % 3 == 0 and bench.count_for(4, 8) == 8


@pytest.fixture(scope="module")
def sweep():
    return torchrun(SCRIPT, 2, profile="smoke")


def test_every_collective_is_correct_and_bookkept(sweep):
    out = sweep
    assert out["world"] == 2 and out["backend"] == "gloo" and out["all_correct"] is True
    assert "machine" in out and out["bench"] == "nccl_tests"
    assert [p["rank"] for p in out["placement"]] == [0, 1]
    ops = {r["op"] for r in out["rows"]}
    assert ops == {"all_reduce", "all_gather", "reduce_scatter", "broadcast", "ring_allreduce"}
    sizes = {r["bytes"] for r in out["rows"]}
    assert len(sizes) >= 2
    for r in out["rows"]:
        if not r["supported"]:  # allowed only with a stated reason
            assert r["op"] in out["unsupported"]
            continue
        assert r["correct"] is True
        assert r["bytes"] == 4 * r["count"] and r["count"] % 2 == 0
        assert r["median_s"] > 0 and r["iqr_s"] >= 0
        assert r["algbw_GBps"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9)
        name = {"all_reduce": "allreduce", "ring_allreduce": "allreduce",
                "all_gather": "allgather", "reduce_scatter": "reducescatter",
                "broadcast": "broadcast"}[r["op"]]
        assert r["busbw_GBps"] == pytest.approx(r["algbw_GBps"] * busbw_factor(name, 2))
    # the table has one line per measured row
    table = load_script("nccl_tests").format_table(out["rows"])
    assert table.count("\n") >= len(out["rows"])


def test_ring_is_compared_with_library_at_every_size(sweep):
    cmp = sweep["ring_vs_library"]
    ring_sizes = sorted(r["bytes"] for r in sweep["rows"] if r["op"] == "ring_allreduce")
    assert [c["bytes"] for c in cmp] == ring_sizes
    assert all(c["time_ratio"] > 0 for c in cmp)
    assert sweep["ring_busbw_ratio"] > 0


def test_bad_sweep_is_rejected_before_any_work():
    with pytest.raises(LauncherError, match="min_bytes"):
        run_script(SCRIPT, profile="smoke", args=["--min-bytes", "4096", "--max-bytes", "1024"])


def test_unknown_profile_exits_with_status_2():
    proc = subprocess.run([sys.executable, SCRIPT, "--profile", "laptop"], cwd=repo_root(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown profile" in proc.stderr
