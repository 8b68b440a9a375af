#!/usr/bin/env bash
# containers.sh -- build and run the book's container images with Podman (book chapter 3).
#
#   scripts/containers.sh install          apt-get podman, runc, crun, debootstrap if missing
#   scripts/containers.sh base [--rebuild] make the base image localhost/hpcai-base:bookworm
#   scripts/containers.sh slim [ARGS]      build localhost/hpcai-slim from Containerfile.slim
#   scripts/containers.sh full [ARGS]      build localhost/hpcai-book from containers/Dockerfile
#   scripts/containers.sh run IMAGE CMD..  run CMD in a fresh container of IMAGE, then remove it
#   scripts/containers.sh jupyter [IMAGE] [--port P]   start a Jupyter server, published on
#                                          127.0.0.1:P (default 8888, image hpcai-slim)
#   scripts/containers.sh stop             stop and remove the Jupyter container
#   scripts/containers.sh status           the book's images and containers
#
# No image registry is used. `base` runs debootstrap (a minimal Debian 12 from the machine's
# own Debian mirror) into $HPCAI_CONTAINERS_DIR/rootfs (default /var/tmp/hpcai-containers),
# copies in this machine's apt sources and settings and its extra CA certificates (so that
# apt and pip inside a build reach the same mirrors this machine does), and `podman import`s
# the folder as an image. ARGS of slim and full go to `podman build` (e.g. --no-cache).
# Podman reads containers/containers.conf (runtime runc, no default ulimits): see chapter 3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

DIR="${HPCAI_CONTAINERS_DIR:-/var/tmp/hpcai-containers}"
SUITE=bookworm
MIRROR="${HPCAI_DEBIAN_MIRROR:-}"
BASE=localhost/hpcai-base:bookworm
SLIM=localhost/hpcai-slim:latest
FULL=localhost/hpcai-book:latest
JUPYTER=hpcai-jupyter
WHEELS="${HPCAI_WHEELS:-/opt/wheels}"   # a folder of wheels pip reads on this machine
export CONTAINERS_CONF="$ROOT/containers/containers.conf"

say() { printf 'containers: %s\n' "$*"; }
die() { printf 'containers: error: %s\n' "$*" >&2; exit "${2:-1}"; }
usage() {
    echo "usage: $0 install | base [--rebuild] | slim [ARGS] | full [ARGS] |" \
         "run IMAGE CMD... | jupyter [IMAGE] [--port P] | stop | status" >&2
    exit 2
}
pm() { podman --runtime runc "$@"; }
need_podman() {
    command -v podman >/dev/null 2>&1 || die "podman is missing; install it:  sudo $0 install"
    command -v runc >/dev/null 2>&1 || die "runc is missing; install it:  sudo $0 install"
}
need_root() { [ "$(id -u)" -eq 0 ] || die "run as root:  sudo $0 $*"; }
need_base() {
    pm image exists "$BASE" || die "no base image $BASE; make it first:  sudo $0 base"
}

# the first URI of this machine's Debian sources (deb822 or one-line format)
host_mirror() {
    local uri
    uri=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\/debian\)[[:space:]]*$/\1/p' \
              /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
    [ -n "$uri" ] || uri=$(sed -n 's/^deb[[:space:]]\+\([^[:space:]]*\/debian\)[[:space:]].*/\1/p' \
              /etc/apt/sources.list 2>/dev/null | head -n 1)
    printf '%s' "${uri:-http://deb.debian.org/debian}"
}

cmd_install() {
    need_root install
    local missing=()
    for pkg in podman runc crun debootstrap; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    say "podman $(podman --version | awk '{print $3}'), $(runc --version | head -n 1)"
}

# copy this machine's package sources, apt settings and extra CA certificates into $1
site_config() {
    local rootfs="$1" f
    if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
        rm -f "$rootfs/etc/apt/sources.list"       # debootstrap's one line, now redundant
        cp /etc/apt/sources.list.d/*.sources "$rootfs/etc/apt/sources.list.d/"
    fi
    for f in /etc/apt/apt.conf.d/*; do             # only the settings of how to fetch
        if [ -f "$f" ] && grep -q '^Acquire::' "$f"; then cp "$f" "$rootfs/etc/apt/apt.conf.d/"; fi
    done
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    fi
}

cmd_base() {
    local rebuild=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --rebuild) rebuild=1; shift ;;
            *) die "unknown argument '$1' (allowed: --rebuild)" 2 ;;
        esac
    done
    need_root base
    need_podman
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing:  sudo $0 install"
    if [ "$rebuild" -eq 0 ] && pm image exists "$BASE"; then
        say "base image $BASE exists (rebuild with: $0 base --rebuild)"
        return 0
    fi
    local rootfs="$DIR/rootfs" t0 t1 t2 fresh=0
    mkdir -p "$DIR"
    t0=$(date +%s.%N)
    if [ "$rebuild" -eq 1 ] || [ ! -f "$rootfs/.hpcai-complete" ]; then
        rm -rf "$rootfs"
        say "debootstrap --variant=minbase $SUITE from ${MIRROR:-$(host_mirror)}"
        debootstrap --variant=minbase "$SUITE" "$rootfs" "${MIRROR:-$(host_mirror)}" \
            > "$DIR/debootstrap.log" 2>&1 || die "debootstrap failed; see $DIR/debootstrap.log"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        site_config "$rootfs"
        touch "$rootfs/.hpcai-complete"
        fresh=1
    fi
    t1=$(date +%s.%N)
    tar --numeric-owner --exclude=./.hpcai-complete -C "$rootfs" -c . \
        | pm import -q --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    t2=$(date +%s.%N)
    say "$(awk -v a="$t0" -v b="$t1" -v c="$t2" \
           'BEGIN{printf "debootstrap %.1f s, import %.1f s", b-a, c-b}') -> $BASE"
    if [ "$fresh" -eq 1 ]; then          # $DIR/build-base.json: how long making the base took
        awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$(date -u +%FT%TZ)" \
            'BEGIN{printf "{\"image\": \"base\", \"debootstrap_s\": %.2f, \"import_s\": %.2f, \"finished\": \"%s\"}\n", b-a, c-b, d}' \
            > "$DIR/build-base.json"
    fi
}

# a build context holding only the given repository paths (no .venv, no _build)
context() {
    local ctx="$DIR/context-$1" path
    shift
    mkdir -p "$DIR"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    for path in "$@"; do
        mkdir -p "$ctx/$(dirname "$path")"
        cp -r "$ROOT/$path" "$ctx/$path"
    done
    find "$ctx" -name __pycache__ -type d -prune -exec rm -rf {} +
    printf '%s' "$ctx"
}

# build IMAGE-NAME CONTAINERFILE CONTEXT [ARGS]: podman build, its output also kept in
# $DIR/build-NAME.log, and $DIR/build-NAME.json: wall time, steps, steps taken from the cache
# (all of them, and the RUN steps alone); a build that ran every RUN step is also kept as
# $DIR/build-NAME-fresh.json, the image made from the base alone
build() {
    local name="$1" file="$2" ctx="$3" t0 t1 rc steps cached cached_run
    shift 3
    t0=$(date +%s.%N)
    set +e
    pm build --network host -f "$file" "$@" "$ctx" 2>&1 | tee "$DIR/build-$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    t1=$(date +%s.%N)
    [ "$rc" -eq 0 ] || die "podman build of $name failed (exit $rc); see $DIR/build-$name.log" "$rc"
    steps=$(grep -c '^STEP ' "$DIR/build-$name.log" || true)
    cached=$(grep -c -- '--> Using cache' "$DIR/build-$name.log" || true)
    cached_run=$(awk '/^STEP /{run=($3=="RUN")} /--> Using cache/{if(run)n++} END{print n+0}' \
                     "$DIR/build-$name.log")
    awk -v a="$t0" -v b="$t1" -v n="$name" -v s="$steps" -v c="$cached" -v r="$cached_run" \
        -v d="$(date -u +%FT%TZ)" \
        'BEGIN{printf "{\"image\": \"%s\", \"wall_s\": %.2f, \"steps\": %d, \"cached\": %d, \"cached_run\": %d, \"finished\": \"%s\"}\n", n, b-a, s, c, r, d}' \
        > "$DIR/build-$name.json"
    if [ "$cached_run" -eq 0 ]; then cp "$DIR/build-$name.json" "$DIR/build-$name-fresh.json"; fi
    say "built $name in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s" \
        "($cached of $steps steps from the cache)"
}

cmd_slim() {
    need_podman
    need_base
    local ctx
    ctx=$(context slim requirements.txt containers/jupyter-requirements.txt hpcai \
                       scripts/bench/gemm.py)
    build slim "$ROOT/containers/Containerfile.slim" "$ctx" -t "$SLIM" "$@"
}

cmd_full() {
    need_podman
    need_base
    local ctx extra=()
    ctx=$(context full requirements.txt containers/jupyter-requirements.txt pyproject.toml \
                       README.md hpcai)
    # Where this machine's pip takes a wheel from a local folder (the CPU build of torch
    # here), the build sees that folder too, read-only, and pip looks there as well.
    if compgen -G "$WHEELS/torch-*.whl" >/dev/null; then
        extra+=(--volume "$WHEELS:/opt/wheels:ro" --build-arg PIP_FIND_LINKS=/opt/wheels
                --build-arg TORCH_INDEX=https://pypi.org/simple)
    fi
    build full "$ROOT/containers/Dockerfile" "$ctx" -t "$FULL" "${extra[@]}" "$@"
}

cmd_run() {
    [ $# -ge 1 ] || usage
    need_podman
    local image="$1"
    shift
    pm run --rm "$image" "$@"
}

cmd_jupyter() {
    local image="$SLIM" port=8888
    while [ $# -gt 0 ]; do
        case "$1" in
            --port) [ $# -ge 2 ] || die "--port needs a value" 2; port="$2"; shift 2 ;;
            -*) die "unknown argument '$1' (allowed: IMAGE, --port P)" 2 ;;
            *) image="$1"; shift ;;
        esac
    done
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1024 ] && [ "$port" -le 65535 ] \
        || die "--port must be a number from 1024 to 65535, got '$port'" 2
    need_podman
    pm rm -f "$JUPYTER" >/dev/null 2>&1 || true
    # The server listens on all of the container's addresses; -p publishes its port on the
    # host's loopback only. A token is required for everything but /api (the version).
    local token
    token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    pm run -d --name "$JUPYTER" -p "127.0.0.1:$port:8888" "$image" \
        jupyter server --ip=0.0.0.0 --port=8888 --no-browser --allow-root \
        --IdentityProvider.token="$token" >/dev/null
    say "started $JUPYTER from $image: http://127.0.0.1:$port/?token=$token"
}

cmd_stop() {
    need_podman
    if pm container exists "$JUPYTER"; then
        pm stop -t 5 "$JUPYTER" >/dev/null
        pm rm "$JUPYTER" >/dev/null
        say "stopped and removed $JUPYTER"
    else
        say "no container $JUPYTER"
    fi
}

cmd_status() {
    need_podman
    pm images --filter reference='localhost/hpcai-*'
    pm ps -a --filter name=hpcai
}

[ $# -ge 1 ] || usage
sub="$1"
shift
case "$sub" in
    install) cmd_install "$@" ;;
    base) cmd_base "$@" ;;
    slim) cmd_slim "$@" ;;
    full) cmd_full "$@" ;;
    run) cmd_run "$@" ;;
    jupyter) cmd_jupyter "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) usage ;;
esac
