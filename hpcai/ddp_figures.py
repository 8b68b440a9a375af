"""Figures of chapter 12: where each rank's all-reduce ran, and the bucket-size sweep.

* :func:`timeline_lanes` turns one rank's trace rows (:func:`hpcai.trace.trace_events`)
  into the spans of a step: ``forward``, ``backward`` (its computing part, up to the
  ``grad_sync`` label), ``grad_sync`` (the wait for the gradients, or naive's whole
  exchange), ``optimizer``, and the all-reduces that gloo ran on its own thread.
* :func:`draw_ddp_timeline` draws those lanes for several ranks and implementations,
  one panel per implementation, each rank's clock starting at its first recorded step.
* :func:`draw_bucket_sweep` draws the step time of the library's DDP and of the
  hand-written bucketed one against the bucket cap, with the number of buckets.

Both draw only from the rows they are given, so the same traces give the same figure,
byte for byte, through :func:`hpcai.plotting.savefig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["LANES", "draw_bucket_sweep", "draw_ddp_timeline", "timeline_lanes"]

LANES = ("forward", "backward", "grad_sync", "optimizer", "all-reduce")
"""The lanes of one rank, top to bottom (the first four on the main thread)."""


def timeline_lanes(events: Sequence[Mapping[str, Any]], comm: str = "gloo:all_reduce"
                   ) -> dict[str, list[tuple[float, float]]]:
    """``{lane: [(start_ms, width_ms), ...]}`` for one rank, times from the start of its
    first ``ProfilerStep`` (or its first event). ``backward`` is cut at the
    ``grad_sync`` label inside it, so that its bar is the computing part only."""
    steps = [e["ts"] for e in events if str(e["name"]).startswith("ProfilerStep")]
    t0 = min(steps) if steps else min((e["ts"] for e in events), default=0.0)
    syncs = [e for e in events if e["name"] == "grad_sync"]
    out: dict[str, list[tuple[float, float]]] = {lane: [] for lane in LANES}

    def add(lane: str, start: float, end: float) -> None:
        if end > start:
            out[lane].append(((start - t0) / 1e3, (end - start) / 1e3))

    for e in sorted(events, key=lambda e: (e["ts"], e["name"])):
        name = e["name"]
        if name in ("forward", "optimizer") and e.get("level") == 0:
            add(name, e["ts"], e["end"])
        elif name == "grad_sync":
            add(name, e["ts"], e["end"])
        elif name == "backward" and e.get("level") == 0:
            cut = min((g["ts"] for g in syncs if e["ts"] <= g["ts"] < e["end"]),
                      default=e["end"])
            add("backward", e["ts"], cut)
        elif name == comm:
            add("all-reduce", e["ts"], e["end"])
    return out


def draw_ddp_timeline(axes: Sequence[Any],
                      traces: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
                      overlap: Mapping[str, Sequence[float | None]] | None = None
                      ) -> None:
    """One panel per implementation (``traces[impl]`` = the rows of each rank's
    trace, rank 0 first); in each, every rank's lanes, rank 0 on top. ``overlap``
    (per impl, per rank) goes into the panel's title."""
    from .plotting import PALETTE

    colors = {"forward": PALETTE["compute"], "backward": PALETTE["memory"],
              "grad_sync": PALETTE["model"], "optimizer": PALETTE["coordination"],
              "all-reduce": PALETTE["network"]}
    for ax, (impl, ranks) in zip(axes, traces.items()):
        labels = []
        for r, events in enumerate(ranks):
            lanes = timeline_lanes(events)
            for j, lane in enumerate(LANES):
                y = r * (len(LANES) + 1) + j
                ax.broken_barh(lanes[lane], (y - 0.4, 0.8), facecolors=colors[lane],
                               edgecolors="white", linewidth=0.3)
                labels.append((y, f"rank {r} {lane}"))
        ax.set_yticks([y for y, _ in labels], [t for _, t in labels], fontsize=7)
        ax.set_ylim(max(y for y, _ in labels) + 0.7, -0.7)
        title = impl
        if overlap and overlap.get(impl):
            shown = ", ".join("n/a" if v is None else f"{100 * v:.0f} %"
                              for v in overlap[impl])
            title += f" (all-reduce time overlapping backward, per rank: {shown})"
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(False)
    axes[-1].set_xlabel("time since the rank's first recorded step (ms)")


def draw_bucket_sweep(ax: Any, sweep: Sequence[Mapping[str, Any]]) -> Any:
    """Step time (ms, median with IQR bars) against the bucket cap (MiB, log scale) for
    ``torch`` and ``bucketed``; the number of buckets on a second axis. Returns it."""
    from .plotting import PALETTE

    caps = [float(s["bucket_mb"]) for s in sweep]
    for impl, color, marker in (("torch", PALETTE["compute"], "o"),
                                ("bucketed", PALETTE["memory"], "s")):
        med = [1e3 * float(s[f"{impl}_step_median_s"]) for s in sweep]
        iqr = [1e3 * float(s[f"{impl}_step_iqr_s"]) for s in sweep]
        ax.errorbar(caps, med, yerr=[[i / 2 for i in iqr], [i / 2 for i in iqr]],
                    color=color, marker=marker, capsize=2,
                    label="DistributedDataParallel" if impl == "torch" else
                    "bucketed by hand")
    ax.set_xscale("log", base=2)
    ax.set_xticks(caps, [f"{c:g}" for c in caps])
    ax.minorticks_off()
    ax.set_xlabel("bucket cap (MiB)")
    ax.set_ylabel("step time, median (ms)")
    ax.set_ylim(bottom=0)
    twin = ax.twinx()
    twin.plot(caps, [int(s["n_buckets"]) for s in sweep], color=PALETTE["model"],
              linestyle=":", marker=".", label="buckets (by hand)")
    twin.set_ylabel("buckets per step")
    twin.set_ylim(bottom=0)
    twin.grid(False)
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower left")
    return twin
