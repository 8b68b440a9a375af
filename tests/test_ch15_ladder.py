"""Chapter 15: the optimisation ladder (llm_ladder.py) and DDP/FSDP2 scaling
(llm_scaling.py) at smoke: the JSON's shape, memory relations that MemTracker measures
exactly, the two-process losses against one process, refused values exit 2.

No timing relation is asserted: on two shared cores the rungs' differences at the
smoke size are of the order of the noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LADDER = ROOT / "scripts" / "bench" / "llm_ladder.py"
SCALING = ROOT / "scripts" / "bench" / "llm_scaling.py"
RUNGS = ["fp32_eager", "largest_batch", "bf16_autocast", "bf16_weights", "sdpa",
         "sdpa_largest_batch", "checkpointing", "compile", "fused_adamw"]


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _json(cmd: list[str]) -> dict:
    p = _run(cmd)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def ladder() -> dict:
    return _json([sys.executable, str(LADDER), "--profile", "smoke", "--json"])


@pytest.fixture(scope="module")
def scaling() -> dict:
    return _json([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc-per-node=2", str(SCALING), "--profile", "smoke", "--json"])


def test_ladder_rows(ladder):
    assert ladder["bench"] == "llm_ladder"
    rows = {r["rung"]: r for r in ladder["rows"]}
    assert [r["rung"] for r in ladder["rows"]] == RUNGS
    assert rows["compile"]["skipped"] and ladder["skip_reason"]  # smoke: not compiled
    for name, r in rows.items():
        if r.get("skipped"):
            continue
        assert r["tokens_per_s"] > 0 and r["peak_bytes"] > 0, name
        assert 0 < r["mfu"] <= 1, (name, r["mfu"])
        assert r["batch"] >= 1 and r["median_s"] > 0 and r["iqr_s"] >= 0, name
    assert ladder["flops_per_token"] > 0 and ladder["model"]["params"] > 0


def test_ladder_batches_and_memory(ladder):
    rows = {r["rung"]: r for r in ladder["rows"]}
    budget = ladder["budget_bytes"]
    for rung in ("largest_batch", "sdpa_largest_batch"):
        best = rows[rung]["batch"]
        assert rows[rung]["peak_bytes"] <= budget
        for t in rows[rung]["tried"]:
            assert t["fits"] == (t["peak_bytes"] <= budget)
            assert t["fits"] == (t["batch"] <= best)
    assert rows["largest_batch"]["batch"] >= rows["fp32_eager"]["batch"]
    # memory (MemTracker counts tensors exactly): bf16 weights hold less than fp32,
    # checkpointing keeps fewer activations than the same step without it
    assert rows["bf16_weights"]["peak_bytes"] < rows["largest_batch"]["peak_bytes"]
    assert (rows["checkpointing"]["peak_bytes"]
            < rows["sdpa_largest_batch"]["peak_bytes"])
    assert rows["fused_adamw"]["optimizer"].split()[0] in ("fused", "foreach")


def test_two_processes_match_one(scaling):
    assert scaling["world"] == 2 and len({p["node"] for p in scaling["placement"]}) == 1
    ref = scaling["reference_losses"]
    for run in scaling["runs"]:
        assert run["global_batch"] == 2 * run["batch_per_rank"]
        assert len(run["losses"]) == len(ref)
        assert run["max_loss_diff"] <= 1e-4, run
        assert run["tokens_per_s"] == pytest.approx(2 * run["tokens_per_s_per_process"])
        assert run["peak_bytes_per_process"] > 0
    assert [r["strategy"] for r in scaling["runs"]] == ["ddp", "fsdp"]


@pytest.mark.parametrize("script, args, says", [
    (LADDER, ["--compile", "2"], "--compile"),
    (LADDER, ["--fresh-cache", "3"], "--fresh-cache"),
    (LADDER, ["--hidden", "65"], "--heads"),
    (LADDER, ["--batch", "64"], "--max-batch"),
    (LADDER, ["--device", "tpu"], "--device"),
    (SCALING, ["--strategies", "ddp,zero9"], "--strategies"),
    (SCALING, ["--seq", "-4"], "--seq"),
])
def test_refused_values_exit_2(script, args, says):
    p = _run([sys.executable, str(script), "--profile", "smoke", *args], timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines
