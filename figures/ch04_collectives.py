"""Chapter 4 figures: what each MPI collective does, and the ring all-reduce step by step.

Both figures are drawn from data, not by hand:

* :func:`draw_collective` draws one collective from the before/after buffers of every rank, in
  the format of :mod:`hpcai.mpi_reference` (``(p, k)`` integers per rank, rank ``r`` block
  ``j`` holding ``100 r + 10 j + i``, ``-1`` for an empty slot), which
  ``scripts/bench/mpi_collectives.py`` also returns. The notebook feeds it buffers that MPI
  really produced; :func:`draw` feeds it the NumPy reference.
* :func:`ring_states` simulates the ring all-reduce and records, after every step, which ranks'
  contributions each chunk on each rank holds; :func:`draw_ring` draws that table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hpcai.plotting import PALETTE, savefig, use_style  # noqa: E402

RANK_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3",
                "#8c8c8c", "#ccb974"]
LETTERS = "abcdefgh"
REDUCING = ("reduce", "allreduce", "reduce_scatter")
TITLES = {"bcast": "Broadcast (root 0)", "scatter": "Scatter (root 0)",
          "gather": "Gather (root 0)", "reduce": "Reduce, sum (root 0)",
          "allreduce": "All-reduce, sum", "allgather": "All-gather",
          "reduce_scatter": "Reduce-scatter, sum", "alltoall": "All-to-all"}


def _cell(value: int, was: int, op: str, slot: int) -> tuple[str, str]:
    """Label and colour of one slot: an input block ``a0`` (rank colour) or a sum ``Σ0``."""
    if value < 0:
        return "", "white"
    if op in REDUCING and value != was:
        return f"Σ{slot}", PALETTE["measured"]
    r, j = value // 100, (value // 10) % 10
    return f"{LETTERS[r % len(LETTERS)]}{j}", RANK_COLOURS[r % len(RANK_COLOURS)]


def _grid(ax, x0: float, buffers, op: str, reference=None) -> None:
    """Draw p rows (ranks) x p slots starting at x = x0; first element of each block labels it."""
    p = len(buffers)
    for r, buf in enumerate(buffers):
        y = p - 1 - r
        for j, block in enumerate(buf):
            was = reference[r][j][0] if reference is not None else block[0]
            label, colour = _cell(block[0], was, op, j)
            ax.add_patch(Rectangle((x0 + j, y), 0.92, 0.85, facecolor=colour,
                                   edgecolor=PALETTE["model"], linewidth=0.6,
                                   alpha=0.85 if colour != "white" else 1.0))
            ax.text(x0 + j + 0.46, y + 0.42, label, ha="center", va="center", fontsize=8,
                    color="white" if colour != "white" else PALETTE["ink"])


def draw_collective(ax, op: str, before, after) -> None:
    """One panel: every rank's buffer before (left) and after (right) the collective ``op``."""
    p = len(before)
    _grid(ax, 0.0, before, op)
    _grid(ax, p + 1.5, after, op, reference=before)
    for r in range(p):
        ax.text(-0.2, p - 1 - r + 0.42, f"rank {r}", ha="right", va="center", fontsize=7.5)
    ax.annotate("", xy=(p + 1.3, p / 2), xytext=(p + 0.1, p / 2),
                arrowprops={"arrowstyle": "->", "color": PALETTE["ink"], "lw": 1.2})
    ax.text(p / 2, p + 0.15, "before", ha="center", fontsize=8, color=PALETTE["model"])
    ax.text(p + 1.5 + p / 2, p + 0.15, "after", ha="center", fontsize=8,
            color=PALETTE["model"])
    ax.set_title(TITLES.get(op, op), fontsize=9.5)
    ax.set_xlim(-1.6, 2 * p + 1.7)
    ax.set_ylim(-0.2, p + 0.7)
    ax.set_aspect("equal")
    ax.axis("off")


def draw_all_collectives(checks: dict, ops=None):
    """A 4 x 2 grid of panels, one per collective, from ``{op: {"before", "after"}}``."""
    ops = list(ops or checks)
    rows = (len(ops) + 1) // 2
    fig, axes = plt.subplots(rows, 2, figsize=(9.0, 2.1 * rows))
    for ax, op in zip(axes.flat, ops, strict=False):
        draw_collective(ax, op, checks[op]["before"], checks[op]["after"])
    for ax in list(axes.flat)[len(ops):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def ring_states(p: int) -> list[tuple[str, list[list[frozenset[int]]]]]:
    """Simulate a ring all-reduce on ``p`` ranks; return (caption, state) after every step.

    ``state[r][c]`` is the set of ranks whose contribution chunk ``c`` on rank ``r`` contains.
    The schedule is the one of ``hpcai.allreduce.ring_allreduce_``.
    """
    state = [[frozenset({r}) for _ in range(p)] for r in range(p)]
    out = [("start", [row[:] for row in state])]
    for s in range(p - 1):  # reduce-scatter: receive chunk (r-s-1) from the left, add
        new = [row[:] for row in state]
        for r in range(p):
            left, c = (r - 1) % p, (r - s - 1) % p
            new[r][c] = state[r][c] | state[left][c]
        state = new
        out.append((f"reduce-scatter {s + 1}", [row[:] for row in state]))
    for s in range(p - 1):  # all-gather: receive finished chunk (r-s) from the left, copy
        new = [row[:] for row in state]
        for r in range(p):
            left, c = (r - 1) % p, (r - s) % p
            new[r][c] = state[left][c]
        state = new
        out.append((f"all-gather {s + 1}", [row[:] for row in state]))
    return out


def draw_ring(p: int = 4):
    """The ring all-reduce as a strip of small tables: shade = share of ranks already summed."""
    states = ring_states(p)
    fig, axes = plt.subplots(1, len(states), figsize=(1.35 * len(states), 2.2))
    for ax, (caption, state) in zip(axes, states, strict=True):
        for r in range(p):
            for c in range(p):
                share = len(state[r][c]) / p
                colour = PALETTE["measured"] if share == 1 else PALETTE["compute"]
                ax.add_patch(Rectangle((c, p - 1 - r), 0.9, 0.9, facecolor=colour,
                                       alpha=0.15 + 0.75 * share, edgecolor="none"))
                ax.text(c + 0.45, p - 1 - r + 0.45, str(len(state[r][c])), ha="center",
                        va="center", fontsize=7)
        ax.set_xlim(0, p)
        ax.set_ylim(0, p)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(caption, fontsize=7.5)
    fig.suptitle(f"Ring all-reduce on {p} ranks: rows = ranks, columns = chunks, "
                 "number = contributions summed", fontsize=9)
    fig.tight_layout()
    return fig


def _reference_checks(p: int = 4) -> dict:
    from hpcai.mpi_reference import OPS, initial, reference

    checks = {}
    for op in OPS:
        before = [initial(op, r, p, 1) for r in range(p)]
        after = reference(op, before)
        checks[op] = {"before": [b.tolist() for b in before],
                      "after": [a.tolist() for a in after]}
    return checks


def draw(outdir: Path) -> list[Path]:
    """Save the chapter's code-drawn figures as SVG into ``outdir``."""
    use_style()
    outdir = Path(outdir)
    paths = []
    fig = draw_all_collectives(_reference_checks(4))
    paths.append(savefig(fig, outdir / "ch04_collectives.svg"))
    plt.close(fig)
    fig = draw_ring(4)
    paths.append(savefig(fig, outdir / "ch04_ring.svg"))
    plt.close(fig)
    return paths


if __name__ == "__main__":
    for path in draw(ROOT / "figures" / "generated"):
        print(path)
