"""Profiles: one place that turns a profile name plus overrides into a notebook's settings.

A *profile* names the size of a run:

``smoke``    seconds; what the test suite uses to execute every notebook.
``cpu``      the default; about a minute per notebook on a 2-core laptop.
``gpu``      one CUDA device.
``cluster``  N nodes x G GPUs, launched through SLURM.

Each notebook or benchmark owns a *size table* ``{profile: {knob: value}}``; :func:`resolve`
picks the row, applies explicit overrides (``None`` means "from the profile") and checks that
the machine can run the profile *before any work starts*.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from typing import Any

PROFILES: tuple[str, ...] = ("smoke", "cpu", "gpu", "cluster")
ENV_VAR = "HPCAI_PROFILE"
DEFAULT = "cpu"
# A table may leave out a larger profile; it then inherits the next smaller one.
_FALLBACK = {"cluster": "gpu", "gpu": "cpu", "cpu": "smoke"}
_current: dict[str, str] = {}


class ProfileError(ValueError):
    """A profile or an override that cannot be used here, with what to do instead."""


class Settings(Mapping[str, Any]):
    """Resolved knobs of one run, readable as attributes (``S.n``) or as a mapping."""

    def __init__(self, profile: str, values: Mapping[str, Any]) -> None:
        self._profile = profile
        self._values = dict(values)

    @property
    def profile(self) -> str:
        return self._profile

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(
                f"setting {name!r} is not defined; known: {sorted(self._values)}"
            ) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict[str, Any]:
        """The settings plus the profile, ready for JSON."""
        return {"profile": self._profile, **self._values}

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in self._values.items())
        return f"Settings(profile={self._profile!r}, {knobs})"


def has_cuda() -> bool:
    """True when PyTorch sees at least one CUDA device."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a pinned dependency
        return False
    return bool(torch.cuda.is_available())


def has_slurm() -> bool:
    """True when ``sbatch`` is on the PATH."""
    return shutil.which("sbatch") is not None


def default_profile() -> str:
    """The profile used when a notebook says ``profile = None``: ``$HPCAI_PROFILE`` or ``cpu``."""
    return os.environ.get(ENV_VAR) or DEFAULT


def check_profile(profile: str | None) -> str:
    """Validate a profile name against the list and against this machine; return the name."""
    name = default_profile() if profile is None else profile
    if not isinstance(name, str) or name not in PROFILES:
        source = f" (from ${ENV_VAR})" if profile is None else ""
        raise ProfileError(
            f"unknown profile {name!r}{source}; valid profiles are {', '.join(PROFILES)}. "
            "Use e.g. `-p profile cpu` with papermill or `--profile cpu` on the command line."
        )
    if name == "gpu" and not has_cuda():
        raise ProfileError(
            "profile 'gpu' needs a CUDA GPU, but torch.cuda.is_available() is False on this "
            "machine. Run with profile 'cpu' here (papermill: `-p profile cpu`), or run on a "
            "machine with an NVIDIA GPU and a CUDA build of PyTorch."
        )
    if name == "cluster" and not has_slurm():
        raise ProfileError(
            "profile 'cluster' launches work through SLURM, but `sbatch` is not on the PATH. "
            "Start the local cluster with `scripts/local_slurm.sh up --nodes 2` (as root), run on a "
            "cluster login node, or use profile 'cpu'."
        )
    return name


def _row(table: Mapping[str, Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    while name not in table:
        if name not in _FALLBACK:
            raise ProfileError(f"the size table has no row for profile {name!r} (or smaller)")
        name = _FALLBACK[name]
    return table[name]


def resolve(
    profile: str | None,
    table: Mapping[str, Mapping[str, Any]] | None = None,
    **overrides: Any,
) -> Settings:
    """Turn a profile and explicit overrides into settings.

    >>> S = resolve("smoke", {"smoke": {"n": 10}, "cpu": {"n": 1000}}, n=None)
    >>> S.profile, S.n
    ('smoke', 10)

    ``None`` overrides are ignored; an override whose name is not in the table is an error,
    because it is almost always a typo in a parameters cell.
    """
    name = check_profile(profile)
    values = dict(_row(table or {}, name))
    known = set()
    for row in (table or {}).values():
        known.update(row)
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in known:
            raise ProfileError(
                f"unknown setting {key!r}; this table knows {sorted(known) or 'no settings'}"
            )
        values[key] = value
    _current["profile"] = name
    return Settings(name, values)


def current_profile() -> str | None:
    """The profile of the last :func:`resolve` call in this process (``None`` before any)."""
    return _current.get("profile")
