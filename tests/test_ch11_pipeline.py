"""Chapter 11: the encoded-image data set, the pipeline model, the batch search, and the
scripts train_images.py and compile.py (JSON shape at smoke, refused values exit 2).

No timing relation is asserted: on two shared cores the differences between worker
counts are of the order of the noise."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcai import pipeline as pl

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "bench" / "train_images.py"
COMPILE = ROOT / "scripts" / "bench" / "compile.py"


def _run(cmd: list[str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _json(cmd: list[str]) -> dict:
    p = _run(cmd)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_png_is_lossless_and_seeded():
    a = pl.EncodedImages(12, 16, seed=3)
    b = pl.EncodedImages(12, 16, seed=3)
    raw, labels = pl.make_images(12, 16, seed=3)
    assert a.encoded == b.encoded
    assert all(np.array_equal(pl.decode_png(e), im) for e, im in zip(a.encoded, raw))
    assert np.array_equal(a.labels, labels)


def test_sample_is_the_same_in_any_worker_and_changes_with_the_epoch():
    import torch

    data = pl.EncodedImages(16, 16, seed=0)
    data.set_epoch(2)
    main = torch.stack([data[i][0] for i in range(16)])
    loader = torch.utils.data.DataLoader(data, batch_size=4, num_workers=2)
    assert torch.equal(main, torch.cat([x for x, _ in loader]))
    assert main.shape == (16, 3, 16, 16) and main.dtype == torch.float32
    data.set_epoch(3)
    assert not torch.equal(main, torch.stack([data[i][0] for i in range(16)]))
    plain = pl.EncodedImages(4, 16, seed=0, augment=False)
    x, _ = plain[1]
    raw, _ = pl.make_images(4, 16, seed=0)
    back = (x * pl.STD + pl.MEAN) * 255
    assert torch.allclose(back.permute(1, 2, 0), torch.from_numpy(raw[1]).float(),
                          atol=1e-3)


def test_predict_throughput():
    assert pl.predict_throughput(100, 100, 0) == pytest.approx(50)
    assert pl.predict_throughput(100, 1000, 3) == 300
    assert pl.predict_throughput(100, 1000, 8, cores=2) == 200
    assert pl.predict_throughput(1000, 100, 4) == 100
    with pytest.raises(ValueError):
        pl.predict_throughput(0, 1, 1)


@pytest.mark.parametrize("limit_true, limit, expect", [(37, 4096, 37), (1, 64, 1),
                                                        (0, 64, 0), (500, 100, 100)])
def test_largest_batch(limit_true, limit, expect):
    best, tried = pl.largest_batch(lambda b: b <= limit_true, 1, limit)
    assert best == expect
    assert len(tried) <= 2 * max(1, limit).bit_length() + 1
    assert all(ok == (b <= limit_true) for b, ok in tried)


def test_budget_fits_collects_peaks():
    peaks: dict[int, int] = {}
    fits = pl.budget_fits(lambda b: 1000 + 100 * b, 2000, peaks)
    best, _ = pl.largest_batch(fits)
    assert best == 10 and peaks[10] == 2000


def test_train_images_sweep_json():
    out = _json([sys.executable, str(TRAIN), "--profile", "smoke", "--json",
                 "--workers", "0,1", "--n-images", "64"])
    assert out["bench"] == "train_images" and out["mode"] == "sweep"
    assert [r["workers"] for r in out["rows"]] == [0, 1]
    for r in out["rows"]:
        assert len(r["epoch_samples_per_s"]) == out["settings"]["epochs"]
        assert r["samples_per_s"] > 0 and r["predicted"] > 0
    losses = [r["final_loss"] for r in out["rows"]]
    assert max(losses) - min(losses) < 1e-5  # same samples, same order, any worker count
    assert out["loader_rate"] > 0 and out["model_rate"] > 0
    assert out["peak_bytes"] > 0 and out["rss_max_bytes"] > out["peak_bytes"]


def test_train_images_maxbatch_json():
    out = _json([sys.executable, str(TRAIN), "--profile", "smoke", "--json", "--mode",
                 "maxbatch", "--model", "heavy", "--budget-mib", "2"])
    best = out["max_batch"]
    assert best >= 1 and out["budget_bytes"] == 2 << 20
    for t in out["tried"]:
        assert t["fits"] == (t["peak_bytes"] <= out["budget_bytes"])
        assert t["fits"] == (t["batch"] <= best)


def test_compile_smoke_json():
    out = _json([sys.executable, str(COMPILE), "--profile", "smoke", "--json"])
    assert out["compiled"] is False and out["skip_reason"]
    assert [r["model"] for r in out["rows"]] == ["pointwise", "gemm"]
    assert all(r["eager_step_s"] > 0 for r in out["rows"])


@pytest.mark.parametrize("script, args, says", [
    (TRAIN, ["--workers", "0,-1"], "--workers"),
    (TRAIN, ["--epochs", "1"], "--epochs"),
    (TRAIN, ["--batch", "1000"], "--batch"),
    (TRAIN, ["--mode", "fast"], "--mode"),
    (TRAIN, ["--model", "huge"], "--model"),
    (TRAIN, ["--device", "cuda"], "CUDA"),
    (COMPILE, ["--compile", "2"], "--compile"),
    (COMPILE, ["--models", "pointwise,tiny"], "--models"),
])
def test_refused_values_exit_2(script, args, says):
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    p = _run([sys.executable, str(script), "--profile", "smoke", *args], timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], lines


@pytest.mark.skipif(shutil.which("sbatch") is None,
                    reason="no SLURM cluster: sbatch is not on the PATH "
                    "(as root: scripts/setup_machine.sh)")
def test_bench_sbatch_runs_train_images():
    from hpcai.launch import sbatch

    job = sbatch("scripts/slurm/bench.sbatch",
                 args=["--workers", "0,1", "--n-images", "64"],
                 env={"BENCH": "train_images", "PROFILE": "smoke"}, timeout=300)
    assert job["state"] == "COMPLETED"
    assert job["bench"] == "train_images" and [r["workers"] for r in job["rows"]] == [0, 1]
    with open(job["output_file"]) as f:
        assert "train_images.py" in f.readline()
