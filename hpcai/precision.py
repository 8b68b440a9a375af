"""Number formats of deep learning: their bits, range and precision, computed, not quoted.

Chapter 6's precision lab (``notebooks/ch06_precision.md``) uses this module:

- :class:`Format` derives range and precision from the exponent and mantissa bits alone
  (``FORMATS`` holds fp32, tf32, fp16, bf16 and the two fp8 formats); the lab checks every
  derived value against ``torch.finfo``;
- :func:`round_mantissa` rounds float32 values to fewer mantissa bits, to nearest with ties
  to even, by integer arithmetic on the bit patterns: how tf32 is emulated on a CPU;
- :func:`bit_string` shows the stored bits of a value as ``sign exponent mantissa``;
- :func:`running_sum` adds values one at a time in a chosen dtype (a naive accumulator);
- :func:`fp8_roundtrip` casts to fp8 with a per-tensor scale factor and back;
- :func:`gemm_errors` compares matrix products in several precisions with an fp64 reference;
- :func:`deep_tanh_model` and :func:`autocast_grads` produce the small gradients that fp16
  flushes to zero, with and without loss scaling;
- :func:`cpu_flags` and :func:`onednn_kernels` say which units of this CPU can run which
  format, and which kernel the software actually chose.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Format:
    """A binary floating-point format: 1 sign bit, ``exponent_bits``, ``mantissa_bits``.

    ``ieee_specials``: the all-ones exponent is reserved for infinities and NaNs, as in
    IEEE 754. fp8 e4m3 (``float8_e4m3fn``, "finite, NaN") has no infinities; only the
    all-ones exponent *with* an all-ones mantissa is NaN, so that exponent still holds
    normal numbers and the largest value is one step below the all-ones pattern.
    """

    name: str
    exponent_bits: int
    mantissa_bits: int
    ieee_specials: bool = True

    @property
    def bits(self) -> int:
        return 1 + self.exponent_bits + self.mantissa_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exponent_bits - 1) - 1

    @property
    def max_exponent(self) -> int:
        top = 2**self.exponent_bits - 1  # the all-ones exponent field
        return (top - 1 if self.ieee_specials else top) - self.bias

    @property
    def max(self) -> float:
        m = self.mantissa_bits
        # IEEE: mantissa all ones. e4m3fn: all ones is NaN, so one step less.
        largest_fraction = 2 - 2.0 ** (-m if self.ieee_specials else 1 - m)
        return largest_fraction * 2.0**self.max_exponent

    @property
    def smallest_normal(self) -> float:
        return 2.0 ** (1 - self.bias)

    @property
    def smallest_subnormal(self) -> float:
        return 2.0 ** (1 - self.bias - self.mantissa_bits)

    @property
    def eps(self) -> float:
        """Machine epsilon: the gap between 1 and the next larger number."""
        return 2.0**-self.mantissa_bits

    @property
    def decimal_digits(self) -> float:
        """Significant decimal digits: -log10 of the worst relative rounding error."""
        return -math.log10(self.eps / 2)


FORMATS: dict[str, Format] = {
    "fp32": Format("fp32", 8, 23),
    "tf32": Format("tf32", 8, 10),
    "fp16": Format("fp16", 5, 10),
    "bf16": Format("bf16", 8, 7),
    "fp8 e4m3": Format("fp8 e4m3", 4, 3, ieee_specials=False),
    "fp8 e5m2": Format("fp8 e5m2", 5, 2),
}
"""The formats of this chapter, from the widest to the narrowest."""

TORCH_DTYPES: dict[str, torch.dtype | None] = {
    "fp32": torch.float32,
    "tf32": None,  # a math mode of tensor cores, not a storage type
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp8 e4m3": torch.float8_e4m3fn,
    "fp8 e5m2": torch.float8_e5m2,
}


def finfo_values(dtype: torch.dtype) -> dict[str, float]:
    """What ``torch.finfo`` says about ``dtype``, plus the smallest subnormal.

    finfo has no field for the smallest subnormal; it is ``smallest_normal * eps``, and the
    lab checks separately that casting it to ``dtype`` keeps it nonzero.
    """
    fi = torch.finfo(dtype)
    return {"bits": fi.bits, "max": fi.max, "smallest_normal": fi.smallest_normal,
            "smallest_subnormal": fi.smallest_normal * fi.eps, "eps": fi.eps}


def round_mantissa(x: torch.Tensor, mantissa_bits: int) -> torch.Tensor:
    """Round float32 values to ``mantissa_bits`` bits, to nearest, ties to even.

    Works on the integer bit patterns: add just under half of the dropped part (plus one
    when the last kept bit is odd, which breaks ties towards even), then clear the dropped
    bits. A carry out of the mantissa bumps the exponent, so rounding up to the next power
    of two, and overflow to infinity, come out right. Infinities and NaNs pass unchanged.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"round_mantissa works on float32 tensors, not {x.dtype}")
    if not 0 <= mantissa_bits <= 23:
        raise ValueError(f"mantissa_bits must be in 0..23, not {mantissa_bits}")
    drop = 23 - mantissa_bits
    if drop == 0:
        return x.clone()
    bits = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF  # unsigned
    odd = (bits >> drop) & 1
    rounded = (bits + (1 << (drop - 1)) - 1 + odd) & ~((1 << drop) - 1)
    rounded = torch.where(rounded >= 2**31, rounded - 2**32, rounded)  # back to int32
    out = rounded.to(torch.int32).view(torch.float32).reshape(x.shape)
    return torch.where(torch.isfinite(x), out, x)


def to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to tf32 (8 exponent bits, 10 mantissa bits), kept in float32."""
    return round_mantissa(x, FORMATS["tf32"].mantissa_bits)


def bit_string(value: float, name: str) -> str:
    """The stored bits of ``value`` in format ``name`` as ``'s eeeee mmmmmmmmmm'``.

    tf32 shows the 19 bits that survive :func:`to_tf32` out of the float32 pattern.
    """
    fmt = FORMATS[name]
    if name in ("fp32", "tf32"):
        x = torch.tensor([value], dtype=torch.float32)
        if name == "tf32":
            x = to_tf32(x)
        raw = int(x.view(torch.int32).item()) & 0xFFFFFFFF
        raw >>= 23 - fmt.mantissa_bits
    else:
        dtype = TORCH_DTYPES[name]
        assert dtype is not None
        stored = torch.tensor([value], dtype=torch.float32).to(dtype)
        int_type = {16: torch.int16, 8: torch.uint8}[fmt.bits]
        raw = int(stored.view(int_type).item()) & (2**fmt.bits - 1)
    text = format(raw, f"0{fmt.bits}b")
    e = fmt.exponent_bits
    return f"{text[0]} {text[1:1 + e]} {text[1 + e:]}"


def running_sum(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Add ``values`` one at a time into an accumulator of ``dtype``; all partial sums.

    This is a naive accumulator on purpose: after every addition the sum is rounded to
    ``dtype``. ``torch.sum`` does not do this (its reductions accumulate in wider types).
    """
    x = values.to(dtype)
    acc = torch.zeros((), dtype=dtype)
    partial = torch.empty(len(x), dtype=torch.float64)
    for i in range(len(x)):
        acc = acc + x[i]
        partial[i] = float(acc)
    return partial


def stall_point(increment: float, fmt: Format) -> float:
    """Where a sum of equal positive ``increment`` s stops growing in format ``fmt``.

    Adding ``increment`` to a sum in ``[2**k, 2**(k+1))`` changes nothing once it is no
    more than half the spacing ``2**k * eps`` there (a tie rounds to the even value, the
    power of two itself). The sum stalls at the first power of two ``P`` with
    ``increment <= P * eps / 2``.
    """
    return 2.0 ** math.ceil(math.log2(2 * increment / fmt.eps))


def fp8_roundtrip(x: torch.Tensor, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """``x * scale`` cast to the fp8 ``dtype``, back to float32 and divided by ``scale``."""
    return (x * scale).to(dtype).to(torch.float32) / scale


def amax_scale(x: torch.Tensor, dtype: torch.dtype, margin: float = 1.0) -> float:
    """Per-tensor scale that maps the largest ``|x|`` to ``margin`` times the format's max."""
    amax = float(x.abs().max())
    if amax == 0:
        return 1.0
    return margin * torch.finfo(dtype).max / amax


def rel_error(approx: torch.Tensor, ref: torch.Tensor) -> float:
    """Frobenius-norm relative error ``|approx - ref| / |ref|``, computed in float64."""
    a, r = approx.to(torch.float64), ref.to(torch.float64)
    return float(torch.linalg.norm(a - r) / torch.linalg.norm(r))


def matmul_bf16_accumulate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with every product *and* every partial sum rounded to bf16.

    One rank-1 update per step of the inner dimension, the accumulator kept in bf16: the
    arithmetic of a unit without a wider accumulator. Slow (a Python loop over K).
    """
    a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
    acc = torch.zeros(a.shape[0], b.shape[1], dtype=torch.bfloat16, device=a.device)
    for k in range(a.shape[1]):
        acc = acc + a16[:, k:k + 1] * b16[k:k + 1, :]
    return acc


def gemm_errors(ks: Sequence[int], mn: int, seed: int = 0,
                device: str = "cpu") -> dict[str, list[float]]:
    """Relative error of ``(mn x K) @ (K x mn)`` in several precisions, for each K.

    The reference is the fp64 product of the same float32 inputs. Modes:

    - ``fp32``: float32 in, float32 arithmetic (on CUDA with tf32 switched off);
    - ``tf32 inputs, fp32 accumulate``: inputs rounded by :func:`to_tf32`, float32 product;
    - ``bf16 inputs, fp32 accumulate``: inputs rounded to bf16, float32 product (a product
      of two bf16 numbers is exact in float32, so only the accumulation rounds);
    - ``torch bf16 matmul``: ``torch.matmul`` on bf16 tensors (the library accumulates in
      float32 and rounds the result to bf16);
    - ``bf16 accumulate``: :func:`matmul_bf16_accumulate`;
    - on CUDA only, ``fp32, allow_tf32 (tensor cores)``: float32 tensors with tf32
      allowed (``torch.backends.cuda.matmul.allow_tf32 = True``, spelled
      ``fp32_precision = "tf32"`` since PyTorch 2.9).
    """
    gen = torch.Generator().manual_seed(seed)
    rows: dict[str, list[float]] = {}

    def add(mode: str, value: float) -> None:
        rows.setdefault(mode, []).append(value)

    for k in ks:
        a = torch.randn(mn, k, generator=gen)
        b = torch.randn(k, mn, generator=gen)
        ref = a.double() @ b.double()
        a, b = a.to(device), b.to(device)
        saved, saved_cpu = _fp32_mode(device), _fp32_mode("cpu")
        try:
            _set_fp32_mode(device, "ieee")
            add("fp32", rel_error((a @ b).cpu(), ref))
            if device == "cuda":
                _set_fp32_mode(device, "tf32")
                add("fp32, allow_tf32 (tensor cores)", rel_error((a @ b).cpu(), ref))
                _set_fp32_mode(device, "ieee")
            t_a, t_b = to_tf32(a.cpu()), to_tf32(b.cpu())
            _set_fp32_mode("cpu", "ieee")
            add("tf32 inputs, fp32 accumulate", rel_error(t_a @ t_b, ref))
            a16 = a.to(torch.bfloat16).to(torch.float32)
            b16 = b.to(torch.bfloat16).to(torch.float32)
            add("bf16 inputs, fp32 accumulate", rel_error((a16 @ b16).cpu(), ref))
        finally:
            _set_fp32_mode(device, saved)
            _set_fp32_mode("cpu", saved_cpu)
        add("torch bf16 matmul",
            rel_error((a.to(torch.bfloat16) @ b.to(torch.bfloat16)).cpu(), ref))
        add("bf16 accumulate", rel_error(matmul_bf16_accumulate(a, b).cpu(), ref))
    return rows


def deep_tanh_model(depth: int, width: int, classes: int, gain: float,
                    seed: int = 0) -> torch.nn.Sequential:
    """``depth`` bias-free linear + tanh layers of ``width``, then a linear classifier.

    Weights are drawn with standard deviation ``gain / sqrt(width)``: with ``gain < 1``
    each layer shrinks the gradients that flow back through it.
    """
    gen = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for _ in range(depth):
        lin = torch.nn.Linear(width, width, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(width, width, generator=gen) * gain / width**0.5)
        layers += [lin, torch.nn.Tanh()]
    head = torch.nn.Linear(width, classes, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(classes, width, generator=gen) / width**0.5)
    return torch.nn.Sequential(*layers, head)


def autocast_grads(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor,
                   dtype: torch.dtype | None, scale: float = 1.0) -> list[torch.Tensor]:
    """Weight gradients of a cross-entropy loss, the forward pass under autocast.

    ``dtype=None``: everything in float32. Otherwise the forward runs under
    ``torch.autocast`` in ``dtype`` (so the backward's matrix products run in ``dtype``
    too), the loss is multiplied by ``scale`` before ``backward()`` and the float32 weight
    gradients are divided by ``scale`` afterwards: static loss scaling.
    """
    model.zero_grad(set_to_none=True)
    device = x.device.type
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    (loss * scale).backward()
    grads = []
    for p in model.parameters():
        assert p.grad is not None
        grads.append(p.grad.detach().clone() / scale)
    return grads


def dynamic_loss_scale(model: torch.nn.Module, x: torch.Tensor, labels: torch.Tensor,
                       dtype: torch.dtype, start: float = 2.0**32,
                       ) -> list[tuple[float, bool]]:
    """The back-off half of dynamic loss scaling: halve the scale until no gradient
    overflows. Returns ``(scale, all gradients finite)`` for every attempt."""
    tries = []
    scale = start
    while scale >= 1.0:
        grads = autocast_grads(model, x, labels, dtype, scale)
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        tries.append((scale, finite))
        if finite:
            break
        scale /= 2
    return tries


def _fp32_mode(device: str) -> str | bool:
    """How float32 matmuls run now on ``device`` (a value :func:`_set_fp32_mode` takes)."""
    if device == "cuda":
        matmul = torch.backends.cuda.matmul
        if hasattr(matmul, "fp32_precision"):  # PyTorch >= 2.9
            return str(matmul.fp32_precision)
        return bool(matmul.allow_tf32)
    return str(torch.backends.mkldnn.matmul.fp32_precision)


def _set_fp32_mode(device: str, mode: str | bool) -> None:
    """Set how float32 matmuls run: ``"ieee"``, ``"tf32"`` or ``"bf16"`` (CPU), or a
    state saved by :func:`_fp32_mode`.

    On CUDA, PyTorch 2.9 and later spell ``allow_tf32 = True`` as
    ``torch.backends.cuda.matmul.fp32_precision = "tf32"`` and refuse a mix of the two
    spellings, so the new one is used where it exists.
    """
    if device == "cuda":
        matmul = torch.backends.cuda.matmul
        if hasattr(matmul, "fp32_precision"):
            matmul.fp32_precision = ("tf32" if mode is True else "ieee" if mode is False
                                     else str(mode))
        else:
            matmul.allow_tf32 = mode is True or mode == "tf32"
    else:
        torch.backends.mkldnn.matmul.fp32_precision = str(mode)


def matmul_modes(n: int, device: str = "cpu", repeats: int = 7,
                 seed: int = 0) -> list[dict[str, object]]:
    """Time and check one ``n x n`` matmul in each precision mode of ``device``.

    CPU: float32 as is; float32 with ``torch.backends.mkldnn.matmul.fp32_precision =
    "bf16"`` (oneDNN may then round the inputs to bf16 inside the kernel); bf16 tensors;
    fp16 tensors. CUDA: float32 with tf32 off and on
    (``torch.backends.cuda.matmul.allow_tf32``), bf16, fp16. Each row: the mode, the
    median and IQR of ``repeats`` timed calls after warm-up, GFLOP/s at the median and the
    relative error against the fp64 product of the same float32 inputs.
    """
    from .measure import time_it

    gen = torch.Generator().manual_seed(seed)
    a32 = torch.randn(n, n, generator=gen).to(device)
    b32 = torch.randn(n, n, generator=gen).to(device)
    ref = a32.double() @ b32.double()
    reduced = "tf32" if device == "cuda" else "bf16"
    cases = [("fp32", a32, b32, "ieee"),
             (f"fp32, {reduced} math mode", a32, b32, reduced),
             ("bf16", a32.bfloat16(), b32.bfloat16(), "ieee"),
             ("fp16", a32.half(), b32.half(), "ieee")]
    sync = "cuda" if device == "cuda" else None
    rows: list[dict[str, object]] = []
    saved = _fp32_mode(device)
    try:
        for name, a, b, mode in cases:
            _set_fp32_mode(device, mode)
            err = rel_error(a @ b, ref)
            t = time_it(lambda a=a, b=b: a @ b, warmup=2, repeats=repeats, sync=sync)
            rows.append({"mode": name, "median_s": t.median, "iqr_s": t.iqr,
                         "GFLOPs": 2 * n**3 / t.median / 1e9, "rel_err": err})
    finally:
        _set_fp32_mode(device, saved)
    return rows


def cpu_tf32_mode_changes_nothing(n: int = 256, seed: int = 0) -> bool:
    """True when a float32 CPU matmul with oneDNN's ``fp32_precision = "tf32"`` gives
    bit for bit the result of the default mode (no tf32 hardware was used)."""
    gen = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    saved = _fp32_mode("cpu")
    try:
        _set_fp32_mode("cpu", "ieee")
        exact = a @ b
        _set_fp32_mode("cpu", "tf32")
        tf32 = a @ b
    finally:
        _set_fp32_mode("cpu", saved)
    return bool(torch.equal(exact, tf32))


# ----------------------------------------------------------------------- the hardware side
CPU_UNITS: dict[str, list[tuple[str, str]]] = {
    "fp32": [("avx512f", "AVX-512 FMA"), ("avx2", "AVX2 FMA")],
    "tf32": [],
    "fp16": [("amx_fp16", "AMX-FP16 tiles"), ("avx512_fp16", "AVX512-FP16 vectors"),
             ("f16c", "F16C conversions only")],
    "bf16": [("amx_bf16", "AMX-BF16 tiles"), ("avx512_bf16", "AVX512-BF16 dot products")],
    "fp8 e4m3": [],
    "fp8 e5m2": [],
    "int8": [("amx_int8", "AMX-INT8 tiles"), ("avx512_vnni", "AVX512-VNNI dot products")],
}
"""For each format, the CPU flags (as Linux names them in /proc/cpuinfo) of units that
compute in it, the most capable first."""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (empty set if unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8")
        except OSError:
            return set()
    match = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
    return set(match.group(1).split()) if match else set()


def cpu_units(flags: set[str]) -> dict[str, list[str]]:
    """For each format, the units of :data:`CPU_UNITS` whose flag is in ``flags``."""
    return {fmt: [unit for flag, unit in units if flag in flags]
            for fmt, units in CPU_UNITS.items()}


_ONEDNN_PROBE = """
import json, sys, torch
n = int(sys.argv[1])
a, b = torch.randn(n, n), torch.randn(n, n)
cases = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16()),
         "fp16": (a.half(), b.half())}
for name, (x, y) in cases.items():
    print("@@", name, flush=True)
    x @ y
print("@@ fp32, fpmath bf16", flush=True)
torch.backends.mkldnn.matmul.fp32_precision = "bf16"
a @ b
"""


def onednn_kernels(n: int = 256) -> dict[str, str]:
    """Which oneDNN kernel ran one ``n x n`` matmul per case, read from ONEDNN_VERBOSE.

    Runs a fresh Python (the verbose switch is read when oneDNN starts) that multiplies in
    fp32, bf16, fp16, and fp32 with ``torch.backends.mkldnn.matmul.fp32_precision =
    "bf16"``. A case that oneDNN did not run (PyTorch sent it to another BLAS, such as
    MKL's sgemm) maps to ``"not oneDNN"``.
    """
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _ONEDNN_PROBE, str(n)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return parse_onednn_verbose(proc.stdout)


def parse_onednn_verbose(text: str) -> dict[str, str]:
    """Map each ``@@ case`` marker to the implementation of the matmul after it."""
    kernels: dict[str, str] = {}
    case = None
    for line in text.splitlines():
        if line.startswith("@@ "):
            case = line[3:].strip()
            kernels[case] = "not oneDNN"
        elif case and line.startswith("onednn_verbose") and ",exec," in line:
            fields = line.split(",")
            if "matmul" in fields:
                kernels[case] = fields[fields.index("matmul") + 1]
    return kernels


GPU_FORMATS: dict[str, dict[str, float | None]] = {
    "V100 (Volta, 2017)": {"fp32": 15.7, "tf32": None, "fp16": 125.0, "bf16": None,
                           "fp8 e4m3": None, "fp8 e5m2": None},
    "A100 (Ampere, 2020)": {"fp32": 19.5, "tf32": 156.0, "fp16": 312.0, "bf16": 312.0,
                            "fp8 e4m3": None, "fp8 e5m2": None},
    "H100 (Hopper, 2022)": {"fp32": 67.0, "tf32": 494.5, "fp16": 989.5, "bf16": 989.5,
                            "fp8 e4m3": 1979.0, "fp8 e5m2": 1979.0},
}
"""Dense peak TFLOP/s of the SXM parts in each format, from NVIDIA's whitepapers (V100,
A100) and datasheet (H100: half its with-sparsity figures); ``None``: no tensor-core support
for that format. fp32 is the plain (non-tensor-core) rate. Facts, not measured here."""
