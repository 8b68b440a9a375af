"""Every parallelism of chapter 10, trained a few steps and checked against one process.

Run under torchrun, one process per rank (gloo on CPU, NCCL on GPUs):

    torchrun --standalone --nproc-per-node 2 scripts/bench/parallelism.py \\
        --profile cpu --json
    ... --strategies ddp,fsdp       # some of them only

(As a plain ``python`` program it runs in a world of one: every strategy then
degenerates to the one-process run, which checks the plumbing and nothing else.)

Each strategy of :mod:`hpcai.parallel` (``dp_naive``, ``ddp``, ``fsdp`` = ZeRO-3,
``zero2``, ``tp_naive``, ``tp`` = DTensor, ``pp_naive``, ``pp`` = pipelining's GPipe,
``pp_1f1b``) trains the same seeded MLP blocks on the same synthetic batches for
``k_steps`` steps; ``tp_attn`` (attention heads split) and ``tp_sp`` (with sequence
parallelism) train transformer blocks (``attn_blocks`` of them, ``attn_batch`` sequences
of ``seq`` positions), checked against their own one-process run. One row per strategy
holds:

* ``max_loss_diff`` and ``max_param_diff``: the largest differences from the one-process
  run on the global batch (per-step losses; parameters after the last step);
* ``peak_bytes_per_rank``: MemTracker's peak over the first step, the largest over
  ranks;
* ``comm_bytes_per_step`` (buffer bytes, nccl-tests' convention) and
  ``wire_bytes_per_step`` (bytes a rank sends by ring), counted from the collectives the
  last step issued, the largest over ranks; ``predicted_comm_bytes`` is the formula's
  buffer bytes (see :mod:`hpcai.parallel.tracking`);
* ``step_median_s``: the median over the steps between, slowest rank.

``bubble`` holds the hand-written GPipe's measured idle fraction for each number of
microbatches of ``bubble_microbatches`` (a batch of ``bubble_batch`` rows, larger than
the check's so that a microbatch is not all overhead), next to ``(p - 1) / (m + p -
1)``.

A watchdog (``faulthandler``, through :func:`hpcai.dist.run_ranks`) ends the program
with every thread's traceback if the run takes longer than ``hang_timeout_s``: pipelining
over gloo has hung before (pytorch#132644), and a hung collective never returns by
itself. Only rank 0 prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hpcai import dist as hd
from hpcai.cli import bench_main

if TYPE_CHECKING:  # torch is imported inside the functions: a refused value is fast
    from hpcai.parallel.model import ModelConfig

STRATEGY_NAMES = ("dp_naive", "ddp", "fsdp", "zero2", "tp_naive", "tp", "tp_attn",
                  "tp_sp", "pp_naive", "pp", "pp_1f1b")
"""The keys of :data:`hpcai.parallel.STRATEGIES`, without importing torch
(tests/test_ch12_frame.py checks that the two agree)."""

SIZES = {
    "smoke": {"strategies": "all", "dim": 64, "hidden": 256, "n_blocks": 4,
              "global_batch": 32, "microbatches": 4, "k_steps": 5,
              "bubble_microbatches": [1, 4], "bubble_steps": 2, "bubble_batch": 32,
              "seq": 8, "heads": 4, "attn_blocks": 2, "attn_batch": 8,
              "hang_timeout_s": 120, "backend": "gloo"},
    "cpu": {"strategies": "all", "dim": 256, "hidden": 1024, "n_blocks": 8,
            "global_batch": 64, "microbatches": 8, "k_steps": 8,
            "bubble_microbatches": [1, 2, 4, 8, 16], "bubble_steps": 5,
            "bubble_batch": 512, "seq": 32, "heads": 8, "attn_blocks": 4,
            "attn_batch": 16, "hang_timeout_s": 300, "backend": "gloo"},
    "gpu": {"strategies": "all", "dim": 1024, "hidden": 4096, "n_blocks": 8,
            "global_batch": 256, "microbatches": 8, "k_steps": 10,
            "bubble_microbatches": [1, 2, 4, 8, 16], "bubble_steps": 5,
            "bubble_batch": 4096, "seq": 256, "heads": 16, "attn_blocks": 4,
            "attn_batch": 16, "hang_timeout_s": 300, "backend": "auto"},
}


def parse_strategies(text: str) -> list[str]:
    """``all`` or a comma-separated list of strategy names; ``ValueError`` otherwise."""
    if text == "all":
        return list(STRATEGY_NAMES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in STRATEGY_NAMES]
    if not names or unknown:
        raise ValueError("--strategies must be all or a comma-separated list drawn "
                         f"from {', '.join(STRATEGY_NAMES)}; got {text!r}")
    return names


def configs(S: Any) -> tuple[ModelConfig, ModelConfig]:
    """The MLP blocks of most strategies and the transformer blocks of ``tp_attn`` and
    ``tp_sp`` (same width; ``seq`` positions, ``heads`` heads)."""
    from hpcai.parallel.model import ModelConfig

    cfg = ModelConfig(dim=int(S.dim), hidden=int(S.hidden), n_blocks=int(S.n_blocks))
    attn = ModelConfig(dim=int(S.dim), hidden=int(S.hidden),
                       n_blocks=int(S.attn_blocks), seq=int(S.seq), heads=int(S.heads))
    return cfg, attn


def check_settings(S: Any) -> None:
    """Shapes that cannot split, refused before any work (for 2 ranks at least)."""
    parse_strategies(str(S.strategies))
    configs(S)  # dim must split into heads
    if int(S.k_steps) < 3:
        raise ValueError(f"--k-steps must be at least 3, got {S.k_steps}")
    if int(S.global_batch) % int(S.microbatches):
        raise ValueError(f"--global-batch {S.global_batch} does not split into "
                         f"{S.microbatches} microbatches (--microbatches)")
    for m in map(int, S.bubble_microbatches):
        if int(S.bubble_batch) % m:
            raise ValueError(f"--bubble-batch {S.bubble_batch} does not split into {m} "
                             f"microbatches (--bubble-microbatches)")


def check_world(S: Any) -> Callable[[hd.World], None]:
    """What must split over the ranks: batch (DP), hidden (TP), blocks (PP)."""
    def check(world: hd.World) -> None:
        n = world.size
        for what, value in (("--global-batch", S.global_batch), ("--hidden", S.hidden),
                            ("--n-blocks", S.n_blocks), ("--seq", S.seq),
                            ("--heads", S.heads)):
            if int(value) % n:
                raise ValueError(f"{what} {value} is not divisible by the {n} ranks")
    return check


def run(S: Any) -> dict[str, Any] | None:
    names = parse_strategies(str(S.strategies))
    return hd.run_ranks(lambda world: measure(S, world, names), backend=str(S.backend),
                        hang_timeout_s=float(S.hang_timeout_s),
                        check_world=check_world(S))


def measure(S: Any, world: hd.World, names: list[str]) -> dict[str, Any]:
    """Every rank: each strategy against its reference, then the bubble study."""
    import torch

    from hpcai.parallel import TRANSFORMER, build, drive, reference_run
    from hpcai.parallel.model import build_model, param_bytes
    from hpcai.parallel.pipeline import bubble_study

    cfg, attn = configs(S)
    B, k, m = int(S.global_batch), int(S.k_steps), int(S.microbatches)
    ref = reference_run(k, B, cfg, world.device)
    ref_attn = None
    rows = []
    for name in names:
        if name in TRANSFORMER:
            ref_attn = ref_attn or reference_run(k, int(S.attn_batch), attn,
                                                 world.device)
            row = drive(build(name, world, attn, int(S.attn_batch), m), world, k,
                        ref_attn)
        else:
            row = drive(build(name, world, cfg, B, m), world, k, ref)
        row.pop("busy_s", None)
        row["model"] = "transformer" if name in TRANSFORMER else "mlp"
        rows.append(row)
    bubble = bubble_study(world, cfg, int(S.bubble_batch),
                          [int(x) for x in S.bubble_microbatches], int(S.bubble_steps))
    full = build_model(cfg)
    n_params = sum(p.numel() for p in full.parameters())
    return {"rows": rows, "strategies": names, "bubble": bubble,
            "reference_losses": ref.losses, "params": n_params,
            "param_bytes": param_bytes(full), "dtype": str(torch.float32),
            "attn_param_bytes": param_bytes(build_model(attn)),
            "max_loss_diff": max(r["max_loss_diff"] for r in rows),
            "max_param_diff": max(r["max_param_diff"] for r in rows)}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check_settings,
               choices={"backend": hd.BACKENDS})
