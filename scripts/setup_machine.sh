#!/usr/bin/env bash
# setup_machine.sh -- install and start what the book needs on a Debian or Ubuntu machine.
#
#   sudo scripts/setup_machine.sh            install what is missing, start a two-node cluster
#   sudo scripts/setup_machine.sh --nodes 1  the same with a one-node cluster
#   scripts/setup_machine.sh --check         list what is missing; change nothing
#
# System packages (installed with apt-get only when missing): gcc and make for the C kernels,
# slurm-wlm and munge for the local SLURM cluster, podman, runc, crun and debootstrap for the
# containers, hwloc for chapter 2's topology and perf (Debian's linux-perf, Ubuntu's
# linux-tools-common) for chapter 5's profilers, openssh-server, rsync and sshfs for the SSH
# appendix (scripts/local_sshd.sh starts its own sshd on 127.0.0.1; nothing listens on 22). Then `scripts/local_slurm.sh up --nodes N` starts that cluster (default N=2: nodes
# n1 and n2 on this one machine) and `scripts/containers.sh` makes chapter 3's base image (once,
# with debootstrap) and the slim image on it. Running it again
# changes nothing. `make book` runs it by itself when it runs as root on Debian or Ubuntu;
# `.ci/run` runs it before the tests. The Python packages come from `make venv`, not from here.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(gcc make slurm-wlm munge podman runc crun debootstrap hwloc openssh-server rsync sshfs)
if grep -qs '^ID=ubuntu' /etc/os-release; then PACKAGES+=(linux-tools-common)
else PACKAGES+=(linux-perf); fi
NODES="${HPCAI_SLURM_NODES:-2}"
CHECK=0

while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) [ $# -ge 2 ] || { echo "error: --nodes needs a value" >&2; exit 2; }
                 NODES="$2"; shift 2 ;;
        --nodes=*) NODES="${1#--nodes=}"; shift ;;
        --check) CHECK=1; shift ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown argument '$1' (allowed: --nodes N, --check)" >&2; exit 2 ;;
    esac
done
if ! [[ "$NODES" =~ ^[0-9]+$ ]] || [ "$NODES" -lt 1 ] || [ "$NODES" -gt 16 ]; then
    echo "error: --nodes must be a whole number from 1 to 16, got '$NODES'" >&2
    exit 2
fi

say() { printf 'setup_machine: %s\n' "$*"; }

missing=()
if command -v dpkg >/dev/null 2>&1; then
    for pkg in "${PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
else
    for exe in gcc make sbatch slurmd munged; do
        command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || missing+=("$exe")
    done
fi

if [ "$CHECK" -eq 1 ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        say "missing: ${missing[*]}  (install and start with:  sudo $0)"
        exit 1
    fi
    say "all of ${PACKAGES[*]} are installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: run as root (it installs packages and starts daemons):  sudo $0" >&2
    exit 1
fi

if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing ${missing[*]} and this is not Debian or Ubuntu (no apt-get);" \
             "install them with this system's package manager" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

scripts/local_slurm.sh up --nodes "$NODES"
if ! { scripts/containers.sh base && scripts/containers.sh slim | tail -n 1; }; then
    say "the container images were not built; chapter 3 skips its container cells"
fi
