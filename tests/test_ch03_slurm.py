"""Chapter 3: job scripts from scripts/slurm/ submitted to a real SLURM cluster.

CI starts a two-node cluster with `scripts/setup_machine.sh` (`scripts/local_slurm.sh up
--nodes 2`). These tests skip only when `sbatch` is not on the PATH; if sbatch is there but the
cluster does not work, they fail. Jobs across two nodes are in tests/test_cluster.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from hpcai import repo_root
from hpcai.launch import sbatch

pytestmark = pytest.mark.skipif(
    shutil.which("sbatch") is None,
    reason="no SLURM cluster: sbatch is not on the PATH (as root: scripts/setup_machine.sh)",
)

ROOT = repo_root()
OUT = ROOT / "_build" / "slurm-out"


def scontrol_job(job_id: str) -> list[dict[str, str]]:
    out = subprocess.run(["scontrol", "show", "job", "-o", str(job_id)], capture_output=True,
                         text=True, check=True).stdout
    return [dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)) for line in out.splitlines() if line]


def wait_gone(job_id: str, timeout: float = 240) -> None:
    start = time.time()
    while time.time() - start < timeout:
        q = subprocess.run(["squeue", "-h", "-j", str(job_id)], capture_output=True, text=True)
        if q.returncode == 0 and not q.stdout.strip():
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still in the queue after {timeout} s")


def submit(*args: str, env: dict | None = None) -> str:
    OUT.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def test_cluster_has_an_idle_or_busy_node():
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    assert out.returncode == 0, f"sbatch exists but sinfo fails: {out.stderr}"
    states = {s.strip("~#!%$@^") for s in out.stdout.split()}
    assert states & {"idle", "mixed", "allocated", "completing"}, states


def test_compilers_job_completes_with_valid_json():
    res = sbatch("scripts/slurm/compilers.sbatch", env={"PROFILE": "smoke"},
                 args=["--sets", "O2,native", "--python", "false", "--n", "48"], timeout=300)
    rec = scontrol_job(res["job_id"])[0]
    assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", rec
    assert res["bench"] == "compilers" and res["profile"] == "smoke"
    assert {r["set"] for r in res["c"]} == {"O2", "native"} and res["python"] == []
    for r in res["c"]:
        assert r["rel_err"] < 1e-3 and r["gflops"] > 0 and r["n"] in (48, 16384)
    text = Path(res["output_file"]).read_text()
    assert f"job {res['job_id']} on" in text   # the job script's own banner


def test_hello_job_tasks_split_the_work():
    n = 100_000
    job = submit("scripts/slurm/ch03_hello.sbatch", str(n))
    wait_gone(job)
    rec = scontrol_job(job)[0]
    assert rec["JobState"] == "COMPLETED" and rec["ExitCode"] == "0:0", rec
    lines = (OUT / f"ch03_hello-{job}.out").read_text().splitlines()
    tasks = [json.loads(x) for x in lines if x.startswith("{")]
    assert sorted(t["task"] for t in tasks) == [0, 1]
    assert sum(t["partial_sum"] for t in tasks) == (n - 1) * n * (2 * n - 1) // 6
    for t in tasks:
        assert t["env"]["SLURM_JOB_ID"] == job and t["env"]["SLURM_STEP_ID"] == "0"
        assert t["env"]["SLURM_NTASKS"] == "2"
    assert any(x.startswith("SLURM_MEM_PER_NODE=256") for x in lines)


def test_array_sweep_runs_one_size_per_task():
    job = submit("--array=0-1", "scripts/slurm/ch03_sweep.sbatch",
                 env={"SWEEP_SIZES": "24 40", "PROFILE": "smoke"})
    wait_gone(job)
    recs = scontrol_job(job)
    assert sorted(r["ArrayTaskId"] for r in recs) == ["0", "1"]
    assert all(r["JobState"] == "COMPLETED" for r in recs), recs
    for i, n in enumerate((24, 40)):
        res = json.loads((OUT / f"ch03_sweep-{job}_{i}.out").read_text().splitlines()[-1])
        mm = [r for r in res["c"] if r["kernel"] == "matmul"]
        assert len(mm) == 1 and mm[0]["n"] == n and mm[0]["rel_err"] < 1e-4


def test_scancel_cancels_and_impossible_memory_is_refused():
    job = submit("--wrap", "sleep 120", "--time=00:03:00", "--output=/dev/null")
    subprocess.run(["scancel", job], check=True)
    wait_gone(job)
    assert scontrol_job(job)[0]["JobState"] == "CANCELLED"
    bad = subprocess.run(["sbatch", "--mem=100000000M", "--wrap", "true"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "not available" in bad.stderr + bad.stdout


def test_local_slurm_up_is_idempotent():
    state_dir = Path(os.environ.get("HPCAI_SLURM_DIR", "/var/tmp/hpcai-slurm"))
    if os.geteuid() != 0 or not (state_dir / "run" / "slurmctld.pid").exists():
        pytest.skip("this cluster was not started by scripts/local_slurm.sh as root")
    script = str(ROOT / "scripts" / "local_slurm.sh")
    # without --nodes, `up` keeps the running cluster's size (CI runs two nodes)
    up = subprocess.run([script, "up"], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0 and "cluster is up" in up.stdout, up.stdout + up.stderr
    assert "starting" not in up.stdout          # nothing was running twice
    status = subprocess.run([script, "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "slurmctld running" in status.stdout
    nodes = re.findall(r"slurmd (n\d+) running", status.stdout)
    assert nodes and nodes == [f"n{k}" for k in range(1, len(nodes) + 1)], status.stdout
    again = subprocess.run([script, "up", "--nodes", str(len(nodes))], capture_output=True,
                           text=True, timeout=120)
    assert again.returncode == 0 and "starting" not in again.stdout, again.stdout
    bad = subprocess.run([script, "sideways"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
    for value in ("0", "x", "99"):
        bad = subprocess.run([script, "up", "--nodes", value], capture_output=True,
                             text=True)
        assert bad.returncode == 2 and bad.stderr.startswith("error: --nodes"), bad.stderr


def test_nodes_have_their_own_address_and_port():
    """Each node of the local cluster is a slurmd of its own: n<k> at 127.0.0.<10+k>:<6820+k>."""
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True)
    if "ClusterName             = hpcai" not in conf.stdout:
        pytest.skip("not the local cluster of scripts/local_slurm.sh")
    out = subprocess.run(["scontrol", "show", "node", "-o"], capture_output=True, text=True,
                         check=True).stdout
    nodes = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line]
    for node in nodes:
        k = int(node["NodeName"].removeprefix("n"))
        assert node["NodeAddr"] == f"127.0.0.{10 + k}" and node["Port"] == str(6820 + k)
