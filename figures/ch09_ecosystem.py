"""Chapter 9 figure: the distributed-training ecosystem placed on the book's layers.

One column per system (PyTorch DDP, FSDP/FSDP2, DeepSpeed, Megatron-LM, JAX, Horovod) and one
row per layer, from the hardware at the bottom to launch and orchestration at the top. Each
cell says what the system uses or provides at that layer; the parallelism row marks which of
the four strategies (data, ZeRO-style sharding, tensor, pipeline) each system provides. The
cells are drawn from the tables below, and every entry is cited in chapter 9's text or the
figure's caption, so the figure and the page cannot drift apart silently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch, Rectangle

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hpcai.plotting import PALETTE, savefig, use_style  # noqa: E402

SYSTEMS = ["PyTorch\nDDP", "PyTorch\nFSDP / FSDP2", "DeepSpeed\n(ZeRO)", "Megatron-LM",
           "JAX\n(jit / shard_map)", "Horovod"]

# layer name, colour key; listed bottom (hardware) to top (launch)
LAYERS = [
    ("Hardware", "memory"),
    ("Communication\nlibrary", "network"),
    ("Framework\nruntime", "compute"),
    ("Parallelism\nprovided", "coordination"),
    ("Launch and\norchestration", "storage"),
]

# per system, one text per layer above the hardware: comm, runtime, (parallelism), launch
CELLS = {
    "comm": ["NCCL (GPU)\ngloo (CPU)\nMPI (optional)",
             "NCCL / gloo\nall-gather,\nreduce-scatter",
             "NCCL via\ntorch.distributed", "NCCL via\ntorch.distributed",
             "XLA compiles the\ncollectives; NCCL\non NVIDIA GPUs",
             "NCCL for GPU\nall-reduce; MPI or\ngloo to coordinate"],
    "runtime": ["PyTorch eager;\nautograd hooks,\ngradient buckets",
                "PyTorch eager;\nhooks gather and\nfree parameters",
                "PyTorch;\nwraps model\nand optimiser", "PyTorch;\nparallel layers\nin the model",
                "tracing to XLA;\nthe compiler\npartitions",
                "TensorFlow, Keras,\nPyTorch, MXNet;\nwraps optimiser"],
    "launch": ["torchrun\n(one process\nper GPU)", "torchrun", "deepspeed\n(hostfile)\nor mpirun",
               "torchrun", "one process per\nhost; srun or\nmpirun", "horovodrun\nor mpirun"],
}

STRATEGIES = [("D", "data"), ("Z", "ZeRO sharding"), ("T", "tensor"), ("P", "pipeline")]
PROVIDES = {  # system index -> strategies it provides itself
    0: "D", 1: "DZ", 2: "DZP", 3: "DZTP", 4: "DZT", 5: "D",
}
HARDWARE = ("CPUs and GPUs (HBM)  ·  NVLink / PCIe inside a node  ·  "
            "InfiniBand / Ethernet between nodes")
SCHEDULER = "SLURM (sbatch, srun) allocates the nodes and starts one launcher per node"


def _cell(ax, x, y, w, h, text, colour, *, fontsize=7.6, alpha=0.16):
    ax.add_patch(FancyBboxPatch((x + 0.04, y + 0.05), w - 0.08, h - 0.1,
                                boxstyle="round,pad=0.0,rounding_size=0.08",
                                facecolor=colour, alpha=alpha, edgecolor=colour, linewidth=1.0))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize,
            color=PALETTE["ink"], linespacing=1.25)


def draw_ecosystem():
    """The map: systems as columns, the book's layers as rows."""
    n = len(SYSTEMS)
    label_w, col_w = 1.75, 1.72
    heights = [0.62, 1.05, 1.05, 0.95, 0.85]  # per layer, bottom to top
    top_extra = 0.62  # the SLURM band above launch
    width = label_w + n * col_w
    ys = [0.0]
    for h in heights:
        ys.append(ys[-1] + h)
    total = ys[-1] + top_extra + 0.75
    fig, ax = plt.subplots(figsize=(10.0, 6.2))
    ax.set_xlim(0, width)
    ax.set_ylim(-0.4, total)
    ax.axis("off")

    for i, (name, colour) in enumerate(LAYERS):
        ax.add_patch(Rectangle((0, ys[i]), width, heights[i], facecolor=PALETTE[colour],
                               alpha=0.05, edgecolor="none"))
        ax.text(0.08, ys[i] + heights[i] / 2, name, ha="left", va="center", fontsize=8.6,
                weight="bold", color=PALETTE[colour])

    # hardware: one band under every system
    _cell(ax, label_w, ys[0], n * col_w, heights[0], HARDWARE, PALETTE["memory"],
          fontsize=8.2)
    # SLURM: one band over every launcher
    y_s = ys[-1]
    _cell(ax, label_w, y_s + 0.04, n * col_w, top_extra - 0.04, SCHEDULER,
          PALETTE["storage"], fontsize=8.2, alpha=0.24)
    ax.text(0.08, y_s + top_extra / 2, "Scheduler", ha="left", va="center", fontsize=8.6,
            weight="bold", color=PALETTE["storage"])

    strat_colour = {"D": "compute", "Z": "memory", "T": "network", "P": "measured"}
    for j, system in enumerate(SYSTEMS):
        x = label_w + j * col_w
        ax.text(x + col_w / 2, total - 0.38, system, ha="center", va="center", fontsize=9,
                weight="bold", color=PALETTE["ink"])
        _cell(ax, x, ys[1], col_w, heights[1], CELLS["comm"][j], PALETTE["network"])
        _cell(ax, x, ys[2], col_w, heights[2], CELLS["runtime"][j], PALETTE["compute"])
        _cell(ax, x, ys[4], col_w, heights[4], CELLS["launch"][j], PALETTE["storage"])
        # parallelism: four chips, filled where provided
        chip_w = (col_w - 0.3) / 4
        for k, (letter, _name) in enumerate(STRATEGIES):
            cx = x + 0.15 + k * chip_w
            on = letter in PROVIDES[j]
            colour = PALETTE[strat_colour[letter]]
            ax.add_patch(FancyBboxPatch((cx + 0.03, ys[3] + 0.25), chip_w - 0.06, 0.45,
                                        boxstyle="round,pad=0.0,rounding_size=0.06",
                                        facecolor=colour if on else "white",
                                        alpha=0.85 if on else 1.0, edgecolor=colour,
                                        linewidth=1.0, linestyle="-" if on else ":"))
            ax.text(cx + chip_w / 2, ys[3] + 0.475, letter, ha="center", va="center",
                    fontsize=8.5, weight="bold",
                    color="white" if on else PALETTE["model"])
    legend = "   ".join(f"{letter} = {name}" for letter, name in STRATEGIES)
    ax.text(label_w + n * col_w / 2, ys[3] + 0.12, legend + "   (filled: the system "
            "provides it; dotted: it does not)", ha="center", va="center", fontsize=7.4,
            color=PALETTE["model"], style="italic")
    ax.text(width / 2, -0.2, "abstraction rises upwards; each column is one system, each row "
            "one layer of the book", ha="center", va="center", fontsize=7.6,
            color=PALETTE["model"], style="italic")
    return fig


def draw(outdir: Path) -> list[Path]:
    """Save the chapter's code-drawn figure as SVG into ``outdir``."""
    use_style()
    with plt.rc_context({"axes.grid": False}):
        fig = draw_ecosystem()
    path = savefig(fig, Path(outdir) / "ch09_ecosystem.svg")
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    for p in draw(ROOT / "figures" / "generated"):
        print(p)
