"""The memory calculator against MemTracker: predicted and measured bytes of one step.

    python scripts/bench/memory.py --profile cpu --json

For each configuration (a model, a dtype, an optimiser) the script builds the model of
:mod:`hpcai.parallel.model` (residual MLP blocks, or pre-norm transformer blocks), runs
one training step under ``MemTracker`` (:func:`hpcai.parallel.tracking.measure_peak`,
on CPU as on a GPU) and compares the peak with :func:`hpcai.memcalc.peak_bytes`. One
row per configuration holds ``config``, ``predicted_bytes``, ``measured_bytes``,
``rel_err`` (``predicted / measured - 1``), the formula's terms (``predicted``) and
MemTracker's categories at the peak (``measured``). The exact parts are checked too:
parameters and optimiser state at the end of the step (``exact``), which the formula
must give to the byte. ``note`` says what the formula leaves out where a row misses
10 %.

Optimisers update one tensor at a time (``foreach=False``), so their temporaries are
one tensor's, as :mod:`hpcai.memcalc` assumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpcai import memcalc
from hpcai.cli import bench_main

if TYPE_CHECKING:
    import torch
# torch and the models are imported in the functions that use them, so that a refused
# command-line value is answered before the import

# ------------------------------------------------------------------ settings
SIZES = {
    "smoke": {"configs": "all", "dim": 64, "hidden": 256, "n_blocks": 2, "batch": 32,
              "seq": 16, "heads": 4, "attn_batch": 32, "tolerance": 0.10},
    "cpu": {"configs": "all", "dim": 256, "hidden": 1024, "n_blocks": 4, "batch": 256,
            "seq": 64, "heads": 8, "attn_batch": 32, "tolerance": 0.10},
    "gpu": {"configs": "all", "dim": 1024, "hidden": 4096, "n_blocks": 4,
            "batch": 1024, "seq": 256, "heads": 16, "attn_batch": 16,
            "tolerance": 0.10},
}
SIZES["cluster"] = SIZES["cpu"]

CONFIGS: dict[str, dict[str, Any]] = {
    "mlp_fp32_sgd": {"model": "mlp", "precision": "fp32", "optimizer": "sgd"},
    "mlp_fp32_momentum": {"model": "mlp", "precision": "fp32", "optimizer": "momentum"},
    "mlp_fp32_adam": {"model": "mlp", "precision": "fp32", "optimizer": "adam"},
    "mlp_bf16_weights_adam": {"model": "mlp", "precision": "bf16_weights",
                              "optimizer": "adam"},
    "mlp_bf16_autocast_sgd": {"model": "mlp", "precision": "bf16",
                              "optimizer": "sgd"},
    "mlp_bf16_autocast_adam": {"model": "mlp", "precision": "bf16",
                               "optimizer": "adam"},
    "transformer_fp32_adam": {"model": "transformer", "precision": "fp32",
                              "optimizer": "adam"},
}


def parse_configs(text: str) -> list[str]:
    if text == "all":
        return list(CONFIGS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in CONFIGS]
    if not names or bad:
        raise ValueError("--configs must be all or a comma-separated list drawn from "
                         f"{', '.join(CONFIGS)}; got {text!r}")
    return names


def check(S: Any) -> None:
    parse_configs(S.configs)
    if S.dim % S.heads:
        raise ValueError(f"--dim ({S.dim}) must be a multiple of --heads ({S.heads})")


def make_optimizer(name: str, params: Any) -> torch.optim.Optimizer:
    import torch

    if name == "sgd":
        return torch.optim.SGD(params, lr=0.01, foreach=False)
    if name == "momentum":
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=False)
    return torch.optim.Adam(params, lr=1e-3, foreach=False)


# ------------------------------------------------------------------ the formula
def predict(spec: dict[str, Any], S: Any) -> memcalc.Memory:
    """The calculator's terms for one configuration."""
    seq = S.seq if spec["model"] == "transformer" else 0
    rows = S.attn_batch if seq else S.batch
    if seq:
        sizes = memcalc.transformer_params(S.dim, S.hidden) * S.n_blocks
    else:
        sizes = memcalc.mlp_params([S.dim, S.hidden, S.dim]) * S.n_blocks
    prec = spec["precision"]
    weights = "bf16" if prec == "bf16_weights" else "fp32"
    if seq:
        act = memcalc.transformer_activations(rows, seq, S.dim, S.hidden, S.heads,
                                              S.n_blocks, weights)
    elif prec == "bf16":
        # autocast: the inputs of each Linear and the tanh output are bf16, and each
        # Linear saves a bf16 copy of its weight; the loss saves the fp32 output
        act = memcalc.mlp_activations(S.batch, S.dim, S.hidden, S.n_blocks, "bf16",
                                      loss=False)
        act += sum(sizes[0::2]) * 2 + S.batch * S.dim * 4
    else:
        act = memcalc.mlp_activations(S.batch, S.dim, S.hidden, S.n_blocks, weights)
    shape = rows * (seq or 1) * S.dim
    inputs = 2 * shape * memcalc.dtype_bytes(weights)  # inputs and targets
    return memcalc.training_memory(sizes, act, spec["optimizer"], weights,
                                   inputs=inputs, blocks=S.n_blocks)


# ------------------------------------------------------------------ the measurement
def measure(spec: dict[str, Any], S: Any, device: str) -> dict[str, int]:
    """MemTracker's peak snapshot of the first step, and the exact parts after it."""
    import torch

    from hpcai.parallel.model import ModelConfig, batch, build_model, loss_fn
    from hpcai.parallel.tracking import measure_peak

    seq = S.seq if spec["model"] == "transformer" else 0
    cfg = ModelConfig(dim=S.dim, hidden=S.hidden, n_blocks=S.n_blocks, seq=seq,
                      heads=S.heads)
    net = build_model(cfg, device)
    dtype = torch.bfloat16 if spec["precision"] == "bf16_weights" else torch.float32
    net = net.to(dtype)
    opt = make_optimizer(spec["optimizer"], net.parameters())
    x, y = batch(cfg, 0, S.attn_batch if seq else S.batch, device=device)
    x, y = x.to(dtype), y.to(dtype)
    autocast = spec["precision"] == "bf16"

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            out = net(x)
        loss = loss_fn(out.float(), y.float())
        loss.backward()
        opt.step()
        return float(loss.detach())

    _, snap = measure_peak(step, net, opt, x, y)
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in net.parameters()
                if p.grad is not None)
    state = sum(t.numel() * t.element_size() for s in opt.state.values()
                for t in s.values() if isinstance(t, torch.Tensor))
    return {**snap, "exact_parameters": params, "exact_gradients": grads,
            "exact_optimizer": state}


NOTES = {
    "activations": "the formula counts saved tensors only; the backward pass also "
                   "holds temporaries (gradients of activations, kernel buffers) that "
                   "MemTracker counts as Temp",
}


def run(S: Any) -> dict[str, Any]:
    import torch

    device = "cuda" if S.profile == "gpu" and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    rows = []
    for name in parse_configs(S.configs):
        spec = CONFIGS[name]
        pred = predict(spec, S)
        meas = measure(spec, S, device)
        predicted, measured = memcalc.peak_bytes(pred), meas["Total"]
        rel = predicted / measured - 1 if measured else float("inf")
        row: dict[str, Any] = {
            "config": name, **spec, "predicted_bytes": predicted,
            "measured_bytes": measured, "rel_err": rel, "predicted": pred.as_dict(),
            "measured": {k: v for k, v in meas.items() if not k.startswith("exact")},
            "exact": {"parameters": [pred.parameters, meas["exact_parameters"]],
                      "gradients": [pred.gradients, meas["exact_gradients"]],
                      "optimizer": [pred.optimizer, meas["exact_optimizer"]]},
            "within_tolerance": abs(rel) <= S.tolerance,
        }
        if not row["within_tolerance"]:
            row["note"] = NOTES["activations"]
        rows.append(row)
        print(f"{name:24s} predicted {predicted:12,d} B  measured {measured:12,d} B  "
              f"rel_err {rel:+.3f}", flush=True)
    return {"rows": rows, "device": device, "tolerance": S.tolerance,
            "all_within": all(r["within_tolerance"] for r in rows)}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, check=check)
