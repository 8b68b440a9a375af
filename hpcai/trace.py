"""What a training step leaves behind: the profiler's trace and the autograd graph.

* :func:`trace_events` reads a Chrome trace exported by ``torch.profiler`` back into rows
  (name, start, duration, depth in the call tree, phase); :func:`self_times` and
  :func:`draw_timeline` summarise and draw them (chapters 5 and 9).
* :func:`grad_chain` walks the ``grad_fn`` / ``next_functions`` graph of a loss, and
  :class:`SavedTensors` counts the tensors autograd saves for the backward pass, through
  ``torch.autograd.graph.saved_tensors_hooks``; :func:`mlp_graph_bytes` is the same
  memory from the shapes alone (chapter 9).
"""

from __future__ import annotations

import json
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PHASES = ("forward", "backward", "optimizer")
"""The ``record_function`` labels of a training step, in the order a step runs them."""


def trace_events(path: str | Path) -> list[dict[str, Any]]:
    """Complete events (``ph == "X"``) of a Chrome trace, with their nesting depth on
    their thread (0: outermost) and the phase (forward, backward, optimizer) around them.

    ``level`` is the depth below the phase's label (0: the label itself; ``None``: outside
    every phase). An event on another thread than the labels (on a GPU, autograd runs the
    backward pass on a thread of its own) takes the phase whose label spans its start, at
    level ``depth + 1``."""
    data = json.loads(Path(path).read_text())
    raw = data["traceEvents"] if isinstance(data, dict) else data
    events = [e for e in raw if e.get("ph") == "X" and "dur" in e
              and e.get("cat") in ("cpu_op", "user_annotation")]
    events.sort(key=lambda e: (str(e["tid"]), e["ts"], -e["dur"]))
    out: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    tid = None
    for e in events:
        if e["tid"] != tid:
            stack, tid = [], e["tid"]
        while stack and e["ts"] >= stack[-1]["end"]:
            stack.pop()
        label = next((s for s in reversed(stack) if s["name"] in PHASES), None)
        row = {"name": e["name"], "cat": e["cat"], "tid": str(e["tid"]),
               "ts": e["ts"], "dur": e["dur"], "depth": len(stack),
               "phase": label["name"] if label else None,
               "level": len(stack) - label["depth"] if label else None,
               "end": e["ts"] + e["dur"]}
        if e["name"] in PHASES:
            row["phase"], row["level"] = e["name"], 0
        stack.append(row)
        out.append(row)
    labels = [r for r in out if r["name"] in PHASES]
    for r in out:
        if r["phase"] is None:
            span = next((lb for lb in labels if lb["tid"] != r["tid"]
                         and lb["ts"] <= r["ts"] < lb["end"]), None)
            if span is not None:
                r["phase"], r["level"] = span["name"], r["depth"] + 1
    t0 = min((e["ts"] for e in out), default=0.0)
    for e in out:
        e["ts"] -= t0
        e["end"] -= t0
    return out


def self_times(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Operators (``cat == "cpu_op"``) by self time: each event's duration less that of
    the events directly inside it on its thread. Rows ``{name, calls, self_us,
    total_us}``, largest self time first (ties by name)."""
    order = sorted(range(len(events)),
                   key=lambda i: (events[i]["tid"], events[i]["ts"], -events[i]["dur"]))
    own = [float(e["dur"]) for e in events]
    stack: list[int] = []
    tid = None
    for i in order:
        e = events[i]
        if e["tid"] != tid:
            stack, tid = [], e["tid"]
        while stack and e["ts"] >= events[stack[-1]]["end"]:
            stack.pop()
        if stack:
            own[stack[-1]] -= e["dur"]
        stack.append(i)
    calls: Counter = Counter()
    selfs: Counter = Counter()
    totals: Counter = Counter()
    for e, s in zip(events, own):
        if e["cat"] == "cpu_op":
            calls[e["name"]] += 1
            selfs[e["name"]] += s
            totals[e["name"]] += e["dur"]
    rows = [{"name": n, "calls": calls[n], "self_us": selfs[n], "total_us": totals[n]}
            for n in calls]
    return sorted(rows, key=lambda r: (-r["self_us"], r["name"]))


def phase_spans(events: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Duration (µs) of every occurrence of each phase label, in trace order."""
    return {p: [e["dur"] for e in sorted(events, key=lambda e: e["ts"])
                if e["name"] == p] for p in PHASES}


def draw_timeline(ax: Any, events: list[dict[str, Any]], *, max_depth: int = 3,
                  label_us: float | None = None) -> None:
    """Operators on a time axis (ms), one row per phase of the step.

    Each phase's row shows the operators its label called (``level`` 1) as bars, deeper
    calls (up to ``max_depth``) as thinner, paler bars inside them; ``ProfilerStep``
    markers form the top row. Operators of the first step longer than ``label_us`` are
    named above their bar.
    """
    from .plotting import PALETTE

    colors = {"forward": PALETTE["compute"], "backward": PALETTE["memory"],
              "optimizer": PALETTE["network"]}
    rows = ["step", *PHASES]
    steps = [(e["ts"] / 1e3, e["dur"] / 1e3) for e in events
             if e["name"].startswith("ProfilerStep")]
    first_end = 1e3 * (steps[0][0] + steps[0][1]) if steps else float("inf")
    span = max((e["end"] for e in events), default=1.0)
    free_from = {row: -1.0 for row in range(len(rows))}  # where the next label may start
    ax.broken_barh(steps, (-0.4, 0.8), facecolors=PALETTE["light"],
                   edgecolors=PALETTE["model"], linewidth=0.6)
    for row, phase in enumerate(PHASES, start=1):
        for e in (e for e in events if e["phase"] == phase):
            level = e["level"]
            if level == 0 or level > max_depth:
                continue
            height = 0.8 * (0.75 ** (level - 1))
            ax.broken_barh([(e["ts"] / 1e3, e["dur"] / 1e3)],
                           (row - height / 2, height), facecolors=colors[phase],
                           edgecolors="white", linewidth=0.3,
                           alpha=1.0 if level == 1 else 0.55)
            text = e["name"].replace("aten::", "").split(": ")[-1][:16]
            if (label_us is not None and level == 1 and e["dur"] >= label_us
                    and e["end"] <= first_end and e["ts"] >= free_from[row]):
                ax.text(e["ts"] / 1e3, row - 0.42, text, ha="left", va="bottom",
                        fontsize=6)
                free_from[row] = e["ts"] + (len(text) + 1) * span / 120
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(len(rows) - 0.3, -0.7)
    ax.set_xlabel("time since the first recorded step (ms)")
    ax.grid(False)


# ------------------------------------------------------------------ autograd
def grad_chain(root: Any) -> list[tuple[int, str]]:
    """The autograd graph below ``root`` (a ``grad_fn``), depth first, each node once:
    ``(depth, class name)`` rows in the order of ``next_functions``."""
    out: list[tuple[int, str]] = []
    seen: set[int] = set()

    def visit(fn: Any, depth: int) -> None:
        if fn is None or id(fn) in seen:
            return
        seen.add(id(fn))
        out.append((depth, type(fn).__name__))
        for child, _ in fn.next_functions:
            visit(child, depth + 1)

    visit(root, 0)
    return out


@dataclass
class SavedTensors:
    """Every tensor autograd saves for backward inside ``with SavedTensors() as s:``.

    The pack hook sees each save; it notes the tensor's shape, dtype, byte size and
    storage address, and hands autograd a detached alias of it, of which the record keeps
    only a weak reference: the record itself keeps nothing alive.
    """

    saved: list[dict[str, Any]] = field(default_factory=list)

    def __enter__(self) -> SavedTensors:
        import torch

        def pack(t: Any) -> Any:
            # Keep a detached alias (same storage, no grad_fn): the tensor itself would
            # tie a saved output to its own grad_fn, a cycle that outlives the graph.
            kept = t.detach()
            st = kept.untyped_storage()
            self.saved.append({"shape": tuple(t.shape), "dtype": str(t.dtype),
                               "bytes": t.numel() * t.element_size(),
                               "storage": st.data_ptr(), "storage_bytes": st.nbytes(),
                               "ref": weakref.ref(kept)})
            return kept

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)

    @property
    def count(self) -> int:
        return len(self.saved)

    @property
    def bytes(self) -> int:
        """Bytes of all saves, counted once per save (a tensor saved twice counts twice)."""
        return sum(s["bytes"] for s in self.saved)

    def unique(self, exclude: Any = ()) -> dict[int, int]:
        """Storage address -> bytes, each storage once, without those of ``exclude``
        (tensors the caller holds anyway: inputs, targets, parameters)."""
        skip = {t.untyped_storage().data_ptr() for t in exclude}
        return {s["storage"]: s["storage_bytes"] for s in self.saved
                if s["storage"] not in skip}

    def graph_bytes(self, exclude: Any = ()) -> int:
        """Memory that exists only because the graph saved it."""
        return sum(self.unique(exclude).values())

    def alive_bytes(self, exclude: Any = ()) -> int:
        """Of :meth:`graph_bytes`, the storages some saved tensor still keeps alive."""
        skip = {t.untyped_storage().data_ptr() for t in exclude}
        alive = {s["storage"]: s["storage_bytes"] for s in self.saved
                 if s["storage"] not in skip and s["ref"]() is not None}
        return sum(alive.values())


def mlp_graph_bytes(batch: int, width: int, depth: int, classes: int,
                    itemsize: int = 4) -> int:
    """Bytes an MLP's autograd graph keeps beyond its inputs and parameters: the output
    of every ReLU (``depth`` hidden layers of ``width``), the log-softmax of the logits
    that ``cross_entropy`` saves, and the loss's one-element normaliser ``total_weight``.
    The input, the targets and the weights are saved too, but the caller holds them."""
    return itemsize * (batch * (depth * width + classes) + 1)
