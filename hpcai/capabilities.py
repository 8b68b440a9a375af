"""What this machine can run (a SLURM cluster, GPUs), what each page needs, and how to say so.

A page of the book that needs more than a CPU (a SLURM cluster, a GPU) still builds on a
laptop; it then says *once*, at its top, what it was built without and the one command that
enables the rest, and its prose never says "not measured" or shows a placeholder.

Usage guide
===========

1. **Declare what the page needs** in the notebook's YAML header (jupytext and myst-nb keep
   the key in the notebook metadata; the build's summary reads it)::

       ---
       jupytext:
         text_representation: {extension: .md, format_name: myst}
       kernelspec: {display_name: Python 3, language: python, name: python3}
       hpcai:
         needs: [slurm]          # any of: slurm, slurm-2nodes, gpu, gpus-2, podman
       ---

2. **Say it at the top of the page**: right under the title, one code cell tagged
   ``remove-input`` (the reader sees the note, not the code)::

       ```{code-cell} ipython3
       :tags: [remove-input]

       from hpcai.capabilities import page_note
       page_note("slurm");
       ```

   It displays one admonition naming what is missing and the command that enables it, and
   nothing at all when everything is there (the ``;`` keeps Jupyter from echoing the list it
   returns). ``tests/test_capabilities.py`` checks that the capabilities a page passes to
   ``page_note`` are the ones its header declares.

3. **Prose that depends on a measurement** is glued as a whole sentence, chosen in code::

       ```{code-cell} ipython3
       from hpcai.capabilities import available, glue_sentence
       if available("slurm"):
           res = sbatch("scripts/slurm/pi.sbatch")
           record("ch04_slurm_wall_s", res["wall_s"], "s")
       glue_sentence(
           "ch04_slurm_sentence",
           f"The job left the queue after {res['wall_s']:.1f} s." if available("slurm") else None,
           "On a cluster the same job is one `sbatch` call away (see the note at the top).",
       )
       ```

   and the Markdown says ``{glue:md}`ch04_slurm_sentence` `` where the sentence belongs. The
   glued text is parsed as CommonMark (inline code, emphasis, links); write
   ``{glue:md}`ch04_slurm_sentence:myst` `` if the sentence itself uses MyST roles. In
   myst-nb 1.4 ``glue:md`` reads the same page only; from a chapter page use the plain-text
   twin glued under ``KEY_text``:
   ``{glue:text}`../notebooks/ch04_pi.md::ch04_slurm_sentence_text:s` ``
   (Markdown marks are shown as typed there, so keep such sentences plain). The sentence for
   the measured case carries its numbers; the other one must read as a complete, true
   sentence on its own -- never "not measured", "n/a" or a placeholder.

4. **In code**: ``available("slurm")`` (cached; ``refresh()`` forgets the answers),
   ``enable_command("gpu")``, ``missing([paths])`` (``[{page, capability, enable}]``) and
   ``format_missing(rows)`` (the lines that close ``make book``), ``skip_summary(reasons)``
   (the lines that close ``make test``: tests skipped for want of a cluster or a GPU).

Capabilities
============

``slurm``         ``sbatch`` on the PATH and a controller that answers ``sinfo``
``slurm-2nodes``  as ``slurm``, with at least two nodes up (idle, mixed or allocated)
``gpu``           PyTorch sees a CUDA device
``gpus-2``        PyTorch sees at least two CUDA devices
``podman``        Podman and runc installed, and the book's base image made (chapter 3)
"""

from __future__ import annotations

import functools
import glob
import html
import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .paths import repo_root
from .results import _in_notebook as _in_kernel

CLUSTER_UP = "sudo scripts/local_slurm.sh up --nodes 2"
PODMAN_UP = "sudo scripts/containers.sh install && sudo scripts/containers.sh base"
SSHD_UP = "sudo apt-get install -y openssh-server rsync sshfs (or: sudo scripts/setup_machine.sh)"
_UP_STATES = {"idle", "mixed", "allocated", "completing", "planned"}


@dataclass(frozen=True)
class Capability:
    """One thing a page can need: its name, what it means for the reader, how to get it."""

    name: str
    what: str       # "a SLURM cluster": completes "built without ..."
    lack: str       # "no SLURM cluster": completes "N tests skipped: ..."
    enable: str     # the one command (or step) that provides it
    check: Callable[[], bool]


def _sinfo(*args: str) -> str | None:
    """Standard output of ``sinfo ARGS`` when a controller answers, else ``None``."""
    exe = shutil.which("sinfo")
    if exe is None or shutil.which("sbatch") is None:
        return None
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _has_slurm() -> bool:
    return _sinfo("-h") is not None


def nodes_up() -> list[str]:
    """Names of the SLURM nodes that are up (idle, mixed, allocated); [] without a cluster."""
    out = _sinfo("-h", "-N", "-o", "%N %T")
    if out is None:
        return []
    up = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lower() in _UP_STATES:  # "idle*": not responding
            up.add(parts[0])
    return sorted(up)


def _nvidia_present() -> bool:
    """A cheap first look, so that a machine without a GPU never imports torch for it."""
    return bool(shutil.which("nvidia-smi") or glob.glob("/dev/nvidia[0-9]*"))


def _cuda_devices() -> int:
    if not _nvidia_present():
        return 0
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a pinned dependency
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def _has_sshd() -> bool:
    from .sshd import missing_tools

    return not missing_tools()


def _has_podman_base() -> bool:
    from .containers import have_base

    return have_base()


CAPABILITIES: dict[str, Capability] = {
    c.name: c
    for c in (
        Capability("slurm", "a SLURM cluster", "no SLURM cluster", CLUSTER_UP, _has_slurm),
        Capability("slurm-2nodes", "a SLURM cluster of two nodes",
                   "no SLURM cluster of two nodes", CLUSTER_UP,
                   lambda: len(nodes_up()) >= 2),
        Capability("gpu", "a CUDA GPU", "no CUDA GPU",
                   "build on a machine with an NVIDIA GPU: make book PROFILE=gpu",
                   lambda: _cuda_devices() >= 1),
        Capability("gpus-2", "two CUDA GPUs", "fewer than two CUDA GPUs",
                   "build on a machine with two or more NVIDIA GPUs: make book PROFILE=gpu",
                   lambda: _cuda_devices() >= 2),
        Capability("podman", "Podman and the book's base image",
                   "no Podman or no base image", PODMAN_UP, _has_podman_base),
        Capability("sshd", "an OpenSSH server, rsync and sshfs",
                   "no OpenSSH server, rsync or sshfs", SSHD_UP, _has_sshd),
    )
}


def _capability(name: str) -> Capability:
    try:
        return CAPABILITIES[name]
    except KeyError:
        raise ValueError(f"unknown capability {name!r}; known: "
                         f"{', '.join(CAPABILITIES)}") from None


@functools.cache
def _available(name: str) -> bool:
    return bool(CAPABILITIES[name].check())


def available(cap: str) -> bool:
    """True when this machine has the capability ``cap`` (the answer is cached)."""
    _capability(cap)
    return _available(cap)


def refresh() -> None:
    """Forget the cached answers (after starting a cluster, say)."""
    _available.cache_clear()


def enable_command(cap: str) -> str:
    """The one command (or step) that gives this machine ``cap``."""
    return _capability(cap).enable


def describe(cap: str) -> str:
    """``cap`` in words: "a SLURM cluster", "a CUDA GPU", ..."""
    return _capability(cap).what


# --- what a page needs ---------------------------------------------------------------------

def front_matter(path: str | Path) -> dict[str, Any]:
    """The YAML header of a MyST notebook (or the metadata of an ``.ipynb``); {} if none."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        return dict(json.loads(text).get("metadata", {}))
    match = re.match(r"---[ \t]*\n(.*?)\n---[ \t]*(\n|$)", text, re.DOTALL)
    if match is None:
        return {}
    import yaml

    data = yaml.safe_load(match.group(1))
    return data if isinstance(data, dict) else {}


def needs(path: str | Path) -> list[str]:
    """The capabilities a notebook declares under ``hpcai: {needs: [...]}``."""
    meta = front_matter(path).get("hpcai") or {}
    declared = meta.get("needs", []) if isinstance(meta, dict) else []
    if isinstance(declared, str):
        declared = [declared]
    for cap in declared:
        _capability(cap)
    return list(declared)


def _page_name(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(repo_root()))
    except ValueError:
        return str(path)


def missing(paths: Iterable[str | Path]) -> list[dict[str, str]]:
    """One row ``{page, capability, enable}`` per page and capability it needs but lacks here.

    ``capability`` is the capability's name ("slurm"); the build prints these rows at its end.
    """
    rows = []
    for path in map(Path, paths):
        for cap in needs(path):
            if not available(cap):
                rows.append({"page": _page_name(path), "capability": cap,
                             "enable": enable_command(cap)})
    return rows


def format_missing(rows: Sequence[dict[str, str]]) -> str:
    """The rows of :func:`missing` as the few lines that close ``make book``."""
    if not rows:
        return "Every page ran with everything it needs."
    lines = [f"{len({r['page'] for r in rows})} page(s) ran without what they need:"]
    width = max(len(r["page"]) for r in rows)
    for r in rows:
        lines.append(f"  {r['page']:<{width}}  without {describe(r['capability'])}")
    lines.append("To enable:")
    for cmd in dict.fromkeys(r["enable"] for r in rows):
        caps = sorted({r["capability"] for r in rows if r["enable"] == cmd})
        lines.append(f"  {', '.join(caps)}: {cmd}")
    return "\n".join(lines)


# --- on the page ---------------------------------------------------------------------------

def note_bundle(caps: Sequence[str]) -> dict[str, str] | None:
    """The admonition for the capabilities in ``caps`` that are missing, as a MIME bundle
    (``text/html`` with the theme's admonition classes, ``text/plain``); ``None`` if none is."""
    lacking = [c for c in dict.fromkeys(caps) if not available(c)]
    if not lacking:
        return None
    what = " and ".join(describe(c) for c in lacking)
    title = f"This page was built without {what}"
    body = ("The cells that need it were skipped, and the text around them says what they "
            "show when they run. To run them, enable it and build the page again:")
    cmds = list(dict.fromkeys(enable_command(c) for c in lacking))
    items = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in cmds)
    page_html = (f'<div class="admonition warning hpcai-capability-note">'
                 f'<p class="admonition-title">{html.escape(title)}</p>'
                 f"<p>{html.escape(body)}</p><ul>{items}</ul></div>")
    plain = "\n".join([title + ".", body, *(f"    {c}" for c in cmds)])
    return {"text/html": page_html, "text/plain": plain}


def page_note(*caps: str) -> list[str]:
    """Show one admonition under the page title if any of ``caps`` is missing; else nothing.

    Call it in a cell tagged ``remove-input`` right under the title. Returns the missing
    capabilities (the cell should not end on the call, or Jupyter echoes the list: write
    ``page_note("slurm");`` or assign the result).
    """
    for cap in caps:
        _capability(cap)
    bundle = note_bundle(caps)
    if bundle is None:
        return []
    if _in_kernel():
        from IPython.display import display

        display(bundle, raw=True)
    else:
        print(bundle["text/plain"])
    return [c for c in dict.fromkeys(caps) if not available(c)]


def glue_sentence(
    key: str,
    text_if_measured: str | None,
    text_otherwise: str,
    *,
    measured: bool | None = None,
) -> str:
    """Glue one sentence of Markdown under ``key``; the page shows it with ``{glue:md}`key` ``.

    ``measured`` (default: ``text_if_measured is not None``) picks the sentence. The same
    sentence is glued as plain text under ``KEY_text`` (for ``{glue:text}`` from other pages).
    Returns the chosen text; outside a notebook it only returns it.
    """
    if measured is None:
        measured = text_if_measured is not None
    if measured and text_if_measured is None:
        raise ValueError("measured=True needs the text_if_measured sentence")
    text = text_if_measured if measured else text_otherwise
    assert text is not None
    if _in_kernel():
        from IPython.display import Markdown
        from myst_nb import glue

        glue(key, Markdown(text), display=False)
        glue(f"{key}_text", text, display=False)
    return text


# --- tests ---------------------------------------------------------------------------------

_SKIP_PATTERNS = (
    ("podman", re.compile(r"podman|base image", re.IGNORECASE)),
    ("slurm-2nodes", re.compile(r"(two|2|usable) nodes?|node\(s\)|not 2\b", re.IGNORECASE)),
    ("slurm", re.compile(r"slurm|sbatch|sinfo|srun|cluster", re.IGNORECASE)),
    ("gpus-2", re.compile(r"(two|2|more) (cuda )?gpus", re.IGNORECASE)),
    ("gpu", re.compile(r"\bgpus?\b|cuda|nccl", re.IGNORECASE)),
)
_TEST_ENABLE = {
    "gpu": "run make test on a machine with an NVIDIA GPU",
    "gpus-2": "run make test on a machine with two or more NVIDIA GPUs",
}


def skip_capability(reason: str) -> str | None:
    """The capability a test's skip reason is about ("slurm", "gpu", ...), or ``None``."""
    for cap, pattern in _SKIP_PATTERNS:
        if pattern.search(reason or ""):
            return cap
    return None


def skip_summary(
    reasons: Iterable[str], *, have: Callable[[str], bool] | None = None
) -> list[str]:
    """Lines that close a test run: how many tests were skipped for want of each capability
    this machine lacks, and the command that enables it.

    A skip whose reason names a capability the machine *has* (e.g. "checks the refusal on
    machines without a GPU", skipped on a GPU machine) is not counted.
    """
    have = have or available
    counts: dict[str, int] = {}
    for reason in reasons:
        cap = skip_capability(reason)
        if cap is not None and not have(cap):
            counts[cap] = counts.get(cap, 0) + 1
    lines = []
    for cap in CAPABILITIES:
        if cap in counts:
            n = counts[cap]
            enable = _TEST_ENABLE.get(cap, enable_command(cap))
            lines.append(f"{n} test{'s' if n != 1 else ''} skipped: {CAPABILITIES[cap].lack}"
                         f" -- enable: {enable}")
    return lines
