"""Every form of parallel training of chapter 10, each checked against one process.

One short module per parallelism, in the spirit of picotron: the naive version written
by hand first, then the library's.

* :mod:`~hpcai.parallel.model`: the model (residual MLP blocks), its seeded synthetic
  data and :func:`~hpcai.parallel.model.reference_run`, the one-process run on the
  global batch;
* :mod:`~hpcai.parallel.data`: data parallel by hand and ``DistributedDataParallel``;
* :mod:`~hpcai.parallel.fsdp`: FSDP2 ``fully_shard``, ZeRO-3 and a ZeRO-2-like setting
  (Rajbhandari et al. 2020);
* :mod:`~hpcai.parallel.tensor`: Megatron-LM's column/row-parallel MLP by hand and with
  DTensor (Shoeybi et al. 2019; Korthikanti et al. 2022);
* :mod:`~hpcai.parallel.pipeline`: GPipe by hand, and ``torch.distributed.pipelining``'s
  GPipe and 1F1B schedules (Huang et al. 2019; Narayanan et al. 2019, 2021);
* :mod:`~hpcai.parallel.tracking`: bytes counted from the collectives actually issued,
  peak memory from ``MemTracker``, and the loop that turns a strategy into a row.

``STRATEGIES`` maps the name of each row of ``scripts/bench/parallelism.py`` to the
function that builds it: ``f(world, cfg, global_batch, microbatches)``; those of
``TRANSFORMER`` need a config of transformer blocks (``cfg.seq > 0``), the others train
the MLP blocks (every strategy but TP also trains transformer blocks unchanged).
"""

from __future__ import annotations

from collections.abc import Callable

from .. import dist as hd
from . import data, fsdp, pipeline, tensor
from .model import ModelConfig, RunResult, reference_run
from .tracking import CommCounter, Strategy, drive

__all__ = ["STRATEGIES", "TRANSFORMER", "CommCounter", "ModelConfig", "RunResult",
           "Strategy", "build", "drive", "reference_run"]

Builder = Callable[[hd.World, ModelConfig, int, int], Strategy]

STRATEGIES: dict[str, Builder] = {
    "dp_naive": lambda w, c, b, m: data.naive(w, c, b),
    "ddp": lambda w, c, b, m: data.ddp(w, c, b),
    "fsdp": lambda w, c, b, m: fsdp.fsdp(w, c, b, reshard_after_forward=True),
    "zero2": lambda w, c, b, m: fsdp.fsdp(w, c, b, reshard_after_forward=False),
    "tp_naive": lambda w, c, b, m: tensor.naive(w, c, b),
    "tp": lambda w, c, b, m: tensor.dtensor(w, c, b),
    "tp_attn": lambda w, c, b, m: tensor.dtensor_attention(w, c, b, False),
    "tp_sp": lambda w, c, b, m: tensor.dtensor_attention(w, c, b, True),
    "pp_naive": lambda w, c, b, m: pipeline.naive(w, c, b, m),
    "pp": lambda w, c, b, m: pipeline.library(w, c, b, m, "gpipe"),
    "pp_1f1b": lambda w, c, b, m: pipeline.library(w, c, b, m, "1f1b"),
}


TRANSFORMER = ("tp_attn", "tp_sp")
"""The strategies that train transformer blocks (a config with ``seq > 0``)."""


def build(name: str, world: hd.World, cfg: ModelConfig, global_batch: int,
          microbatches: int) -> Strategy:
    """The strategy ``name`` (a key of ``STRATEGIES``) on this rank."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; expected one of "
                         f"{sorted(STRATEGIES)}")
    return STRATEGIES[name](world, cfg, global_batch, microbatches)
