"""The book's five structural figures, drawn by code.

Each ``draw_*`` function returns a matplotlib figure; :func:`draw` saves all five as SVG with
``hpcai.savefig`` so the bytes repeat from one build to the next.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch

from hpcai.plotting import PALETTE, savefig, use_style

PARTS = [  # (part, layer, chapters, colour)
    ("Part I", "Infrastructure", "1 Supercomputing basics · 2 Building blocks · 3 Software environment",
     PALETTE["storage"]),
    ("Part II", "Parallel execution", "4 MPI · 5 CUDA with numba · 6 Distributed GPUs and collectives",
     PALETTE["network"]),
    ("Part III", "Intelligence abstraction", "7 Networks as computation · 8 Training · 9 PyTorch from the system",
     PALETTE["compute"]),
    ("Part IV", "Scalability", "10 Parallel training · 11 One device, efficiently · 12 DDP at scale",
     PALETTE["memory"]),
    ("Part V", "Language abstraction", "13 LLM anatomy and cost · 14 Offline LLM workflow · 15 Scaling LLM training",
     PALETTE["coordination"]),
]

LENSES = [  # (number, name, question, chapter where it is named)
    (1, "Amortization\nof overheads", "Is the fixed cost spread\nover enough useful work?", "named in ch. 5"),
    (2, "Hardware-\nsoftware\nco-design", "Does the software stack\nuse what the hardware has?", "named in ch. 6"),
    (3, "Balanced\npipelines", "Which stage is slowest,\nand who waits for it?", "named in ch. 11"),
    (4, "Scale must\nserve purpose", "Is more hardware buying\ntime, cost or nothing?", "named in ch. 12"),
]

STACK = [  # execution flow of a distributed training job, top (user) to bottom (hardware)
    ("sbatch job.sh", "scheduler queues the job, grants N nodes x G GPUs", "SLURM", "storage"),
    ("srun", "starts one launcher per node, sets SLURM_* variables", "SLURM", "storage"),
    ("torchrun", "spawns G workers per node, sets RANK / WORLD_SIZE, rendezvous", "PyTorch", "coordination"),
    ("Trainer / training loop", "data loading, forward, backward, optimizer step", "Hugging Face / PyTorch", "compute"),
    ("DistributedDataParallel", "buckets gradients, overlaps all-reduce with backward", "PyTorch", "compute"),
    ("NCCL (GPU) / gloo (CPU)", "ring and tree collectives over the chosen transport",
     "communication library", "network"),
    ("Hardware", "GPUs, HBM, NVLink/PCIe, InfiniBand, CPUs, storage", "node and fabric", "memory"),
]

TECH = [  # technology -> chapters where the reader runs it
    ("BLAS / NumPy", [1, 3, 5, 7]),
    ("numba (CPU)", [1, 2, 3, 5]),
    ("numba.cuda", [5]),
    ("gcc / OpenMP", [1, 3]),
    ("SLURM", [3, 4, 12, 14]),
    ("Containers", [3]),
    ("MPI (mpi4py)", [2, 4]),
    ("torch.distributed", [4, 6, 12]),
    ("NCCL / gloo", [6, 12, 15]),
    ("PyTorch", [7, 8, 9, 10, 11]),
    ("torch.compile / AMP", [11, 15]),
    ("DDP / FSDP", [10, 12, 15]),
    ("Hugging Face", [13, 14, 15]),
]


def _box(ax, x, y, w, h, text, color, *, fontsize=10, alpha=0.18, weight="normal", ha="center"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=color, alpha=alpha, edgecolor=color, linewidth=1.5))
    tx = x + w / 2 if ha == "center" else x + 0.15
    ax.text(tx, y + h / 2, text, ha=ha, va="center", fontsize=fontsize, weight=weight,
            color=PALETTE["ink"])


def _canvas(w: float, h: float, xlim: float, ylim: float):
    fig, ax = plt.subplots(figsize=(w, h))
    ax.set_xlim(0, xlim)
    ax.set_ylim(0, ylim)
    ax.axis("off")
    return fig, ax


def draw_scope():
    """Figure 1: where the book sits: computing > supercomputing, AI training at scale, LLMs."""
    fig, ax = _canvas(7.5, 5.0, 10, 6.6)
    _box(ax, 0.1, 0.1, 9.8, 6.4, "", PALETTE["model"], alpha=0.08)
    ax.text(0.4, 6.15, "Computing", fontsize=12, weight="bold", color=PALETTE["ink"])
    _box(ax, 0.6, 0.5, 6.0, 5.2, "", PALETTE["compute"], alpha=0.12)
    ax.text(0.9, 5.35, "Supercomputing (HPC)", fontsize=11, weight="bold")
    ax.text(0.9, 4.9, "nodes, interconnects, schedulers,\nMPI, accelerators", fontsize=9, va="top")
    _box(ax, 4.0, 1.0, 5.5, 4.0, "", PALETTE["coordination"], alpha=0.12)
    ax.text(7.6, 4.6, "Artificial\nintelligence", fontsize=11, weight="bold", ha="center")
    _box(ax, 4.2, 1.3, 2.3, 3.0, "", PALETTE["measured"], alpha=0.16)
    ax.text(5.35, 3.75, "AI training\nat scale", ha="center", fontsize=10, weight="bold")
    _box(ax, 4.45, 1.6, 1.8, 1.2, "Large\nlanguage\nmodels", PALETTE["memory"], alpha=0.3,
         fontsize=9)
    ax.text(8.0, 2.0, "inference,\ndeployment, edge:\ncontext only", fontsize=8.5, ha="center",
            color=PALETTE["model"], style="italic")
    ax.annotate("the book's centre:\ntraining as a\nsupercomputing workload", xy=(5.3, 3.1),
                xytext=(1.2, 1.4), fontsize=9, arrowprops={"arrowstyle": "->",
                                                            "color": PALETTE["ink"]})
    return fig


def draw_layers():
    """Figure 2: five layers as a stack, each with its part and chapters."""
    fig, ax = _canvas(8.4, 5.2, 10.6, 7.2)
    for i, (part, layer, chapters, color) in enumerate(PARTS):
        y = 0.3 + i * 1.2
        _box(ax, 0.2, y, 9.6, 1.05, "", color, alpha=0.2)
        ax.text(0.45, y + 0.68, f"{part}  ·  {layer}", fontsize=11, weight="bold", va="center")
        ax.text(0.45, y + 0.3, chapters, fontsize=8.6, va="center")
    ax.text(5.0, 6.6, "Beyond the layers: 16 cross-cutting patterns · 17 what comes next",
            ha="center", fontsize=9.5, style="italic")
    ax.annotate("", xy=(10.1, 6.2), xytext=(10.1, 0.3),
                arrowprops={"arrowstyle": "->", "color": PALETTE["model"], "lw": 1.5})
    ax.text(10.25, 3.3, "abstraction rises", rotation=90, ha="left", va="center", fontsize=8.5,
            color=PALETTE["model"])
    return fig


def draw_lenses():
    """Figure 3: the four diagnostic lenses."""
    fig, ax = _canvas(8.6, 3.4, 12, 4.6)
    colors = [PALETTE[k] for k in ("compute", "network", "memory", "coordination")]
    for (num, name, question, where), color, x in zip(LENSES, colors, (1.5, 4.5, 7.5, 10.5)):
        ax.add_patch(Circle((x, 2.9), 1.25, facecolor=color, alpha=0.16, edgecolor=color, lw=2))
        ax.add_patch(Circle((x, 2.9), 1.25, facecolor="none", edgecolor=color, lw=5, alpha=0.35))
        ax.text(x, 3.35, f"Lens {num}", ha="center", fontsize=9, color=color, weight="bold")
        ax.text(x, 2.75, name, ha="center", va="center", fontsize=10, weight="bold")
        ax.text(x, 1.05, question, ha="center", va="center", fontsize=8.5)
        ax.text(x, 0.3, where, ha="center", fontsize=8, style="italic", color=PALETTE["model"])
    return fig


def draw_execution():
    """Figure 4: the full-stack execution model of one distributed training step."""
    fig, ax = _canvas(8.6, 7.0, 12, 9.8)
    h, gap = 0.92, 0.3
    for i, (name, what, owner, color) in enumerate(STACK):
        y = 8.6 - (i + 1) * (h + gap) + gap
        _box(ax, 0.3, y, 3.7, h, name, PALETTE[color], alpha=0.25, weight="bold", fontsize=10)
        ax.text(4.3, y + h * 0.62, what, fontsize=9, va="center")
        ax.text(4.3, y + h * 0.25, owner, fontsize=8, va="center", style="italic",
                color=PALETTE["model"])
        if i < len(STACK) - 1:
            ax.add_patch(FancyArrowPatch((2.15, y), (2.15, y - gap), arrowstyle="-|>",
                                         mutation_scale=12, color=PALETTE["ink"]))
    ax.text(6.0, 9.3, "architecture: who does what (each box is a layer)   ·   "
            "execution flow: what happens, in order (follow the arrows)",
            fontsize=8.5, ha="center", va="center", color=PALETTE["ink"],
            bbox={"boxstyle": "round", "facecolor": PALETTE["light"], "edgecolor": "none"})
    return fig


def draw_technologies():
    """Figure 5: which technology the reader runs in which chapter."""
    chapters = list(range(1, 16))
    fig, ax = plt.subplots(figsize=(8.6, 4.8))
    for row, (_tech, used) in enumerate(TECH):
        ax.scatter(used, [row] * len(used), s=70, color=PALETTE["compute"], zorder=3)
    ax.set_yticks(range(len(TECH)), [t for t, _ in TECH])
    ax.set_xticks(chapters, [str(c) for c in chapters])
    ax.set_xlim(0.4, 15.6)
    ax.set_ylim(len(TECH) - 0.5, -0.5)
    ax.set_xlabel("chapter")
    for start, end, part, color in ((0.5, 3.5, "I", "storage"), (3.5, 6.5, "II", "network"),
                                    (6.5, 9.5, "III", "compute"), (9.5, 12.5, "IV", "memory"),
                                    (12.5, 15.5, "V", "coordination")):
        ax.axvspan(start, end, color=PALETTE[color], alpha=0.08, lw=0)
        ax.text((start + end) / 2, -0.9, f"Part {part}", ha="center", fontsize=9,
                color=PALETTE[color], weight="bold")
    ax.grid(True, alpha=0.25)
    return fig


FIGURES = {
    "scope": draw_scope,
    "layers": draw_layers,
    "lenses": draw_lenses,
    "execution": draw_execution,
    "technologies": draw_technologies,
}


def draw(outdir: Path) -> list[Path]:
    """Draw the five structural figures into ``outdir`` as SVG; return their paths."""
    use_style()
    paths = []
    for name, make in FIGURES.items():
        with plt.rc_context({"axes.grid": False}):
            fig = make()
        paths.append(savefig(fig, Path(outdir) / f"{name}.svg"))
        plt.close(fig)
    return paths
