"""Shared lab code of *Supercomputing for AI*: profiles, measurement, results, launching, style.

Notebooks import from here; the narrative and the experiment stay in the notebook.
"""

from .measure import Timer, Timing, describe_machine, machine, time_it, timer_resolution
from .paths import repo_root
from .plotting import PALETTE, savefig, use_style
from .profiles import (
    PROFILES,
    ProfileError,
    Settings,
    current_profile,
    default_profile,
    has_cuda,
    has_slurm,
    resolve,
)
from .results import latest, load_results, record, record_machine

__all__ = [
    "PALETTE", "PROFILES", "ProfileError", "Settings", "Timer", "Timing", "current_profile",
    "default_profile", "describe_machine", "has_cuda", "has_slurm", "latest", "load_results",
    "machine", "record", "record_machine", "repo_root", "resolve", "savefig", "time_it",
    "timer_resolution", "use_style",
]

__version__ = "0.1.0"
