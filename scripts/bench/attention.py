"""Hand-written causal attention against PyTorch's fused kernel: agreement, time, memory.

    python scripts/bench/attention.py --profile cpu --json
    python scripts/bench/attention.py --profile gpu --json      # on a GPU

The hand-written version (``eager``, ``hpcai.attention.causal_attention``) forms the
``(batch, heads, T, T)`` scores, masks the future, takes the softmax and multiplies by
``V``; ``sdpa`` is ``torch.nn.functional.scaled_dot_product_attention(is_causal=True)``.
First both run on the same fp32 inputs at the shortest ``T``: ``max_abs_diff`` is the
largest difference of their outputs (the check of the notebook and the tests asks
for at most 1e-5). Then, at every ``T`` of ``seq_lens``, each runs forward only
(``torch.no_grad``, as in inference) in ``dtype``: one row per ``impl`` and ``T`` with
``median_s`` and ``iqr_s`` over ``repeats`` calls, ``peak_bytes`` (the largest number
of bytes of tensors alive during one call beyond the inputs: MemTracker on a CPU,
``torch.cuda.max_memory_allocated`` minus what was allocated before on a GPU) and
``scores_bytes``, the size of one ``T x T`` matrix per head and sample.
"""

from __future__ import annotations

from typing import Any

from hpcai.cli import bench_main

SIZES = {
    "smoke": {"batch": 1, "heads": 4, "d_head": 32, "seq_lens": "64,256",
              "repeats": 3, "dtype": "fp32"},
    "cpu": {"batch": 1, "heads": 8, "d_head": 64, "seq_lens": "256,512,1024,2048",
            "repeats": 5, "dtype": "fp32"},
    "gpu": {"batch": 4, "heads": 16, "d_head": 64,
            "seq_lens": "1024,2048,4096,8192", "repeats": 20, "dtype": "bf16"},
}
SIZES["cluster"] = SIZES["cpu"]
CHOICES = {"dtype": ("fp32", "bf16")}


def parse_lens(text: str) -> list[int]:
    """``"64,256"`` -> ``[64, 256]``; every length a positive integer."""
    try:
        lens = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        lens = []
    if not lens or min(lens) < 1:
        raise ValueError("--seq-lens must be a comma-separated list of positive "
                         f"integers, e.g. 64,256; got {text!r}")
    return lens


def check(S: Any) -> None:
    parse_lens(S.seq_lens)


def run(S: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from hpcai import time_it
    from hpcai.attention import causal_attention
    from hpcai.parallel.tracking import max_abs_diff, measure_peak

    device = "cuda" if S.profile == "gpu" and torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[S.dtype]
    impls = {"eager": causal_attention,
             "sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v,
                                                                    is_causal=True)}
    lens = parse_lens(S.seq_lens)
    gen = torch.Generator(device=device).manual_seed(0)

    def qkv(t: int, dt: torch.dtype) -> list[torch.Tensor]:
        shape = (S.batch, S.heads, t, S.d_head)
        return [torch.randn(shape, generator=gen, device=device).to(dt)
                for _ in range(3)]

    with torch.no_grad():
        q, k, v = qkv(lens[0], torch.float32)
        diff = max_abs_diff(impls["eager"](q, k, v), impls["sdpa"](q, k, v))
        rows = []
        for t in lens:
            q, k, v = qkv(t, dtype)
            for name, fn in impls.items():
                timing = time_it(lambda fn=fn, a=(q, k, v): fn(*a), warmup=1,
                                 repeats=S.repeats, sync="cuda" if cuda else None)
                if cuda:
                    torch.cuda.synchronize()
                    base = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                    fn(q, k, v)
                    torch.cuda.synchronize()
                    peak = torch.cuda.max_memory_allocated() - base
                else:
                    _, snap = measure_peak(lambda fn=fn, a=(q, k, v): fn(*a), q, k,
                                           v, module_hooks=False)
                    peak = snap.get("Total", 0) - 3 * q.numel() * q.element_size()
                rows.append({"impl": name, "T": t, **timing.as_dict(),
                             "peak_bytes": int(peak),
                             "scores_bytes": S.batch * S.heads * t * t
                             * q.element_size()})
    method = ("torch.cuda.max_memory_allocated over one call, minus the bytes "
              "allocated before it" if cuda else
              "MemTracker's peak over one call, minus the three inputs")
    return {"device": device, "max_abs_diff": diff, "diff_T": lens[0],
            "diff_dtype": "fp32", "rows": rows, "memory_method": method,
            "torch": torch.__version__}


if __name__ == "__main__":
    bench_main(run, SIZES, description=__doc__, choices=CHOICES, check=check)
