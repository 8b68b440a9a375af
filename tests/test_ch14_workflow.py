"""Chapter 14: the offline LLM workflow (scripts/bench/llm_workflow.py), hpcai.llm_data.

The script runs once at smoke (module fixture) and once more inside a network namespace
with no network at all (``unshare -n``), where it must succeed just the same; both runs
must halve the held-out perplexity. The save -> transfer -> load round trip is checked
in this process: same token ids, bit-identical logits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcai import llm_data as ld
from hpcai.launch import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench" / "llm_workflow.py"
NO_NET_PROBE = (
    "import socket\n"
    "try:\n"
    "    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
    "except OSError:\n"
    "    pass\n"
    "else:\n"
    "    raise SystemExit('the namespace reached the network')\n"
)


def _run(cmd: list[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _json(p: subprocess.CompletedProcess[str]) -> dict:
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _check_workflow(res: dict) -> None:
    assert res["ppl_after"] < res["ppl_before"] / 2, (
        res["ppl_before"],
        res["ppl_after"],
    )
    assert isinstance(res["generated"], str) and res["generated"].startswith("def ")
    assert res["tokens_per_s"] > 0 and res["infer_tokens_per_s"] > 0
    assert res["roundtrip_max_abs_diff"] == 0.0 and res["roundtrip_same_ids"]


@pytest.fixture(scope="module")
def smoke() -> dict:
    return _json(_run([sys.executable, str(SCRIPT), "--profile", "smoke", "--json"]))


def test_smoke_workflow(smoke):
    _check_workflow(smoke)
    table = smoke["ppl_table"]
    # fine-tuning on the book's Markdown lowers the perplexity of held-out Markdown
    assert table["after_finetune"]["finetune"] < table["after_pretrain"]["finetune"]
    assert smoke["transfer_files"] == smoke["deploy_files"] >= 5
    assert smoke["corpora"]["pretrain"]["chars"] == smoke["settings"]["pre_chars"]
    assert len(smoke["answers"]) == smoke["settings"]["n_prompts"]
    assert smoke["world"] == 1 and smoke["ranks_agree"] is True
    assert not Path(smoke["workdir"]).exists()  # the run's folders were removed


def _unshare_missing() -> str | None:
    """Why ``unshare -n`` cannot make a namespace without network here, or None."""
    if shutil.which("unshare") is None:
        return "no `unshare` on the PATH (util-linux); the offline run needs it"
    p = _run(["unshare", "-n", "true"], timeout=30)
    if p.returncode != 0:
        return (
            "`unshare -n true` failed (a new network namespace needs root or "
            f"unprivileged user namespaces): {p.stderr.strip()}"
        )
    return None


def test_workflow_runs_without_any_network():
    why = _unshare_missing()
    if why:
        pytest.skip(why)
    probe = _run(["unshare", "-n", sys.executable, "-c", NO_NET_PROBE], timeout=30)
    assert probe.returncode == 0, probe.stderr  # there is no network in there
    res = _json(
        _run(
            [
                "unshare",
                "-n",
                sys.executable,
                str(SCRIPT),
                "--profile",
                "smoke",
                "--json",
            ]
        )
    )
    _check_workflow(res)


def test_save_transfer_load_round_trip(tmp_path):
    import torch

    from hpcai import resolve

    wf = load_script("llm_workflow")
    S = resolve("smoke", wf.SIZES, vocab=300, hidden=32, layers=1)
    text = ld.stdlib_corpus(20_000).text
    tok = ld.train_bpe(text, int(S.vocab))
    model = wf.build_model(S, tok)
    wf.save(tmp_path / "here", model, tok)
    moved = ld.transfer(tmp_path / "here", tmp_path / "there")
    assert moved["files"] >= 5
    assert ld.checksums(tmp_path / "here") == ld.checksums(tmp_path / "there")
    loaded, tok2 = wf.load(tmp_path / "there")
    assert tok2(text[:3000])["input_ids"] == tok(text[:3000])["input_ids"]
    ids = wf.probe_ids(tok, text, 48)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    # a changed byte on arrival is caught by the manifest
    weights = next((tmp_path / "there" / "model").glob("*.safetensors"))
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    assert ld.checksums(tmp_path / "here") != ld.checksums(tmp_path / "there")


def test_corpora_are_deterministic_and_split_at_a_line():
    a, b = ld.stdlib_corpus(30_000), ld.stdlib_corpus(30_000)
    assert a.sha256 == b.sha256 and len(a.text) == 30_000
    assert list(a.files) == sorted(a.files)
    assert (
        ld.stdlib_corpus(30_000, skip_files=3).files[0]
        == sorted(p.name for p in ld.stdlib_root().glob("*.py"))[3]
    )
    train, held = ld.split_held_out(a.text, 0.1)
    assert train + held == a.text and train.endswith("\n")
    assert 0.05 < len(held) / len(a.text) < 0.15
    book = ld.book_corpus(10_000)
    assert book.files[0].startswith("book/") and len(book.text) == 10_000


@pytest.mark.parametrize(
    "args,knob",
    [
        (["--vocab", "100"], "--vocab"),
        (["--device", "tpu"], "--device"),
        (["--hidden", "50"], "--hidden"),
        (["--held-out", "0.7"], "--held-out"),
    ],
)
def test_bad_input_is_refused_before_any_work(args, knob):
    p = _run([sys.executable, str(SCRIPT), "--profile", "smoke", *args], timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and knob in lines[0], lines
