"""Chapter 2 figures: an accelerator node, and two network topologies drawn from wiring lists.

* :func:`draw_node` draws the blocks of a typical eight-GPU training node and the links between
  them (memory channels, PCIe, NVLink through NVSwitch, one network port per GPU).
* :func:`fat_tree` and :func:`dragonfly` build wiring lists (graphs as edge lists with
  positions); :func:`max_switch_hops` computes, by breadth-first search on the same lists, the
  number of switches on the longest shortest path between two end nodes, which the drawing
  shows in its title.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections import deque
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hpcai.plotting import PALETTE, savefig, use_style  # noqa: E402

Graph = dict  # {"pos": {name: (x, y)}, "kind": {name: "node"|"switch"}, "edges": [(a, b, cls)]}


# ------------------------------------------------------------------ topologies
def fat_tree(leaves: int = 4, spines: int = 4, nodes_per_leaf: int = 4) -> Graph:
    """Two-level folded Clos: every leaf switch connects to every spine switch."""
    g: Graph = {"pos": {}, "kind": {}, "edges": []}
    width = leaves * nodes_per_leaf
    for s in range(spines):
        g["pos"][f"S{s}"] = ((s + 0.5) * width / spines - 0.5, 5.0)
        g["kind"][f"S{s}"] = "switch"
    for leaf in range(leaves):
        name = f"L{leaf}"
        g["pos"][name] = (leaf * nodes_per_leaf + (nodes_per_leaf - 1) / 2, 2.5)
        g["kind"][name] = "switch"
        for s in range(spines):
            g["edges"].append((name, f"S{s}", "uplink"))
        for k in range(nodes_per_leaf):
            n = f"n{leaf}.{k}"
            g["pos"][n] = (leaf * nodes_per_leaf + k, 0.0)
            g["kind"][n] = "node"
            g["edges"].append((n, name, "access"))
    return g


def dragonfly(groups: int = 5, routers: int = 4, nodes_per_router: int = 2) -> Graph:
    """Fully connected groups of routers; one global link between every pair of groups."""
    g: Graph = {"pos": {}, "kind": {}, "edges": []}
    for grp in range(groups):
        phi = 2 * math.pi * grp / groups
        cx, cy = 3.2 * math.cos(phi), 3.2 * math.sin(phi)
        for r in range(routers):
            a = 2 * math.pi * r / routers + 2 * math.pi * grp / groups
            name = f"R{grp}.{r}"
            g["pos"][name] = (cx + 0.8 * math.cos(a), cy + 0.8 * math.sin(a))
            g["kind"][name] = "switch"
            for k in range(nodes_per_router):
                b = a + (k - (nodes_per_router - 1) / 2) * 0.5
                n = f"n{grp}.{r}.{k}"
                g["pos"][n] = (cx + 1.45 * math.cos(b), cy + 1.45 * math.sin(b))
                g["kind"][n] = "node"
                g["edges"].append((n, name, "access"))
        for r1, r2 in itertools.combinations(range(routers), 2):
            g["edges"].append((f"R{grp}.{r1}", f"R{grp}.{r2}", "local"))
    # global links: pair (i, j) uses a router chosen round-robin in each group
    used = [0] * groups
    for i, j in itertools.combinations(range(groups), 2):
        g["edges"].append((f"R{i}.{used[i] % routers}", f"R{j}.{used[j] % routers}", "global"))
        used[i] += 1
        used[j] += 1
    return g


def max_switch_hops(g: Graph) -> int:
    """Switches on the longest shortest path between two end nodes (BFS from every node)."""
    adj: dict[str, list[str]] = {v: [] for v in g["pos"]}
    for a, b, _ in g["edges"]:
        adj[a].append(b)
        adj[b].append(a)
    ends = [v for v, k in g["kind"].items() if k == "node"]
    worst = 0
    for src in ends:
        dist = {src: 0}
        q = deque([src])
        while q:
            v = q.popleft()
            for w in adj[v]:
                if w not in dist:
                    dist[w] = dist[v] + 1
                    q.append(w)
        if len(dist) != len(adj):
            raise ValueError("the topology is not connected")
        worst = max(worst, max(dist[t] for t in ends))
    return worst - 1  # edges between two end nodes minus one = switches traversed


def _draw_graph(ax, g: Graph, styles: dict) -> None:
    for a, b, cls in g["edges"]:
        (x1, y1), (x2, y2) = g["pos"][a], g["pos"][b]
        colour, width = styles[cls]
        ax.plot([x1, x2], [y1, y2], color=colour, lw=width, zorder=1)
    for v, (x, y) in g["pos"].items():
        if g["kind"][v] == "switch":
            ax.scatter([x], [y], s=90, marker="s", color=PALETTE["network"], zorder=3)
        else:
            ax.scatter([x], [y], s=22, marker="o", color=PALETTE["compute"], zorder=3)
    ax.set_aspect("equal")
    ax.axis("off")


def draw_topologies():
    ft, df = fat_tree(), dragonfly()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.6),
                                   gridspec_kw={"width_ratios": [1.25, 1]})
    _draw_graph(ax1, ft, {"access": ("0.6", 0.8), "uplink": (PALETTE["network"], 1.0)})
    n_nodes = sum(k == "node" for k in ft["kind"].values())
    ax1.set_title(f"Fat-tree (2-level folded Clos), {n_nodes} nodes:\n"
                  f"at most {max_switch_hops(ft)} switches between two nodes", fontsize=10)
    ax1.text(-0.5, 5.0, "spine", va="center", ha="right", fontsize=8, color="0.3")
    ax1.text(-0.5, 2.5, "leaf", va="center", ha="right", fontsize=8, color="0.3")
    ax1.text(-0.5, 0.0, "nodes", va="center", ha="right", fontsize=8, color="0.3")
    _draw_graph(ax2, df, {"access": ("0.6", 0.8), "local": (PALETTE["network"], 0.9),
                          "global": (PALETTE["measured"], 1.6)})
    n_nodes = sum(k == "node" for k in df["kind"].values())
    ax2.set_title(f"Dragonfly, 5 groups of 4 routers, {n_nodes} nodes:\n"
                  f"at most {max_switch_hops(df)} routers between two nodes", fontsize=10)
    ax2.plot([], [], color=PALETTE["measured"], lw=1.6, label="global link")
    ax2.plot([], [], color=PALETTE["network"], lw=0.9, label="link inside a group")
    ax2.legend(loc="lower center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------ node
def _box(ax, x, y, w, h, text, colour, fontsize=8, text_colour="white"):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=colour, edgecolor=PALETTE["ink"], linewidth=0.6))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize,
            color=text_colour)


def _link(ax, x1, y1, x2, y2, colour, lw=1.4, ls="-"):
    ax.plot([x1, x2], [y1, y2], color=colour, lw=lw, ls=ls, zorder=0)


def draw_node():
    fig, ax = plt.subplots(figsize=(10, 5.2))
    gpu_x = [0.4 + 1.2 * i for i in range(8)]
    # NVSwitch row
    for k in range(4):
        _box(ax, 1.1 + 2.35 * k, 4.2, 1.6, 0.45, "NVSwitch", PALETTE["network"])
    # GPUs with HBM, one NIC per GPU
    for i, x in enumerate(gpu_x):
        _box(ax, x, 2.6, 0.68, 1.1, f"GPU\n{i}", PALETTE["compute"], fontsize=8)
        ax.add_patch(FancyBboxPatch((x + 0.74, 2.6), 0.24, 1.1, facecolor=PALETTE["memory"],
                                    boxstyle="round,pad=0.02,rounding_size=0.05",
                                    edgecolor=PALETTE["ink"], linewidth=0.6))
        ax.text(x + 0.86, 3.15, "HBM", rotation=90, ha="center", va="center", fontsize=6.5,
                color="white")
        for k in range(4):
            _link(ax, x + 0.34, 3.7, 1.9 + 2.35 * k, 4.2, PALETTE["network"], lw=0.7)
        _link(ax, x + 0.34, 2.6, x + 0.34, 1.85, PALETTE["model"], lw=1.0)
        _box(ax, x + 0.1, 0.25, 0.8, 0.35, "NIC", PALETTE["network"], fontsize=7)
        _link(ax, x + 0.5, 0.25, x + 0.5, -0.25, PALETTE["measured"], lw=1.2)
    # PCIe switches and host
    for k in range(4):
        xs = gpu_x[2 * k] + 0.3
        _box(ax, xs, 1.35, 1.8, 0.5, "PCIe switch", PALETTE["model"], fontsize=7)
        for j in (2 * k, 2 * k + 1):
            _link(ax, gpu_x[j] + 0.5, 1.35, gpu_x[j] + 0.5, 0.6, PALETTE["model"], lw=1.0)
    _box(ax, 9.9, 2.3, 1.4, 0.75, "CPU 0", PALETTE["coordination"])
    _box(ax, 9.9, 1.2, 1.4, 0.75, "CPU 1", PALETTE["coordination"])
    _box(ax, 11.5, 2.35, 0.55, 0.65, "DRAM", PALETTE["memory"], fontsize=7)
    _box(ax, 11.5, 1.25, 0.55, 0.65, "DRAM", PALETTE["memory"], fontsize=7)
    _link(ax, 9.55, 1.6, 9.9, 1.6, PALETTE["model"], lw=1.0)
    _link(ax, 9.55, 1.6, 9.9, 2.65, PALETTE["model"], lw=1.0)
    _link(ax, 10.6, 1.95, 10.6, 2.3, PALETTE["coordination"], lw=1.6)
    _link(ax, 11.3, 2.67, 11.5, 2.67, PALETTE["memory"], lw=2.0)
    _link(ax, 11.3, 1.57, 11.5, 1.57, PALETTE["memory"], lw=2.0)
    ax.text(6.5, -0.55, "to the leaf switches of the cluster network (InfiniBand or RoCE), "
            "one port per GPU", ha="center", fontsize=8, color=PALETTE["measured"])
    legend = [("NVLink (GPU to GPU through NVSwitch)", PALETTE["network"]),
              ("PCIe (GPU, NIC, CPU)", PALETTE["model"]),
              ("HBM / DRAM (memory)", PALETTE["memory"]),
              ("socket interconnect", PALETTE["coordination"])]
    for label, colour in legend:
        ax.plot([], [], color=colour, lw=3, label=label)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 1.12), ncol=2, fontsize=8)
    ax.set_xlim(0, 12.3)
    ax.set_ylim(-0.8, 4.9)
    ax.axis("off")
    ax.set_title("An eight-GPU training node", fontsize=11, pad=30)
    return fig


def draw(outdir: Path) -> list[Path]:
    """Save the chapter's code-drawn figures as SVG into ``outdir``."""
    use_style()
    outdir = Path(outdir)
    paths = []
    for name, maker in (("ch02_node.svg", draw_node), ("ch02_topologies.svg", draw_topologies)):
        fig = maker()
        paths.append(savefig(fig, outdir / name))
        plt.close(fig)
    return paths


if __name__ == "__main__":
    for path in draw(ROOT / "figures" / "generated"):
        print(path)
