"""What a parallel training step costs: bytes communicated, peak memory, time; the loop.

Bytes are counted from the collectives a step *actually issues*. :class:`CommCounter` is
a ``TorchDispatchMode``: every ``torch.distributed`` call (``dist.all_reduce``, DDP's
bucketed all-reduce from C++, FSDP2's all-gather and reduce-scatter, DTensor's
functional collectives, ``send``/``recv``) passes through the dispatcher as an operator
of the ``c10d`` or ``_c10d_functional`` namespace, and the mode records its kind and the
size of its buffer.

Two counts per step, per rank:

* **buffer bytes** (``comm_bytes_per_step``), as nccl-tests counts a message: the tensor
  of an all-reduce or a broadcast, the *full* (gathered) output of an all-gather, the
  full input of a reduce-scatter, the tensor of a ``send`` (a ``recv`` is the sender's
  message and is not counted again). Data parallelism all-reduces every gradient once
  per step, so its buffer bytes are exactly the parameter bytes ``P``.
* **wire bytes** (``wire_bytes_per_step``): what one rank sends with a ring algorithm,
  buffer bytes times the nccl-tests bus-bandwidth factor
  (:func:`hpcai.dist.busbw_factor`): ``2 (n-1)/n`` for an all-reduce, ``(n-1)/n`` for an
  all-gather or a reduce-scatter, 1 for a send, and 0 in a world of one. This is the
  unit of the ZeRO paper (Rajbhandari et al. 2020): data parallelism moves ``2 P
  (n-1)/n`` per rank and step, ZeRO-3 ``3 P (n-1)/n`` (parameters all-gathered for the
  forward and again for the backward, gradients reduce-scattered).

Peak memory is measured with ``torch.distributed._tools.mem_tracker.MemTracker`` (also a
dispatch mode, on CPU as on GPU) over the first step, the step that also allocates the
optimiser state: parameters, gradients, optimiser state, activations and temporaries of
the tensors this rank holds. Tensors allocated before the step and not handed to
``track_external`` are not seen (hence DDP runs with ``gradient_as_bucket_view=True``,
which makes its buckets the gradients).

:func:`drive` runs a :class:`Strategy` for ``k`` steps: step 0 under the memory tracker,
the last step under the counter, the steps between timed (slowest rank), and returns one
row of the chapter's table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .. import dist as hd
from ..measure import Timing

__all__ = ["CommCounter", "Strategy", "collective_kind", "drive", "max_abs_diff",
           "measure_peak", "nbytes", "wire_factor"]

_NAMESPACES = ("c10d", "_c10d_functional")
_KINDS = ("allreduce", "allgather", "reducescatter", "alltoall", "broadcast", "reduce",
          "gather", "scatter", "send", "recv")


def collective_kind(op_name: str) -> str | None:
    """``allreduce``, ``allgather``, ... for an operator name such as
    ``_allgather_base_`` or ``all_gather_into_tensor``; ``None`` for what moves no data
    between ranks (``barrier``, ``wait_tensor``, ``_wrap_tensor_autograd``, ...)."""
    key = op_name.replace("_", "").lower()
    for kind in _KINDS:
        if key.startswith(kind):
            return kind
    return None


def wire_factor(kind: str, world: int) -> float:
    """Bytes one rank sends per buffer byte of a ``kind`` collective (by ring)."""
    if world <= 1 or kind == "recv":
        return 0.0
    if kind in ("gather", "scatter"):
        return (world - 1) / world
    if kind == "send":
        return 1.0
    return hd.busbw_factor(kind, world)


def nbytes(obj: Any) -> int:
    """Bytes of every tensor in a (nested) argument: a tensor, a list of them, ..."""
    leaves, _ = tree_flatten(obj)
    return sum(t.numel() * t.element_size()
               for t in leaves if isinstance(t, torch.Tensor))


def _op_bytes(args: tuple[Any, ...], out: Any) -> int:
    """The full buffer of one collective: the largest of its first two arguments and
    its result (all-reduce: the tensor; all-gather: the output; reduce-scatter: the
    input)."""
    sizes = [nbytes(a) for a in args[:2]] + [nbytes(out)]
    return max(sizes)


class CommCounter(TorchDispatchMode):
    """Records ``(kind, buffer bytes)`` of every collective issued in its context."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        from torch.distributed.tensor import DTensor

        if any(issubclass(t, DTensor) for t in types):
            # let DTensor lower itself: its collectives come back to this mode
            return NotImplemented
        out = func(*args, **(kwargs or {}))
        if getattr(func, "namespace", None) in _NAMESPACES:
            kind = collective_kind(func._overloadpacket.__name__)
            if kind is not None:
                self.calls.append((kind, _op_bytes(args, out)))
        return out

    @property
    def bytes(self) -> int:
        """Buffer bytes of all issued, receives excluded (counted by the sender)."""
        return sum(b for kind, b in self.calls if kind != "recv")

    def wire_bytes(self, world: int) -> float:
        """Bytes this rank sends, by ring algorithm (see :func:`wire_factor`)."""
        return sum(b * wire_factor(kind, world) for kind, b in self.calls)

    def by_kind(self) -> dict[str, dict[str, int]]:
        """``{kind: {"calls": c, "bytes": b}}``."""
        out: dict[str, dict[str, int]] = {}
        for kind, b in self.calls:
            entry = out.setdefault(kind, {"calls": 0, "bytes": 0})
            entry["calls"] += 1
            entry["bytes"] += b
        return out


class _NoModules:
    """Stands in for ``MemTracker``'s module tracker: no module hooks at all."""

    is_bw = False
    parents: set[str] = set()

    def register_user_hooks(self, *hooks: Any) -> None:
        pass

    def clear_user_hooks(self) -> None:
        pass

    def __enter__(self) -> _NoModules:
        return self

    def __exit__(self, *args: Any) -> None:
        pass


def _tracker(module_hooks: bool = True) -> Any:
    """A ``MemTracker`` that also accepts one module called at the top level several
    times in one step (a pipeline stage, once per microbatch), which ``MemTracker``
    refuses as "multiple iterative calls"; such a call is tracked like a submodule
    called twice. With ``module_hooks=False`` no module hook is installed at all (the
    hooks on a stage's inputs break ``torch.distributed.pipelining``'s backward, which
    calls ``autograd.grad``): the peak is still every tensor's, but gradients are then
    counted as temporaries and nothing is attributed to a module."""
    from torch.distributed._tools.mem_tracker import MemTracker

    class _Tracker(MemTracker):
        def _pre_fw_hook(self, module: Any, inputs: Any) -> None:
            if module in self.memory_tracking and not self._mod_tracker.is_bw:
                stats = self.memory_tracking[module]
                stats.input_mem = self._track_inputs_or_outputs(inputs)
                stats.local_peak = {dev: snap["Total"] for dev, snap
                                    in self.get_tracker_snapshot().items()}
                return
            super()._pre_fw_hook(module, inputs)

    mt = _Tracker()
    if not module_hooks:
        mt._mod_tracker = _NoModules()
    return mt


def measure_peak(fn: Callable[[], Any], *track: Any, device: torch.device | None = None,
                 module_hooks: bool = True) -> tuple[Any, dict[str, int]]:
    """Run ``fn()`` under ``MemTracker``; return its result and the peak snapshot.

    ``track`` are the modules, optimisers and tensors that exist before ``fn`` runs. The
    snapshot (of ``device``, default the device with the largest peak) maps MemTracker's
    categories (``Parameter``, ``Gradient``, ``Optstate``, ``Activation``, ``Temp``,
    ...) to bytes, and ``Total`` to their sum at the peak."""
    mt = _tracker(module_hooks)
    if track:
        mt.track_external(*track)
    with mt:
        result = fn()
    snap = {dev: {str(getattr(k, "value", k)): int(v) for k, v in cats.items()}
            for dev, cats in mt.get_tracker_snapshot("peak").items()}
    if device is not None and device in snap:
        return result, snap[device]
    best = max(snap.values(), key=lambda c: c.get("Total", 0), default={"Total": 0})
    return result, best


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b|`` (on the CPU, in float64); ``inf`` when the shapes differ."""
    if a.shape != b.shape:
        return float("inf")
    if a.numel() == 0:
        return 0.0
    return float((a.detach().cpu().double() - b.detach().cpu().double()).abs().max())


@dataclass
class Strategy:
    """One parallel way of training the model, as :func:`drive` needs it.

    ``step(i)`` runs training step ``i`` on this rank and returns this rank's *share*
    of the global loss (the shares of all ranks sum to it). ``param_diff(ref)`` is the
    largest difference between the parameters this rank holds and the one-process
    ``ref`` (it may be a collective). ``track`` is what the memory tracker must know
    about. ``predicted_comm_bytes`` is the formula's buffer bytes per step, if there is
    one.
    """

    name: str
    step: Callable[[int], float]
    param_diff: Callable[[dict[str, torch.Tensor]], float]
    track: tuple[Any, ...] = ()
    predicted_comm_bytes: int | None = None
    module_hooks: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def drive(strategy: Strategy, world: hd.World, k_steps: int,
          reference: Any) -> dict[str, Any]:
    """Train ``strategy`` for ``k_steps`` (>= 3) and compare with ``reference`` (a
    :class:`~hpcai.parallel.model.RunResult`). A collective: every rank calls it; every
    rank gets the same row."""
    if k_steps < 3:
        raise ValueError("k_steps must be at least 3 (memory, timing, count); "
                         f"got {k_steps}")
    losses: list[float] = []
    times: list[float] = []
    peak: dict[str, int] = {}
    counter = CommCounter()
    for i in range(k_steps):
        world.sync()
        dist.barrier()
        if i == 0:
            share, peak = measure_peak(lambda: strategy.step(0), *strategy.track,
                                       device=world.device,
                                       module_hooks=strategy.module_hooks)
        elif i == k_steps - 1:
            with counter:
                share = strategy.step(i)
        else:
            t0 = time.perf_counter()
            share = strategy.step(i)
            world.sync()
            times.append(time.perf_counter() - t0)
        losses.append(hd.reduce_floats([share], "sum")[0])
    times = [hd.slowest(t) for t in times]
    param_diff = hd.reduce_floats([strategy.param_diff(reference.params)], "max")[0]
    per_rank: list[Any] = [None] * world.size
    mine = {"rank": world.rank, "peak_bytes": peak.get("Total", 0), "peak": peak,
            "comm_bytes": counter.bytes,
            "wire_bytes": counter.wire_bytes(world.size), "calls": counter.by_kind()}
    if world.size > 1:
        dist.all_gather_object(per_rank, mine)
    else:
        per_rank = [mine]
    timing = Timing(times)
    loss_diff = max(abs(a - b) for a, b in zip(losses, reference.losses))
    return {
        "strategy": strategy.name,
        "max_loss_diff": loss_diff,
        "max_param_diff": param_diff,
        "losses": losses,
        "peak_bytes_per_rank": max(r["peak_bytes"] for r in per_rank),
        "comm_bytes_per_step": max(r["comm_bytes"] for r in per_rank),
        "wire_bytes_per_step": max(r["wire_bytes"] for r in per_rank),
        "predicted_comm_bytes": strategy.predicted_comm_bytes,
        "step_median_s": timing.median,
        "step_iqr_s": timing.iqr,
        "timed_steps": len(times),
        "per_rank": per_rank,
        **strategy.extra,
    }
