#!/usr/bin/env bash
# Entrypoint of the planner-runtime images (Jetson and x86), also used by the systemd units.
#
#   serve [ARGS...]          make sure the engine exists (build the TensorRT .plan from the
#                            ONNX on first start), then exec `planner-runtime serve --engine`
#   build-engine-if-needed   only the engine step; prints the engine path that serve would use
#   controller [ARGS...]     exec `planner-runtime controller ARGS...`
#   <other planner-runtime subcommand> [ARGS...]   exec it; anything else is exec'd as is
#
# Environment:
#   PLANNER_ENGINE           engine to serve: *.plan (TensorRT) or *.onnx   [/models/go2.plan]
#   PLANNER_ONNX             ONNX to build the .plan from            [PLANNER_ENGINE with .onnx]
#   PLANNER_REBUILD_ENGINE   1: rebuild the .plan even if it exists (new JetPack/TensorRT)  [0]
#   PLANNER_ENGINE_FALLBACK  what to do when the .plan cannot be built (no TensorRT, build
#                            failed): "fail" (exit non-zero) or "onnx" (serve the ONNX)  [fail]
#   PLANNER_BUILD_ARGS       extra arguments for `planner-runtime build-engine ONNX --output PLAN`
#                            (e.g. "--fp16 --timing-cache /models/trt.cache")
#
# TensorRT engines are specific to the GPU and TensorRT version they were built with, so the
# .plan is built on the device itself, once, next to the ONNX; a lock keeps two starters (the
# container and a systemd ExecStartPre, or a restart loop) from building it twice.
set -euo pipefail

log() { printf '%s planner-runtime-entrypoint: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

RESOLVED_ENGINE=""

fallback_or_die() {
    # $1: reason, $2: the ONNX that could be served instead
    case "${PLANNER_ENGINE_FALLBACK:-fail}" in
        onnx)
            log "warning: $1; serving the ONNX $2 instead (PLANNER_ENGINE_FALLBACK=onnx)"
            RESOLVED_ENGINE="$2" ;;
        fail)
            die "$1 (set PLANNER_ENGINE_FALLBACK=onnx to serve the ONNX with ONNX Runtime instead)" ;;
        *)
            die "PLANNER_ENGINE_FALLBACK must be 'fail' or 'onnx', got '${PLANNER_ENGINE_FALLBACK}'" ;;
    esac
}

ensure_engine() {
    local engine="${PLANNER_ENGINE:-/models/go2.plan}"
    local rebuild="${PLANNER_REBUILD_ENGINE:-0}"
    case "${engine}" in
        *.onnx)
            [ -f "${engine}" ] || die "engine ${engine} not found (mount the models directory at $(dirname "${engine}"))"
            RESOLVED_ENGINE="${engine}"
            return 0 ;;
        *.plan) ;;
        *) die "PLANNER_ENGINE must end in .plan or .onnx, got '${engine}'" ;;
    esac
    local onnx="${PLANNER_ONNX:-${engine%.plan}.onnx}"
    if [ -s "${engine}" ] && [ "${rebuild}" != 1 ]; then
        RESOLVED_ENGINE="${engine}"
        return 0
    fi
    [ -f "${onnx}" ] || die "neither the engine ${engine} nor the ONNX ${onnx} to build it from exists"
    if ! python3 -c "import tensorrt" >/dev/null 2>&1; then
        fallback_or_die "TensorRT is not installed in this image, cannot build ${engine}" "${onnx}"
        return 0
    fi
    local dir
    dir="$(dirname "${engine}")"
    [ -w "${dir}" ] || die "cannot write the engine: ${dir} is not writable by uid $(id -u)"
    # One builder at a time; whoever waited re-checks, the other may have built it meanwhile.
    exec 9>"${engine}.lock"
    flock 9
    if [ -s "${engine}" ] && [ "${rebuild}" != 1 ]; then
        RESOLVED_ENGINE="${engine}"
        flock -u 9
        return 0
    fi
    local tmp="${engine%.plan}.partial-$$.plan"
    local -a extra=()
    if [ -n "${PLANNER_BUILD_ARGS:-}" ]; then
        read -r -a extra <<< "${PLANNER_BUILD_ARGS}"
    fi
    log "building the TensorRT engine ${engine} from ${onnx} (first start on this device; this takes minutes)"
    if planner-runtime build-engine "${onnx}" --output "${tmp}" "${extra[@]}"; then
        # Atomic on the same filesystem: a reader never sees a half-written engine.
        mv -f "${tmp}" "${engine}"
        log "engine ready: ${engine}"
        RESOLVED_ENGINE="${engine}"
    else
        rm -f "${tmp}"
        flock -u 9
        fallback_or_die "building ${engine} from ${onnx} failed" "${onnx}"
        return 0
    fi
    flock -u 9
}

main() {
    local cmd="${1:-serve}"
    if [ "$#" -gt 0 ]; then shift; fi
    case "${cmd}" in
        serve)
            ensure_engine
            log "serving ${RESOLVED_ENGINE}"
            exec planner-runtime serve --engine "${RESOLVED_ENGINE}" "$@" ;;
        build-engine-if-needed)
            ensure_engine
            printf '%s\n' "${RESOLVED_ENGINE}" ;;
        healthcheck)
            exec planner-runtime-healthcheck "$@" ;;
        controller|sim|demo|collect|train|export|build-engine|info|bench|eval)
            exec planner-runtime "${cmd}" "$@" ;;
        *)
            exec "${cmd}" "$@" ;;
    esac
}

main "$@"
