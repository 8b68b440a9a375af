"""Chapter 3: the container recipes describe the book's environment, and the images build and run.

Static checks (always): every recipe starts from the locally made Debian 12 base (no registry),
installs the pinned requirements from the file itself (never retyped), copies only paths that
exist and that scripts/containers.sh puts into the build context, and Podman's settings are the
ones the chapter explains.

Live checks (where Podman, runc and the base image exist; `.ci/run` makes them through
scripts/setup_machine.sh): the slim image builds (from the layer cache when its inputs are
unchanged), a small image is built from nothing cached on top of it every run, a benchmark runs
inside, and a Jupyter server in a container answers on a published port until it is stopped.
The full image (minutes, gigabytes) is built by `scripts/containers.sh full`, not here.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from hpcai import containers, repo_root
from hpcai.capabilities import available

ROOT = repo_root()
DOCKERFILE = ROOT / "containers" / "Dockerfile"
SLIM = ROOT / "containers" / "Containerfile.slim"
DEF = ROOT / "containers" / "hpcai.def"
SCRIPT = ROOT / "scripts" / "containers.sh"
OCI_RECIPES = {"full": DOCKERFILE, "slim": SLIM}


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("#")[0].strip().split("==")
            out[name] = version
    return out


@pytest.mark.parametrize("recipe", [DOCKERFILE, SLIM], ids=["docker", "slim"])
def test_oci_recipes_start_from_the_local_base(recipe):
    froms = re.findall(r"^FROM\s+(\S+)", recipe.read_text(), re.MULTILINE)
    assert froms == [containers.BASE]              # made by debootstrap, no registry
    assert containers.BASE.endswith(":bookworm")   # Debian 12, as the book's own machine
    assert re.search(rf"^BASE={re.escape(containers.BASE)}$", SCRIPT.read_text(), re.M)


def test_apptainer_recipe_bootstraps_debian_12_itself():
    text = DEF.read_text()
    assert re.search(r"^Bootstrap:\s*debootstrap$", text, re.M)
    assert re.search(r"^OSVersion:\s*bookworm$", text, re.M)


@pytest.mark.parametrize("recipe", [DOCKERFILE, SLIM, DEF], ids=["docker", "slim", "apptainer"])
def test_python_is_debians_3_11(recipe):
    text = recipe.read_text()
    assert re.search(r"apt-get install .*python3 python3-venv", text)   # bookworm: 3.11
    assert "python3 -m venv /opt/venv" in text
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
    assert "mpich" in pins() and "mpi4py" in pins()       # MPI comes with the pins


@pytest.mark.parametrize("recipe", [DOCKERFILE, SLIM, DEF], ids=["docker", "slim", "apptainer"])
def test_no_pin_is_typed_twice(recipe):
    text = recipe.read_text()
    for name in pins():
        pinned_again = re.search(rf"\b{re.escape(name)}==\d", text)
        assert not pinned_again, f"{name} is pinned again in {recipe.name}"


def test_slim_takes_its_pins_from_requirements():
    m = re.search(r"grep -E '\^\(([\w|-]+)\)==' /opt/hpcai/requirements\.txt",
                  SLIM.read_text())
    assert m, "the slim recipe should grep its pins from requirements.txt"
    names = m.group(1).split("|")
    assert "numpy" in names and set(names) <= set(pins())


def test_apptainer_files_exist():
    text = DEF.read_text()
    block = re.split(r"^%files\s*$", text, flags=re.MULTILINE)[1]
    block = re.split(r"^%\w+", block, flags=re.MULTILINE)[0]
    sources = [line.split()[0] for line in block.splitlines() if line.strip()]
    assert sources, "empty %files section"
    for src in sources:
        assert (ROOT / src).exists(), f"%files copies {src}, which is not in the repository"


def context_paths(name: str) -> set[str]:
    """The repository paths scripts/containers.sh copies into the build context ``name``."""
    m = re.search(rf"ctx=\$\(context {name} (.*?)\)\n", SCRIPT.read_text(), re.S)
    assert m, f"no context {name} in {SCRIPT.name}"
    return set(m.group(1).replace("\\\n", " ").split())


@pytest.mark.parametrize("name", sorted(OCI_RECIPES))
def test_copies_exist_and_are_in_the_context(name):
    given = context_paths(name)
    for line in OCI_RECIPES[name].read_text().splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                assert src in given, f"COPY {src}: not in the script's {name} context"


def test_podman_settings():
    text = (ROOT / "containers" / "containers.conf").read_text()
    assert re.search(r'^runtime = "runc"$', text, re.M)
    assert re.search(r"^default_ulimits = \[\]$", text, re.M)
    assert "--runtime runc" in SCRIPT.read_text()


@pytest.mark.parametrize("args", [["bogus"], ["jupyter", "--port", "80"],
                                  ["jupyter", "--port"], ["base", "--fast"]])
def test_script_refuses_bad_input(args):
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2, proc
    assert proc.stdout == ""


needs_podman = pytest.mark.skipif(
    not available("podman"),
    reason="needs Podman and the base image: sudo scripts/containers.sh install && "
           "sudo scripts/containers.sh base")


@pytest.fixture(scope="module")
def slim_image():
    containers.script("slim", timeout=900)
    return containers.SLIM


@needs_podman
def test_slim_image_runs_a_benchmark(slim_image):
    rec = containers.build_record("slim")
    assert rec and rec["steps"] >= 10 and rec["image"] == "slim"
    cfg = containers.inspect(slim_image)["Config"]
    assert "VIRTUAL_ENV=/opt/venv" in cfg["Env"]
    out = containers.podman("run", "--rm", slim_image, "python", "scripts/bench/gemm.py",
                            "--profile", "smoke", "--json", "--sizes", "32,64",
                            "--dtypes", "float64", "--repeats", "2").stdout
    res = json.loads(out.strip().splitlines()[-1])       # exit 0: every product checked
    assert [r["n"] for r in res["rows"]] == [32, 64]
    assert res["machine"]["versions"]["python"].startswith("3.11")


@needs_podman
def test_a_build_from_nothing_cached(slim_image, tmp_path):
    """Every run builds one image with no step from the cache, then runs and removes it."""
    (tmp_path / "Containerfile").write_text(
        f"FROM {slim_image}\n"
        "RUN python -c \"import numpy; open('/numpy-version', 'w')"
        ".write(numpy.__version__)\"\n")
    tag = "localhost/hpcai-test-build:latest"
    try:
        containers.podman("build", "--no-cache", "-t", tag, str(tmp_path), timeout=300)
        inside = containers.podman("run", "--rm", tag, "cat", "/numpy-version").stdout
    finally:
        containers.podman("rmi", "-f", tag, check=False)
    assert inside.strip() == pins()["numpy"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


@needs_podman
def test_jupyter_in_a_container_is_reached_from_the_host(slim_image):
    port = _free_port()
    started = containers.script("jupyter", "--port", str(port)).stdout
    token = re.search(r"\?token=(\w+)", started).group(1)
    try:
        t0 = time.monotonic()
        while True:
            try:
                status = _get(f"http://127.0.0.1:{port}/api")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() - t0 < 60, "Jupyter did not answer within 60 s"
                time.sleep(0.2)
        assert status == 200
        assert _get(f"http://127.0.0.1:{port}/api/status") == 403
        assert _get(f"http://127.0.0.1:{port}/api/status?token={token}") == 200
    finally:
        containers.script("stop")
    gone = containers.podman("container", "exists", containers.JUPYTER, check=False)
    assert gone.returncode == 1


def test_capability_is_declared_by_the_notebook():
    from hpcai.capabilities import needs

    assert needs(ROOT / "notebooks" / "ch03_containers.md") == ["podman"]
