"""What a scaling study reports: throughput, time to solution, efficiency, the gain of
each doubling, and the cost of a run (chapter 12).

A study is a list of runs of the same training job on ``N`` devices (processes, GPUs);
each run has a throughput ``X(N)`` (samples per second) and a time to solution ``T(N)``
(to a fixed number of epochs, or to a target loss). Against the smallest run ``N0``:

* efficiency of throughput, ``E_X(N) = X(N) N0 / (X(N0) N)`` (1: every device as
  productive as at ``N0``), and of time, ``E_T(N) = T(N0) N0 / (T(N) N)``;
* the marginal gain of a doubling, ``X(N) / X(N/2)`` or ``T(N/2) / T(N)`` (2: the
  doubling halved the time; 1: it bought nothing);
* the cost of a run, ``C(N) = p N T(N) / 3600`` for a price ``p`` per device-hour, so
  that ``C(N) / C(N0) = 1 / E_T(N)``: a run that scales at 50 % costs twice as much.

``REFERENCE_VIT`` and ``REFERENCE_LLAMA`` are the data-parallel tables of the reference
book (Torres 2025, MareNostrum 5, H100 GPUs), kept as data so a notebook can put its own
study beside them; they are facts quoted with a citation, not measurements of this book.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["REFERENCE_LLAMA", "REFERENCE_VIT", "cost_per_run", "efficiency",
           "marginal_gain", "study_rows", "time_to_target"]

REFERENCE_VIT: dict[str, list[float]] = {
    "devices": [1, 2, 4, 8, 16, 32],
    "samples_per_s": [240, 464, 892, 1668, 3075, 5205],
    "time_s": [556, 439, 380, 347, 330, 328],
}
"""The reference book's DDP run of a vision transformer on a small data set: images per
second and training time on 1 to 32 H100 GPUs (each rank had 3 batches at 32)."""

REFERENCE_LLAMA: dict[str, list[float]] = {
    "devices": [1, 2, 4, 8, 16, 32],
    "efficiency": [1.0, 0.96, 0.90, 0.88, 0.87, 0.86],
}
"""The reference book's DDP run of LLaMA-3.2-1B: efficiency of throughput at 1 to 32
H100 GPUs (48,229 tokens/s per GPU at 1, 41,424 at 32; memory per GPU unchanged)."""


def _check(devices: Sequence[float], values: Sequence[float]) -> None:
    if len(devices) != len(values) or not devices:
        raise ValueError(f"need one value per device count, got {len(devices)} device "
                         f"counts and {len(values)} values")
    if any(n <= 0 for n in devices) or any(v <= 0 for v in values):
        raise ValueError("device counts and values must be positive")


def efficiency(devices: Sequence[float], values: Sequence[float], *,
               kind: str = "throughput") -> list[float]:
    """``E(N)`` against the first entry: of a throughput (``kind="throughput"``),
    ``X(N) N0 / (X(N0) N)``; of a time (``kind="time"``), ``T(N0) N0 / (T(N) N)``."""
    _check(devices, values)
    n0, v0 = devices[0], values[0]
    if kind == "throughput":
        return [v * n0 / (v0 * n) for n, v in zip(devices, values)]
    if kind == "time":
        return [v0 * n0 / (v * n) for n, v in zip(devices, values)]
    raise ValueError(f"kind must be throughput or time, not {kind!r}")


def marginal_gain(devices: Sequence[float], values: Sequence[float], *,
                  kind: str = "throughput") -> list[float | None]:
    """What each step of the study bought over the previous one, as a factor:
    ``X(N_i) / X(N_{i-1})`` for a throughput, ``T(N_{i-1}) / T(N_i)`` for a time;
    ``None`` for the first. With ``N`` doubling at each step, 2 is ideal."""
    _check(devices, values)
    if kind not in ("throughput", "time"):
        raise ValueError(f"kind must be throughput or time, not {kind!r}")
    out: list[float | None] = [None]
    for prev, cur in zip(values, values[1:]):
        out.append(cur / prev if kind == "throughput" else prev / cur)
    return out


def cost_per_run(devices: float, seconds: float, price_per_device_hour: float) -> float:
    """``p N T / 3600``: what ``devices`` devices cost for ``seconds`` at ``p`` each an
    hour (whole devices are billed whether busy or waiting)."""
    if devices <= 0 or seconds < 0 or price_per_device_hour < 0:
        raise ValueError("devices must be positive, seconds and price non-negative")
    return price_per_device_hour * devices * seconds / 3600.0


def time_to_target(times: Sequence[float], losses: Sequence[float],
                   target: float) -> float | None:
    """The first of ``times`` (cumulative seconds at the end of each epoch) whose loss is
    at most ``target``; ``None`` if the run never got there."""
    if len(times) != len(losses):
        raise ValueError("need one loss per time")
    return next((t for t, loss in zip(times, losses) if loss <= target), None)


def study_rows(devices: Sequence[float], samples_per_s: Sequence[float],
               time_s: Sequence[float], price_per_device_hour: float
               ) -> list[dict[str, Any]]:
    """One row per run: throughput, time, both efficiencies, the marginal gains of
    throughput and time, the cost of the run and its ratio to the first run's."""
    ex = efficiency(devices, samples_per_s)
    et = efficiency(devices, time_s, kind="time")
    gx = marginal_gain(devices, samples_per_s)
    gt = marginal_gain(devices, time_s, kind="time")
    costs = [cost_per_run(n, t, price_per_device_hour) for n, t in zip(devices, time_s)]
    return [{"devices": n, "samples_per_s": x, "time_s": t, "efficiency": e1,
             "time_efficiency": e2, "gain_throughput": g1, "gain_time": g2,
             "cost": c, "cost_ratio": c / costs[0]}
            for n, x, t, e1, e2, g1, g2, c in zip(devices, samples_per_s, time_s, ex,
                                                  et, gx, gt, costs)]
