"""Chapter 3: the container recipes describe the environment the book is tested with.

No container engine runs in CI, so these tests check the recipes against the repository:
the same Python minor version and OS release as the pins were tested on, the pinned
requirements installed from the file itself (never retyped), and every copied path present.
"""

from __future__ import annotations

import re

import pytest

from hpcai import repo_root

ROOT = repo_root()
DOCKERFILE = ROOT / "containers" / "Dockerfile"
DEF = ROOT / "containers" / "hpcai.def"


def base_image(text: str) -> str:
    m = re.search(r"^(?:FROM|From:)\s+(\S+)", text, re.MULTILINE)
    assert m, "no base image"
    return m.group(1)


@pytest.mark.parametrize("recipe", [DOCKERFILE, DEF], ids=["docker", "apptainer"])
def test_base_image_matches_the_tested_python(recipe):
    image = base_image(recipe.read_text())
    m = re.match(r"python:(\d+)\.(\d+)-slim-(\w+)", image)
    assert m, image
    assert (int(m.group(1)), int(m.group(2))) == (3, 11)
    assert m.group(3) == "bookworm"            # Debian 12, as the book's own machine
    requires = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)"',
                         (ROOT / "pyproject.toml").read_text())
    assert (3, 11) >= tuple(int(x) for x in requires.groups())


@pytest.mark.parametrize("recipe", [DOCKERFILE, DEF], ids=["docker", "apptainer"])
def test_installs_the_pinned_requirements_and_a_compiler(recipe):
    text = recipe.read_text()
    assert re.search(r"pip install -r /opt/hpcai/requirements\.txt", text)
    assert "build-essential" in text                      # gcc for the C kernels
    # torch is taken from requirements.txt by grep, so the pin is written in one place only
    assert "grep -E '^torch==' /opt/hpcai/requirements.txt" in text
    pins = [line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")]
    assert "mpich" in pins and "mpi4py" in pins            # MPI comes with the pins
    for name in pins:
        pinned_again = re.search(rf"\b{re.escape(name)}==\d", text)
        assert not pinned_again, f"{name} is pinned again in {recipe.name}"


def test_apptainer_files_exist():
    text = DEF.read_text()
    block = re.split(r"^%files\s*$", text, flags=re.MULTILINE)[1]
    block = re.split(r"^%\w+", block, flags=re.MULTILINE)[0]
    sources = [line.split()[0] for line in block.splitlines() if line.strip()]
    assert sources, "empty %files section"
    for src in sources:
        assert (ROOT / src).exists(), f"%files copies {src}, which is not in the repository"


def test_docker_copies_exist():
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
