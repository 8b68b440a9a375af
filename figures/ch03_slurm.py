"""Chapter 3 figure: SLURM's parts and the life of a job.

Left, who talks to whom: the client commands on a login node send requests to the controller
(``slurmctld``), which tells the ``slurmd`` of each allocated node to start the job's steps;
every message is signed by ``munge``, and finished jobs go to the accounting daemon. Right, the
states a job passes through, from ``PENDING`` to one of its end states, as ``squeue`` and
``scontrol show job`` report them. The boxes and arrows are drawn from the lists below, so
the figure and the text cannot drift apart silently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hpcai.plotting import PALETTE, savefig, use_style  # noqa: E402

# name: (x, y, width, height, label, colour key)
COMPONENTS = {
    "login": (0.0, 4.1, 3.0, 1.2, "login node\nsbatch  srun  squeue\nscancel  scontrol  sinfo",
              "model"),
    "ctld": (4.5, 4.1, 2.6, 1.2, "slurmctld\nqueue, node state,\nscheduler", "coordination"),
    "dbd": (8.5, 4.1, 2.2, 1.2, "slurmdbd\naccounting\n(sacct)", "storage"),
    "node1": (2.4, 0.9, 2.6, 1.6, "compute node\nslurmd\nstep 0: tasks 0, 1", "compute"),
    "node2": (6.2, 0.9, 2.6, 1.6, "compute node\nslurmd\nstep 0: tasks 2, 3", "compute"),
}
# (from, to, label)
MESSAGES = [
    ("login", "ctld", "submit, query,\ncancel"),
    ("ctld", "dbd", "job records"),
    ("ctld", "node1", "launch"),
    ("ctld", "node2", "launch"),
]
# job states: name -> (x, y); transitions as (from, to)
STATES = {
    "PENDING": (1.0, 4.0), "RUNNING": (1.0, 2.6), "COMPLETING": (1.0, 1.2),
    "COMPLETED": (3.6, 2.2), "FAILED": (3.6, 1.4), "TIMEOUT": (3.6, 0.6),
    "OUT_OF_MEMORY": (3.6, -0.2), "CANCELLED": (3.6, 4.0),
}
TRANSITIONS = [
    ("PENDING", "RUNNING"), ("RUNNING", "COMPLETING"), ("PENDING", "CANCELLED"),
    ("RUNNING", "CANCELLED"), ("COMPLETING", "COMPLETED"), ("COMPLETING", "FAILED"),
    ("COMPLETING", "TIMEOUT"), ("COMPLETING", "OUT_OF_MEMORY"),
]
END_COLOUR = {"COMPLETED": "network", "CANCELLED": "model"}


def _box(ax, x, y, w, h, text, colour, fontsize=8.5):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.03,rounding_size=0.12",
                                facecolor=colour, edgecolor=PALETTE["ink"], linewidth=0.8,
                                alpha=0.9))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize,
            color="white", linespacing=1.3)


def _arrow(ax, a, b, colour, text=None, rad=0.0):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=11, color=colour,
                                 linewidth=1.2, connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=2, shrinkB=2))
    if text:
        ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.12, text, ha="center", va="bottom",
                fontsize=7, color=PALETTE["ink"])


def _edge_points(src, dst):
    """Points on the borders of two component boxes, along the line between their centres."""
    (x1, y1, w1, h1, *_), (x2, y2, w2, h2, *_) = COMPONENTS[src], COMPONENTS[dst]
    c1, c2 = (x1 + w1 / 2, y1 + h1 / 2), (x2 + w2 / 2, y2 + h2 / 2)
    if abs(c1[1] - c2[1]) < 0.5:                      # side by side: leave from the sides
        return (x1 + w1, c1[1]), (x2, c2[1])
    return (c1[0], y1), (c2[0], y2 + h2)               # above and below


def draw_slurm():
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.6),
                                      gridspec_kw={"width_ratios": [1.75, 1]})
    for x, y, w, h, text, colour in COMPONENTS.values():
        _box(left, x, y, w, h, text, PALETTE[colour])
    for src, dst, text in MESSAGES:
        a, b = _edge_points(src, dst)
        _arrow(left, a, b, PALETTE["coordination"], text if src == "login" or dst == "dbd"
               else None)
    left.text(5.8, 3.25, "launch job steps", ha="center", fontsize=7.5)
    left.text(5.35, -0.05, "munge signs every message with a key shared by all nodes",
              ha="center", fontsize=7.5, color=PALETTE["measured"])
    left.set_xlim(-0.2, 10.9)
    left.set_ylim(-0.4, 5.6)
    left.axis("off")
    left.set_title("Who talks to whom", fontsize=11)

    for name, (x, y) in STATES.items():
        colour = PALETTE[END_COLOUR.get(name, "measured" if x > 2 else "coordination")]
        _box(right, x - 0.85, y - 0.28, 1.7, 0.56, name, colour, fontsize=7.5)
    for src, dst in TRANSITIONS:
        (x1, y1), (x2, y2) = STATES[src], STATES[dst]
        if x1 == x2:
            a, b = (x1, y1 - 0.28), (x2, y2 + 0.28)
        else:
            a, b = (x1 + 0.85, y1), (x2 - 0.85, y2)
        _arrow(right, a, b, PALETTE["ink"], rad=0.0)
    _arrow(right, (1.0, 4.75), (1.0, 4.28), PALETTE["ink"])
    right.text(1.15, 4.6, "sbatch", ha="left", va="center", fontsize=8)
    right.set_xlim(-0.1, 4.7)
    right.set_ylim(-0.7, 4.9)
    right.axis("off")
    right.set_title("The life of a job", fontsize=11)
    fig.tight_layout()
    return fig


def draw(outdir: Path) -> list[Path]:
    """Save the chapter's code-drawn figure as SVG into ``outdir``."""
    use_style()
    fig = draw_slurm()
    path = savefig(fig, Path(outdir) / "ch03_slurm.svg")
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    for p in draw(ROOT / "figures" / "generated"):
        print(p)
