"""An offline LLM workflow end to end, as on a cluster without internet (chapter 14).

    python scripts/bench/llm_workflow.py --profile smoke --json
    torchrun --standalone --nproc-per-node 2 scripts/bench/llm_workflow.py \\
        --profile smoke --json
    BENCH=llm_workflow NPROC=1 sbatch -N 2 scripts/slurm/torchrun.sbatch

Nothing is downloaded: ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` are set at
the top of this file, before anything imports ``transformers``. The stages, in order:

1. **corpora** (:mod:`hpcai.llm_data`): the standard library's ``*.py`` files (sorted,
   ``pre_chars`` characters) to pretrain on, the book's ``book/*.md`` (``ft_chars``) to
   fine-tune on; the last ``held_out`` fraction of each is kept back.
2. **prepare** (rank 0): a byte-level BPE tokenizer of ``vocab`` tokens trained on the
   pretraining text; a ``LlamaForCausalLM`` built from a small ``LlamaConfig`` with
   seeded random weights; both saved with ``save_pretrained`` to ``prepared/``.
3. **transfer** (rank 0): ``prepared/`` copied to ``cluster/`` with a ``SHA256SUMS``
   manifest checked on arrival; the model loaded back from ``cluster/`` must give the
   same logits as the one in memory (``roundtrip_max_abs_diff``, 0.0) and the tokenizer
   the same ids.
4. **pretrain** (every rank): the model loaded from ``cluster/``, trained with the
   Hugging Face ``Trainer`` for ``pre_steps`` steps (DDP when started by torchrun, gloo
   on CPUs);
   perplexity on held-out standard-library text before and after (``ppl_before``,
   ``ppl_after``) and a generation from a prompt (``generated``: seeded sampling).
5. **fine-tune**: ``ft_steps`` more steps on the book's Markdown; perplexity on both
   held-out texts before and after, a generation from a Markdown prompt.
6. **deploy and inference** (rank 0): the fine-tuned model and tokenizer saved,
   transferred to ``deploy/`` (checksums again), loaded from there and asked
   ``n_prompts`` prompts;
   ``infer_tokens_per_s`` is the rate of generated tokens (KV cache, batch 1).

``tokens_per_s`` is the pretraining throughput of the whole job: tokens of all ranks per
second of wall time over the steps after the first ``warm_steps`` (the slowest rank's
clock). ``workdir`` is where the folders go (default: a fresh folder under
``_build/llm_workflow/``, on the file system every node of the local cluster shares); it
is removed at the end unless ``--keep true``. Only rank 0 prints.
"""

from __future__ import annotations

import os

# Offline before any import of transformers or huggingface_hub: nothing may reach a hub.
for _var in (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_DISABLE_TELEMETRY",
):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hpcai.cli import bench_main

# fmt: off
SIZES = {
    "smoke": {"pre_chars": 100_000, "ft_chars": 50_000, "held_out": 0.1, "vocab": 384,
              "hidden": 48, "layers": 2, "heads": 4, "intermediate": 128, "seq_len": 64,
              "batch": 16, "pre_steps": 40, "ft_steps": 10, "lr": 1e-2, "ft_lr": 3e-3,
              "warm_steps": 5, "eval_blocks": 16, "gen_tokens": 16, "n_prompts": 2,
              "temperature": 0.7, "seed": 0, "threads": 1, "device": "cpu",
              "backend": "gloo", "workdir": "", "keep": False, "hang_timeout_s": 300},
    "cpu": {"pre_chars": 600_000, "ft_chars": 200_000, "held_out": 0.1, "vocab": 512,
            "hidden": 64, "layers": 2, "heads": 4, "intermediate": 172, "seq_len": 128,
            "batch": 16, "pre_steps": 100, "ft_steps": 25, "lr": 3e-3, "ft_lr": 1e-3,
            "warm_steps": 10, "eval_blocks": 32, "gen_tokens": 40, "n_prompts": 3,
            "temperature": 0.7, "seed": 0, "threads": 1, "device": "cpu",
            "backend": "gloo", "workdir": "", "keep": False, "hang_timeout_s": 900},
    "gpu": {"pre_chars": 4_000_000, "ft_chars": 400_000, "held_out": 0.1, "vocab": 4096,
            "hidden": 256, "layers": 4, "heads": 8, "intermediate": 688, "seq_len": 256,
            "batch": 32, "pre_steps": 600, "ft_steps": 150, "lr": 1e-3, "ft_lr": 3e-4,
            "warm_steps": 20, "eval_blocks": 64, "gen_tokens": 64, "n_prompts": 4,
            "temperature": 0.7, "seed": 0, "threads": 0, "device": "cuda",
            "backend": "nccl", "workdir": "", "keep": False, "hang_timeout_s": 900},
}
# fmt: on
DEVICES = ("cpu", "cuda")
BACKENDS = ("gloo", "nccl")
PRE_PROMPT = "def "
FT_PROMPT = "The "
PROMPTS = ("import os\n", "def main(", "## ", "The cluster ", "class ", "A GPU ")


# ---------------------------------------------------------------------------- the model
def model_config(S: Any, tok: Any) -> Any:
    """The small LLaMA-style configuration of this run (no weights are read)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=int(S.hidden),
        intermediate_size=int(S.intermediate),
        num_hidden_layers=int(S.layers),
        num_attention_heads=int(S.heads),
        num_key_value_heads=int(S.heads),
        max_position_embeddings=int(S.seq_len),
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def build_model(S: Any, tok: Any) -> Any:
    """A ``LlamaForCausalLM`` with seeded random weights, from :func:`model_config`."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(int(S.seed))
    return LlamaForCausalLM(model_config(S, tok)).eval()


def save(folder: Path, model: Any, tok: Any) -> None:
    """``save_pretrained`` of the model (safetensors + config) and of the tokenizer."""
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "tokenizer")


def load(folder: Path, device: str = "cpu") -> tuple[Any, Any]:
    """Model and tokenizer from a local folder, never a hub (``local_files_only``)."""
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(
        folder / "tokenizer", local_files_only=True
    )
    model = LlamaForCausalLM.from_pretrained(folder / "model", local_files_only=True)
    return model.to(device).eval(), tok


def probe_ids(tok: Any, text: str, n: int = 32) -> Any:
    """A fixed batch of ids (the first ``n`` tokens of ``text``) to compare logits."""
    import torch

    return torch.tensor([tok(text)["input_ids"][:n]])


def roundtrip_diff(model: Any, loaded: Any, ids: Any) -> float:
    """Largest absolute difference of the logits of two models on the same ids."""
    import torch

    with torch.no_grad():
        a = model(ids.to(model.device)).logits.cpu()
        b = loaded(ids.to(loaded.device)).logits.cpu()
    return float((a - b).abs().max())


# ----------------------------------------------------------------------------- the data
def blocks(tok: Any, text: str, seq_len: int) -> Any:
    """The text as one token stream cut into ``[n, seq_len]`` blocks (tail dropped)."""
    import torch

    ids = torch.tensor(tok(text)["input_ids"], dtype=torch.long)
    n = len(ids) // seq_len
    return ids[: n * seq_len].view(n, seq_len)


class Blocks:
    """A map-style data set of causal-LM samples: ``input_ids`` and ``labels`` alike."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.data[i], "labels": self.data[i]}


def perplexity(model: Any, data: Any, n_blocks: int, batch: int = 8) -> float:
    """``exp`` of the mean next-token loss over the first ``n_blocks`` of ``data``."""
    import torch

    model.eval()
    data = data[:n_blocks]
    losses = []
    with torch.no_grad():
        for i in range(0, len(data), batch):
            x = data[i : i + batch].to(model.device)
            losses.append(float(model(input_ids=x, labels=x).loss) * len(x))
    return math.exp(sum(losses) / len(data))


def generate(
    model: Any, tok: Any, prompt: str, n: int, seed: int = 0, temperature: float = 0.7
) -> tuple[str, int, float]:
    """``n`` sampled tokens after ``prompt``: (text, new tokens, seconds).

    Sampling draws from the 40 most likely tokens at ``temperature``, from PyTorch's
    generator seeded with ``seed`` first, so the same weights give the same text (greedy
    decoding of a model this small tends to repeat one token for ever).
    """
    import torch

    enc = tok(prompt, return_tensors="pt").to(model.device)
    model.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model.generate(
            **enc,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=True,
            top_k=40,
            temperature=temperature,
            pad_token_id=tok.pad_token_id,
        )
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    new = out[0, enc["input_ids"].shape[1] :]
    return prompt + tok.decode(new, skip_special_tokens=True), int(len(new)), dt


# -------------------------------------------------------------------------- training
class StepClock:
    """A ``TrainerCallback`` that reads the clock at the end of every optimiser step."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.start = 0.0

    def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
        self.start = time.perf_counter()

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.ends.append(time.perf_counter())

    def __getattr__(self, name: str) -> Any:  # every other callback event: do nothing
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def train(
    S: Any, model: Any, data: Any, steps: int, lr: float, out_dir: Path, world_size: int
) -> dict[str, Any]:
    """``steps`` optimiser steps of the Hugging Face ``Trainer`` on the blocks ``data``.

    Under torchrun the Trainer wraps the model in DDP itself (``ddp_backend``); each
    rank takes ``batch`` blocks a step. Returns the loss, the step clock's throughput
    (all ranks' tokens per second after ``warm_steps``) and the Trainer's own metrics.
    """
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from hpcai import dist as hd

    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=int(S.batch),
        max_steps=steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 10),
        weight_decay=0.0,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=int(S.seed),
        data_seed=int(S.seed),
        use_cpu=str(S.device) == "cpu",
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        ddp_backend=str(S.backend) if world_size > 1 else None,
        optim="adamw_torch",
    )
    clock = StepClock()
    trainer = Trainer(
        model=model, args=args, train_dataset=Blocks(data), callbacks=[clock]
    )
    trainer.remove_callback(PrinterCallback)  # the metrics go into the JSON, not stdout
    out = trainer.train()
    warm = min(int(S.warm_steps), steps - 1)
    span = clock.ends[-1] - (clock.ends[warm - 1] if warm > 0 else clock.start)
    span = hd.slowest(span) if world_size > 1 else span
    tokens = (steps - warm) * int(S.batch) * int(S.seq_len) * world_size
    return {
        "steps": steps,
        "train_loss": float(out.training_loss),
        "train_runtime_s": float(out.metrics["train_runtime"]),
        "timed_steps": steps - warm,
        "timed_s": span,
        "tokens_per_s": tokens / span,
        "global_batch": int(S.batch) * world_size,
    }


def ranks_agree(model: Any, world_size: int) -> bool:
    """True when every rank holds the same weights (DDP kept the replicas in step)."""
    import torch

    from hpcai import dist as hd

    if world_size == 1:
        return True
    with torch.no_grad():
        flat = torch.cat(
            [p.detach().float().flatten().cpu() for p in model.parameters()]
        )
    mine = [float(flat.sum()), float(flat.abs().sum()), float((flat * flat).sum())]
    return hd.reduce_floats(mine, "max") == hd.reduce_floats(mine, "min")


# ------------------------------------------------------------------------------ the run
def shared_workdir(S: Any, world_size: int) -> tuple[Path, bool]:
    """The folder every rank works in (rank 0 makes it, the others learn its name)."""
    import torch.distributed as dist

    from hpcai.paths import repo_root

    made = not str(S.workdir)
    if made:
        path = ""
        if int(os.environ.get("RANK", "0")) == 0:
            base = repo_root() / "_build" / "llm_workflow"
            base.mkdir(parents=True, exist_ok=True)
            path = tempfile.mkdtemp(prefix="run-", dir=base)
        if world_size > 1:
            box = [path]
            dist.broadcast_object_list(box, src=0)
            path = box[0]
        return Path(path), True
    return Path(str(S.workdir)), False


def prepare(S: Any, work: Path, pre_train: str) -> dict[str, Any]:
    """Rank 0: tokenizer, model, saved to ``prepared/``, sent to ``cluster/``."""
    from hpcai import llm_data as ld

    t0 = time.perf_counter()
    tok = ld.train_bpe(pre_train, int(S.vocab))
    t_tok = time.perf_counter() - t0
    model = build_model(S, tok)
    save(work / "prepared", model, tok)
    moved = ld.transfer(work / "prepared", work / "cluster")
    loaded, tok2 = load(work / "cluster")
    ids = probe_ids(tok, pre_train)
    same_ids = tok2(pre_train[:2000])["input_ids"] == tok(pre_train[:2000])["input_ids"]
    return {
        "vocab": len(tok),
        "params": sum(p.numel() for p in model.parameters()),
        "tokenizer_s": t_tok,
        "transfer_files": moved["files"],
        "transfer_bytes": moved["bytes"],
        "roundtrip_max_abs_diff": roundtrip_diff(model, loaded, ids),
        "roundtrip_same_ids": bool(same_ids),
    }


def run(S: Any) -> dict[str, Any] | None:
    """The workflow on this rank (a watchdog ends it after ``hang_timeout_s``)."""
    from hpcai import dist as hd

    hd.start_watchdog(float(S.hang_timeout_s))
    try:
        return workflow(S)
    finally:
        hd.stop_watchdog()


def workflow(S: Any) -> dict[str, Any] | None:
    """Every stage in order; rank 0 returns the result, other ranks ``None``."""
    t_import = time.perf_counter()
    import torch
    import torch.distributed as dist
    import transformers  # noqa: F401  (timed: the import is a cost of every job)
    from transformers import LlamaForCausalLM, Trainer  # noqa: F401
    from transformers.utils import logging as hf_logging

    from hpcai import dist as hd
    from hpcai import llm_data as ld

    import_s = time.perf_counter() - t_import

    hf_logging.disable_progress_bar()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if str(S.device) == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: PyTorch sees no CUDA device here", file=sys.stderr)
        raise SystemExit(2)
    if world_size > 1:
        world = hd.init(str(S.backend))
        rank = world.rank
    else:
        rank = 0
    if int(S.threads):
        torch.set_num_threads(int(S.threads))
    torch.manual_seed(int(S.seed))
    t_start = time.perf_counter()
    pre = ld.stdlib_corpus(int(S.pre_chars))
    ft = ld.book_corpus(int(S.ft_chars))
    pre_train, pre_held = ld.split_held_out(pre.text, float(S.held_out))
    ft_train, ft_held = ld.split_held_out(ft.text, float(S.held_out))
    work, made = shared_workdir(S, world_size)
    res: dict[str, Any] = {
        "corpora": {"pretrain": pre.describe(), "finetune": ft.describe()},
        "workdir": str(work),
        "world": world_size,
        "import_s": import_s,
    }
    if rank == 0:
        res.update(prepare(S, work, pre_train))
    if world_size > 1:
        dist.barrier()  # the others wait until the folder has arrived on "the cluster"
    model, tok = load(work / "cluster", str(S.device) if world_size == 1 else "cpu")
    L = int(S.seq_len)
    data = {
        "pre_train": blocks(tok, pre_train, L),
        "pre_held": blocks(tok, pre_held, L),
        "ft_train": blocks(tok, ft_train, L),
        "ft_held": blocks(tok, ft_held, L),
    }
    res["chars_per_token"] = {
        "pretrain": len(pre_held) / max(1, data["pre_held"].numel()),
        "finetune": len(ft_held) / max(1, data["ft_held"].numel()),
    }
    res["blocks"] = {k: int(len(v)) for k, v in data.items()}
    n_eval = int(S.eval_blocks)

    def ppl(name: str) -> float:
        return perplexity(model, data[name], n_eval)

    res["ppl_before"] = ppl("pre_held")
    res["ft_ppl_before_pretrain"] = ppl("ft_held")
    pre_run = train(
        S,
        model,
        data["pre_train"],
        int(S.pre_steps),
        float(S.lr),
        work / "trainer",
        world_size,
    )
    res["pretrain"] = pre_run
    res["tokens_per_s"] = pre_run["tokens_per_s"]
    res["ppl_after"] = ppl("pre_held")
    n_gen = int(S.gen_tokens)
    gen = (int(S.seed), float(S.temperature))
    res["generated"] = generate(model, tok, PRE_PROMPT, n_gen, *gen)[0]
    res["ft_generated_before"] = generate(model, tok, FT_PROMPT, n_gen, *gen)[0]
    # fine-tuning: the pretrained model goes on, on the second corpus
    res["ppl_table"] = {
        "after_pretrain": {"pretrain": res["ppl_after"], "finetune": ppl("ft_held")}
    }
    ft_run = train(
        S,
        model,
        data["ft_train"],
        int(S.ft_steps),
        float(S.ft_lr),
        work / "trainer",
        world_size,
    )
    res["finetune"] = ft_run
    res["ppl_table"]["after_finetune"] = {
        "pretrain": ppl("pre_held"),
        "finetune": ppl("ft_held"),
    }
    res["ft_generated_after"] = generate(model, tok, FT_PROMPT, n_gen, *gen)[0]
    res["ranks_agree"] = ranks_agree(model, world_size)
    res["generated_after_finetune"] = generate(model, tok, PRE_PROMPT, n_gen, *gen)[0]
    if rank == 0:
        res.update(deploy_and_infer(S, work, model, tok))
    where = hd.placement() if world_size > 1 else [{"rank": 0, "node": hd.node_name()}]
    res["workflow_s"] = time.perf_counter() - t_start
    if world_size > 1:
        hd.teardown()
    if made and rank == 0 and not bool(S.keep):
        shutil.rmtree(work, ignore_errors=True)
    if rank != 0:
        return None
    res.update(
        placement=where,
        device=str(model.device) if world_size == 1 else str(S.device),
        backend=str(S.backend) if world_size > 1 else None,
        ranks=world_size,
    )
    return res


def deploy_and_infer(S: Any, work: Path, model: Any, tok: Any) -> dict[str, Any]:
    """Save the fine-tuned model, move it to ``deploy/``, load it, answer prompts."""
    from hpcai import llm_data as ld

    save(work / "finetuned", model, tok)
    moved = ld.transfer(work / "finetuned", work / "deploy")
    served, stok = load(work / "deploy", str(S.device))
    answers, new, secs = [], 0, 0.0
    for prompt in PROMPTS[: int(S.n_prompts)]:
        text, k, dt = generate(
            served, stok, prompt, int(S.gen_tokens), int(S.seed), float(S.temperature)
        )
        answers.append({"prompt": prompt, "answer": text, "new_tokens": k, "s": dt})
        new, secs = new + k, secs + dt
    return {
        "deploy_files": moved["files"],
        "deploy_bytes": moved["bytes"],
        "answers": answers,
        "infer_tokens": new,
        "infer_s": secs,
        "infer_tokens_per_s": new / secs,
    }


def check(S: Any) -> None:
    """Rules of this benchmark beyond positive numbers."""
    if int(S.hidden) % int(S.heads) or (int(S.hidden) // int(S.heads)) % 2:
        raise ValueError(
            f"--hidden {S.hidden} must split into --heads {S.heads} heads "
            "of an even size (rotary embeddings pair the dimensions)"
        )
    if int(S.vocab) < 259:
        raise ValueError(
            f"--vocab {S.vocab} must be at least 259 (256 bytes and 3 special tokens)"
        )
    if not 0 < float(S.held_out) < 0.5:
        raise ValueError(f"--held-out {S.held_out} must lie between 0 and 0.5")
    if int(S.warm_steps) >= int(S.pre_steps):
        raise ValueError(
            f"--warm-steps {S.warm_steps} must be fewer than --pre-steps {S.pre_steps}"
        )


if __name__ == "__main__":
    bench_main(
        run,
        SIZES,
        description=__doc__,
        check=check,
        choices={"device": DEVICES, "backend": BACKENDS},
    )
