"""Energy of a run: measured where the machine exposes counters, modelled where not.

Three sources, and every result says which one it came from:

* **RAPL** (Running Average Power Limit): Linux's ``powercap`` framework exposes the
  processor's energy counters as files, one directory per domain
  (``/sys/class/powercap/intel-rapl:0`` for a package, ``intel-rapl:0:0`` for a part of
  it). ``energy_uj`` is a running total in microjoules that wraps to zero after
  ``max_energy_range_uj``. AMD processors report through the same driver. Since 2020 the
  counters are often readable by root only; a virtual machine usually has none at all.
  :func:`rapl_domains` lists what is there, :class:`RaplMeter` measures an interval.
* **NVML** on a GPU: the board's power draw in watts, read with
  ``torch.cuda.power_draw()`` (milliwatts, through NVML) where that works, else with
  ``nvidia-smi --query-gpu=power.draw``. :class:`GpuPowerSampler` samples it on a thread
  and integrates the samples over the interval.
* **the model**: ``joules = power_W x seconds x PUE`` (:func:`model_joules`), with the
  power an explicit assumption (:class:`PowerModel`: watts per busy core, plus a fixed
  share), never presented as a measurement.

:func:`probe` says what this machine exposes, in words and as a dict.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

POWERCAP = Path("/sys/class/powercap")

__all__ = ["POWERCAP", "GpuPowerSampler", "PowerModel", "RaplDomain", "RaplMeter",
           "carbon_kg", "energy_delta_uj", "gpu_power_w", "kwh", "model_joules",
           "probe", "rapl_domains"]


# ---------------------------------------------------------------- RAPL
@dataclass(frozen=True)
class RaplDomain:
    """One RAPL domain: its directory, name (``package-0``, ``core``, ``dram``...),
    counter range, whether it is a top-level (package) domain, and whether this user
    can read its counter."""

    path: Path
    name: str
    max_energy_range_uj: int
    top_level: bool
    readable: bool

    def read_uj(self) -> int:
        """The counter now, in microjoules (raises ``OSError`` if it cannot be read)."""
        return int((self.path / "energy_uj").read_text().strip())


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def rapl_domains(root: Path | str = POWERCAP) -> list[RaplDomain]:
    """Every RAPL domain under ``root`` (``intel-rapl:*`` directories, any depth).

    Returns an empty list when ``root`` does not exist (no powercap on this machine).
    A domain whose ``energy_uj`` cannot be read is listed with ``readable=False``."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for d in sorted(root.glob("intel-rapl:*")):
        if not (d / "energy_uj").exists() and not (d / "name").exists():
            continue
        name = _read_text(d / "name") or d.name
        rng = _read_text(d / "max_energy_range_uj")
        readable = _read_text(d / "energy_uj") is not None
        top = d.name.count(":") == 1  # intel-rapl:0 is a package, intel-rapl:0:0 a part
        found.append(RaplDomain(d, name, int(rng) if rng and rng.isdigit() else 0, top,
                                readable))
    return found


def energy_delta_uj(before: int, after: int, max_energy_range_uj: int) -> int:
    """Microjoules between two readings of one counter, allowing one wrap-around.

    The counter runs from 0 to ``max_energy_range_uj`` and starts again at 0; a reading
    lower than the one before means it wrapped once (intervals are kept short enough
    that it cannot wrap twice)."""
    if after >= before:
        return after - before
    if max_energy_range_uj <= 0:
        raise ValueError("the counter went backwards and its range is unknown")
    return max_energy_range_uj - before + after


class RaplMeter:
    """Energy of an interval from the top-level (package) RAPL domains.

    ``with RaplMeter() as m: work()`` then ``m.joules`` (sum over packages) and
    ``m.by_domain``. Only top-level domains are summed, because a package's counter
    already contains its cores and uncore. The counter is per package, not per process:
    whatever else runs on the machine is counted too."""

    def __init__(self, root: Path | str = POWERCAP) -> None:
        self.domains = [d for d in rapl_domains(root) if d.top_level and d.readable]
        self._start: dict[str, int] = {}
        self.by_domain: dict[str, float] = {}
        self.seconds = 0.0
        self._t0 = 0.0

    @property
    def available(self) -> bool:
        """True when at least one package counter can be read."""
        return bool(self.domains)

    def start(self) -> None:
        """Read every counter and the clock."""
        self._start = {str(d.path): d.read_uj() for d in self.domains}
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Read again; returns the joules since :meth:`start` (summed over packages)."""
        self.seconds = time.perf_counter() - self._t0
        self.by_domain = {}
        for d in self.domains:
            uj = energy_delta_uj(self._start[str(d.path)], d.read_uj(),
                                 d.max_energy_range_uj)
            self.by_domain[f"{d.path.name} ({d.name})"] = uj / 1e6
        return self.joules

    @property
    def joules(self) -> float:
        """Joules of the last interval, summed over the package domains."""
        return float(sum(self.by_domain.values()))

    def __enter__(self) -> RaplMeter:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------- GPU power (NVML)
def gpu_power_w(device: int = 0) -> tuple[float | None, str]:
    """The GPU's power draw now, in watts, and how it was read.

    First ``torch.cuda.power_draw()`` (NVML through PyTorch, milliwatts); else
    ``nvidia-smi --query-gpu=power.draw``; else ``(None, reason)``."""
    reasons = []
    try:
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.power_draw(device)) / 1e3, "torch.cuda.power_draw"
        reasons.append("torch: no CUDA device")
    except Exception as err:  # noqa: BLE001 - any failure means: try the next source
        reasons.append(f"torch.cuda.power_draw: {str(err).splitlines()[0][:80]}")
    exe = shutil.which("nvidia-smi")
    if exe is None:
        reasons.append("nvidia-smi not found")
        return None, "; ".join(reasons)
    try:
        out = subprocess.run([exe, "--query-gpu=power.draw", "--format=csv,noheader,"
                              "nounits", f"--id={device}"], capture_output=True,
                             text=True, timeout=10)
        return float(out.stdout.strip().splitlines()[0]), "nvidia-smi power.draw"
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        reasons.append(f"nvidia-smi: {err}")
        return None, "; ".join(reasons)


class GpuPowerSampler:
    """Samples the GPU's power on a thread and integrates it (trapezoids) to joules.

    ``with GpuPowerSampler(0.05) as s: work(); torch.cuda.synchronize()`` then
    ``s.joules``, ``s.mean_w``, ``s.method``. NVML's power reading is itself an average
    over a short window that the driver chooses, so intervals shorter than about a
    second are read as rough values."""

    def __init__(self, interval_s: float = 0.05, device: int = 0) -> None:
        self.interval_s = interval_s
        self.device = device
        self.samples: list[tuple[float, float]] = []
        self.method = "not started"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            w, method = gpu_power_w(self.device)
            self.method = method
            if w is not None:
                self.samples.append((time.perf_counter(), w))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> GpuPowerSampler:
        self._stop.clear()
        self.samples = []
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        w, method = gpu_power_w(self.device)
        if w is not None:
            self.samples.append((time.perf_counter(), w))

    @property
    def joules(self) -> float:
        """The integral of the sampled power over the sampled interval."""
        s = self.samples
        return float(sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1)
                         in zip(s, s[1:])))

    @property
    def mean_w(self) -> float | None:
        """The mean of the samples (None if there were none)."""
        if not self.samples:
            return None
        return sum(w for _, w in self.samples) / len(self.samples)


# ---------------------------------------------------------------- the model
@dataclass(frozen=True)
class PowerModel:
    """The power a run is assumed to draw, with every parameter visible.

    ``watts = fixed_w + busy_cores x watts_per_core``. The defaults are assumptions, not
    facts about any processor: set them from a datasheet or a wall-socket meter."""

    watts_per_core: float = 5.0
    fixed_w: float = 0.0
    label: str = "assumption: 5 W per busy core, no fixed share"
    notes: dict[str, str] = field(default_factory=dict)

    def watts(self, busy_cores: float) -> float:
        """The modelled power of ``busy_cores`` busy cores."""
        if busy_cores < 0:
            raise ValueError(f"busy_cores must be >= 0, got {busy_cores}")
        return self.fixed_w + busy_cores * self.watts_per_core

    def as_dict(self) -> dict[str, Any]:
        """The parameters, for a JSON record."""
        return asdict(self)


def model_joules(power_w: float, seconds: float, pue: float = 1.0) -> float:
    """Energy from the facility's side: ``power_W x seconds x PUE``.

    PUE (power usage effectiveness) is the facility's total power over the IT
    equipment's power, so 1.0 counts the machine alone and anything above adds cooling
    and power conversion."""
    if power_w < 0 or seconds < 0:
        raise ValueError(f"power and time must be >= 0, got {power_w} W, {seconds} s")
    if pue < 1.0:
        raise ValueError(f"a PUE is >= 1 by definition, got {pue}")
    return power_w * seconds * pue


def kwh(joules: float) -> float:
    """Joules in kilowatt-hours (1 kWh = 3.6e6 J)."""
    return joules / 3.6e6


def carbon_kg(joules: float, grams_per_kwh: float) -> float:
    """Emissions in kg CO2-equivalent for ``joules`` at a grid intensity in g/kWh."""
    return kwh(joules) * grams_per_kwh / 1e3


# ---------------------------------------------------------------- what is exposed
def probe(root: Path | str = POWERCAP, gpu: bool | None = None) -> dict[str, Any]:
    """What this machine exposes: RAPL domains (listed, readable), GPU power (read).

    ``gpu=None`` tries the GPU only when torch sees CUDA; ``summary`` is one line."""
    root = Path(root)
    doms = rapl_domains(root)
    if not root.is_dir():
        rapl = f"not exposed ({root} does not exist)"
    elif not doms:
        rapl = f"not exposed (no intel-rapl domains under {root})"
    elif not any(d.readable for d in doms):
        rapl = f"{len(doms)} domains listed, none readable by this user"
    else:
        rapl = f"{sum(d.readable for d in doms)} readable domains"
    if gpu is None:
        try:
            import torch

            gpu = bool(torch.cuda.is_available())
        except ImportError:
            gpu = False
    watts, method = gpu_power_w() if gpu else (None, "no GPU")
    gpu_text = f"{watts:.0f} W now via {method}" if watts is not None else (
        f"not exposed ({method})")
    return {"rapl": rapl, "rapl_domains": [{"name": d.name, "path": str(d.path),
                                            "readable": d.readable,
                                            "top_level": d.top_level} for d in doms],
            "rapl_available": any(d.readable and d.top_level for d in doms),
            "gpu_power_w": watts, "gpu_method": method,
            "summary": f"RAPL: {rapl}; GPU power: {gpu_text}"}
