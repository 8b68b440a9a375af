"""Distributed benchmarks across two SLURM nodes, submitted with ``sbatch -N 2``.

CI starts a two-node cluster on one machine (``scripts/local_slurm.sh up --nodes 2``: two
slurmd daemons, n1 and n2, each on its own loopback address). Every test submits a real job
through :func:`hpcai.launch.sbatch` and checks two things: the ranks ran on two different
SLURM nodes (the ``placement`` field, built from ``SLURMD_NODENAME``) and the benchmark's own
correctness checks passed. Without a cluster of at least two nodes the tests are skipped.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from hpcai.launch import sbatch

ENABLE = ("start one as root with `scripts/setup_machine.sh` "
          "(or `scripts/local_slurm.sh up --nodes 2`)")


def _slurm_nodes() -> tuple[list[str], str]:
    """The names of the nodes that can run jobs now, and why there are none."""
    if shutil.which("sbatch") is None:
        return [], f"no SLURM cluster: sbatch is not on the PATH; {ENABLE}"
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return [], f"no SLURM controller answers sinfo; {ENABLE}"
    if proc.returncode != 0:
        return [], f"no SLURM controller answers sinfo ({proc.stderr.strip()}); {ENABLE}"
    usable = {"idle", "mixed", "allocated", "completing"}
    nodes = sorted({name for name, state in (line.split() for line in proc.stdout.splitlines()
                                             if len(line.split()) == 2)
                    if state in usable})
    return nodes, f"the SLURM cluster has {len(nodes)} usable node(s), not 2; {ENABLE}"


NODES, WHY = _slurm_nodes()
pytestmark = pytest.mark.skipif(len(NODES) < 2, reason=WHY)


def job_nodes(job_id: str) -> list[str]:
    """The node names SLURM allocated to a job, expanded (``n[1-2]`` -> n1, n2)."""
    rec = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True, check=True).stdout
    nodelist = re.search(r"\bNodeList=(\S+)", rec).group(1)
    names = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                           text=True, check=True).stdout.split()
    return names


def node_addr(node: str) -> str:
    out = subprocess.run(["scontrol", "show", "node", "-o", node], capture_output=True,
                         text=True, check=True).stdout
    return re.search(r"\bNodeAddr=(\S+)", out).group(1)


def assert_two_nodes(res: dict, ranks: int) -> list[str]:
    """Every rank reported where it ran, and the ranks cover both allocated nodes."""
    nodes = job_nodes(res["job_id"])
    assert len(nodes) == 2 and nodes[0] != nodes[1], nodes
    placement = res["placement"]
    assert sorted(p["rank"] for p in placement) == list(range(ranks)), placement
    assert {p["node"] for p in placement} == set(nodes), (placement, nodes)
    return nodes


def torchrun_job(bench: str, args: list[str]) -> dict:
    return sbatch("scripts/slurm/torchrun.sbatch", sbatch_args=["-N", "2"], args=args,
                  env={"BENCH": bench, "PROFILE": "smoke", "NPROC": "1"}, timeout=180)


def check_rendezvous(res: dict, nodes: list[str]) -> None:
    """The job script put the c10d rendezvous on the first node's address."""
    text = Path(res["output_file"]).read_text()
    m = re.search(r"rendezvous: c10d at (\S+):(\d+) \(node (\S+)\)", text)
    assert m, text[:1000]
    assert m.group(3) == nodes[0] and m.group(1) == node_addr(nodes[0]), m.group(0)


def test_allreduce_under_torchrun_on_two_nodes():
    res = torchrun_job("allreduce", ["--max-bytes", "4096"])
    nodes = assert_two_nodes(res, 2)
    check_rendezvous(res, nodes)
    assert res["world"] == 2 and res["backend"] == "gloo"
    # every (algorithm, size) pair matched dist.all_reduce bit for bit before it was timed
    sizes = {r["bytes"] for r in res["rows"]}
    assert res["checked_against_library"] is True
    assert res["checks_passed"] == len(res["algos"]) * len(sizes) > 0


def test_jacobi_under_torchrun_on_two_nodes():
    res = torchrun_job("jacobi", ["--sizes", "32,64", "--iters", "10"])
    nodes = assert_two_nodes(res, 2)
    check_rendezvous(res, nodes)
    assert res["world"] == 2
    # the distributed solves equal the single-process reference exactly
    assert res["max_err_vs_reference"] == 0.0 and res["blocking_max_err"] == 0.0
    assert {r["ranks"] for r in res["rows"]} == {1, 2}
    assert all(r["max_err_vs_reference"] == 0.0 for r in res["rows"])


@pytest.mark.parametrize("launcher", ["mpiexec", "srun"])
def test_pi_under_mpi_on_two_nodes(launcher):
    n = 1_000_000
    res = sbatch("scripts/slurm/pi_mpi.sbatch", sbatch_args=["-N", "2"],
                 env={"PROFILE": "smoke", "LAUNCHER": launcher},
                 args=["--n", str(n), "--baseline", "false"], timeout=120)
    assert_two_nodes(res, 2)
    assert res["ranks"] == 2 and res["n"] == n
    # the trapezoid rule's error bound, 1/(6 n^2), plus the rounding of n additions
    assert abs(res["pi"] - math.pi) <= 1 / (6 * n * n) + n * 2.2e-16


def test_jacobi_under_mpi_on_two_nodes():
    res = sbatch("scripts/slurm/mpi.sbatch", sbatch_args=["-N", "2"],
                 env={"PROFILE": "smoke", "BENCH": "jacobi_mpi"},
                 args=["--sizes", "32,64", "--iters", "10", "--baseline", "false"],
                 timeout=120)
    assert_two_nodes(res, 2)
    assert res["ranks"] == 2 and res["max_err_vs_reference"] == 0.0
    # the blocking and the overlapped exchange both equal the NumPy reference exactly
    assert [r["errors"] for r in res["rows"]] == [{"blocking": 0.0, "overlap": 0.0}] * 2


def test_ddp_under_torchrun_on_two_nodes():
    """Chapter 12's DDP script, one rank per node: the library's DDP and both hand-written
    versions (naive, bucketed) train to the one-process run on the global batch."""
    res = torchrun_job("ddp", [])
    nodes = assert_two_nodes(res, 2)
    check_rendezvous(res, nodes)
    assert res["world"] == 2 and res["backend"] == "gloo"
    impls = {r["impl"]: r for r in res["rows"]}
    assert set(impls) == {"torch", "naive", "bucketed"}, sorted(impls)
    for impl, row in impls.items():
        assert row["max_param_diff"] <= 1e-5, (impl, row["max_param_diff"])
        assert row["max_loss_diff"] <= 1e-5, (impl, row["max_loss_diff"])
        # two ranks really exchanged gradients: bytes were counted on the last step
        if impl != "torch":
            assert row["comm_bytes_per_step"] > 0, (impl, row)


def test_ddp_scaling_on_two_nodes_with_two_ranks_each():
    """Chapter 12's scaling job through the N nodes x G ranks template at N = 2, G = 2:
    four ranks, two on each node (LOCAL_RANK 0 and 1), train exactly like one process."""
    res = sbatch("scripts/slurm/torchrun.sbatch", sbatch_args=["-N", "2"],
                 args=["--scaling", "strong", "--epochs", "1"],
                 env={"BENCH": "ddp_scaling", "PROFILE": "smoke", "NPROC": "2"},
                 timeout=240)
    nodes = assert_two_nodes(res, 4)
    check_rendezvous(res, nodes)
    per_node = {n: sorted(p["rank"] for p in res["placement"] if p["node"] == n)
                for n in nodes}
    assert sorted(len(r) for r in per_node.values()) == [2, 2], per_node
    text = Path(res["output_file"]).read_text()
    assert "processes per node: 2" in text, text[:500]
    run = res["runs"][0]
    assert res["world"] == 4 and run["scaling"] == "strong"
    assert run["batch_per_rank"] * 4 == run["global_batch"]
    assert run["max_loss_diff"] <= 1e-5, run["max_loss_diff"]
