"""Chapter 2: topology, pinning, oversubscription and hybrid placement (placement.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from hpcai.launch import load_script, run_script

SCRIPT = "scripts/bench/placement.py"
pb = load_script("placement")

XML = """<?xml version="1.0" encoding="UTF-8"?>
<topology version="2.0">
 <object type="Machine" os_index="0" cpuset="0x000000ff">
  <info name="hwlocVersion" value="2.9.0"/>
  {packages}
 </object>
</topology>"""
PACKAGE = """<object type="Package" os_index="{p}" cpuset="{mask}">
  <object type="NUMANode" os_index="{p}" cpuset="{mask}" local_memory="1073741824"/>
  <object type="L3Cache" cpuset="{mask}" cache_size="33554432">{cores}</object>
 </object>"""
CORE = """<object type="L2Cache" cpuset="{m}" cache_size="1048576">
  <object type="Core" cpuset="{m}"><object type="PU" cpuset="{a}"/>
  <object type="PU" cpuset="{b}"/></object></object>"""


def _two_socket_xml() -> str:
    """Two packages, each one NUMA node and one L3 over two cores of two hyper-threads."""
    packages = []
    for p in range(2):
        cores = []
        for c in range(2):
            a, b = 1 << (4 * p + 2 * c), 1 << (4 * p + 2 * c + 1)
            cores.append(CORE.format(m=hex(a | b), a=hex(a), b=hex(b)))
        packages.append(PACKAGE.format(p=p, mask=hex(0xF << (4 * p)), cores="".join(cores)))
    return XML.format(packages="".join(packages))


def test_hwloc_xml_is_counted():
    got = {r["type"]: r for r in pb.parse_hwloc_xml(_two_socket_xml())["rows"]}
    assert [got[k]["count"] for k in ("Package", "NUMA node", "L3", "L2", "Core", "PU")] == [
        2, 2, 2, 4, 4, 8]
    assert got["L3"]["size_bytes"] == 32 << 20 and got["L3"]["pus_each"] == 4
    assert got["Core"]["pus_each"] == 2 and got["PU"]["pus_each"] == 1
    assert got["NUMA node"]["size_bytes"] == 1 << 30
    assert pb.parse_hwloc_xml(_two_socket_xml())["source"] == "hwloc 2.9.0"


def test_sysfs_view_of_this_machine():
    """The /sys reader needs no hwloc; where hwloc exists, both count the same PUs, cores."""
    mine = {r["type"]: r["count"] for r in pb.sysfs_topology()["rows"]}
    assert mine["PU"] >= len(os.sched_getaffinity(0))
    assert mine["Package"] >= 1 and mine["Core"] >= 1
    xml = pb.lstopo_xml()
    if xml is None:
        pytest.skip("hwloc (lstopo) is not installed")
    theirs = {r["type"]: r["count"] for r in pb.parse_hwloc_xml(xml)["rows"]}
    assert theirs["PU"] == mine["PU"] and theirs["Core"] == mine["Core"]


def test_cpu_lists_and_sizes():
    assert pb._cpu_list("0-2,5,7-8") == {0, 1, 2, 5, 7, 8}
    assert pb._size("48K") == 48 << 10 and pb._size("2048K") == 2 << 20
    assert pb._popcount("0x000000ff,0x00000003") == 10


def test_configurations_and_command_lines():
    S = SimpleNamespace(n=1000, sweeps=3, repeats=2, oversub=[0.5, 1, 2, 4],
                        parts=["pinning", "mpi", "oversub", "hybrid"])
    cfgs = {c["name"]: c for c in pb.configs(S, [4, 5, 6, 7])}
    assert sorted(c["ranks"] for c in cfgs.values() if "oversub" in c["parts"]) == [2, 4, 8, 16]
    assert cfgs["4 ranks, -bind-to none"]["parts"] == ["mpi", "oversub"]  # shared, run once
    cmd, env = pb.command(cfgs["1 rank x 4 threads, -bind-to core:4"], "kernel", S)
    assert cmd[1:] == ["-n", "1", "-bind-to", "core:4", "kernel", "1000", "3", "2"]
    assert env["OMP_NUM_THREADS"] == "4" and env["OMP_PROC_BIND"] == "close"
    assert env["OMP_PLACES"] == "cores"
    cmd, env = pb.command(cfgs["4 threads, taskset -c 4"], "kernel", S)
    assert cmd[1:3] == ["-c", "4"] and cmd[3] == "kernel" and "OMP_PLACES" not in env
    assert pb.oversub_ranks([0.5, 1, 2, 4], 2) == [1, 2, 4, 8]


def test_reference_is_the_same_arithmetic():
    x = [0.0] * 5
    for _ in range(4):
        x = [pb.ALPHA * v + 1.0 + 0.25 * (i % 13) for i, v in enumerate(x)]
    assert pb.reference_checksum(5, 4) == pytest.approx(sum(x), rel=1e-15)


@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset")
def test_smoke_run_applies_every_binding():
    out = run_script(SCRIPT, profile="smoke", timeout=180)
    assert out["bench"] == "placement" and out["checked"] is True
    w, first = out["cores"], out["topology"]["allowed_cpus"][0]
    rows = {r["name"]: r for r in out["rows"]}
    for r in rows.values():
        assert r["checksum"] == pytest.approx(out["reference_checksum"], rel=1e-12)
        assert r["median_s"] > 0 and r["iqr_s"] >= 0
        assert len(r["placement"]) == r["ranks"]
        assert all(len(p["threads"]) == r["threads"] for p in r["placement"])

    def masks(name):
        return [t["affinity"] for p in rows[name]["placement"] for t in p["threads"]]

    assert masks(f"1 thread, taskset -c {first}") == [[first]]
    assert all(m == [first] for m in masks(f"{w} threads, taskset -c {first}"))
    squeezed = masks(f"1 rank x {w} threads, -bind-to core")  # one core for all threads
    assert len(squeezed[0]) == 1 and all(m == squeezed[0] for m in squeezed)
    if w >= 2:
        for name in (f"{w} threads, close", f"{w} ranks, -bind-to core",
                     f"1 rank x {w} threads, -bind-to core:{w}"):
            got = masks(name)
            assert all(len(m) == 1 for m in got) and len({m[0] for m in got}) == w, got
    over = sorted(r["ranks"] for r in rows.values() if "oversub" in r["parts"])
    assert over == pb.oversub_ranks(out["settings"]["oversub"], w)


def test_too_small_a_problem_is_refused():
    S = SimpleNamespace(n=1, sweeps=1, repeats=1, rounds=1, oversub=[4], parts=["oversub"])
    with pytest.raises(ValueError, match="--n"):
        pb.check(S)


def test_job_script_calls_the_benchmark():
    path = pb.repo_root() / "scripts" / "slurm" / "placement.sbatch"
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "#SBATCH --exclusive" in text
    command = [line for line in text.splitlines()
               if "scripts/bench/placement.py" in line and not line.startswith("#")]
    assert len(command) == 1 and "--json" in command[0]
    assert '"${PROFILE:-cpu}"' in command[0]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_without_mpi_the_pinning_part_still_runs(monkeypatch):
    """Where no MPI is installed, a gcc build of the same kernel runs one process only."""
    monkeypatch.setattr(pb, "has_mpi", lambda: False)
    S = pb.SIZES["smoke"]
    S = SimpleNamespace(**{**S, "parts": ["pinning", "hybrid"], "rounds": 1})
    out = pb.run(S)
    assert out["skipped"] == ["hybrid"] and out["mpiexec"] is None
    assert {r["ranks"] for r in out["rows"]} == {1} and out["checked"]
    assert all(r["checksum"] == pytest.approx(out["reference_checksum"], rel=1e-12)
               for r in out["rows"])
