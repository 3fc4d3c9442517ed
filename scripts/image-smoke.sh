#!/usr/bin/env bash
# Build the Gatehouse image (deploy/Containerfile) and smoke-test it: run it as production would (read-only root,
# no capabilities, secrets as files, a fresh volume for /data), wait for /readyz, send a chat to the demo model
# with the bootstrap key, read /metrics with METRICS_TOKEN, check the health check passes, stop it (SIGTERM) and
# check it drained cleanly.
#
# Uses docker or podman, whichever has a working engine (`<engine> info` succeeds). Without one it prints
# "SKIPPED: no container engine ..." and exits 0: loud, so a run that tested nothing is never mistaken for a pass.
# tests/unit/deploy/test_scripts.py runs it and accepts either outcome.
#
#   bash scripts/image-smoke.sh            # IMAGE=gatehouse:smoke by default; ENGINE=docker|podman to choose
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly IMAGE="${IMAGE:-gatehouse:smoke}"
readonly READY_TIMEOUT="${READY_TIMEOUT:-120}"
readonly NAME="gatehouse-smoke-$$"

log() { printf 'image-smoke: %s\n' "$*"; }
die() {
    printf 'image-smoke: FAILED: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

find_engine() {
    local candidates=(docker podman)
    [[ -n ${ENGINE:-} ]] && candidates=("$ENGINE")
    local engine
    for engine in "${candidates[@]}"; do
        if have "$engine" && "$engine" info >/dev/null 2>&1; then
            printf '%s\n' "$engine"
            return 0
        fi
    done
    return 1
}

skip() {
    local found=()
    have docker && found+=("docker client")
    have podman && found+=("podman")
    printf '\n%s\n' "========================================================================"
    printf 'SKIPPED: no container engine (%s, but no engine answers "info").\n' \
        "$( ((${#found[@]})) && printf '%s' "${found[*]} installed" || printf 'neither docker nor podman installed')"
    printf 'The image was NOT built or tested. Run this where docker or podman works.\n'
    printf '%s\n\n' "========================================================================"
    exit 0
}

engine=""
workdir=""
volume=""
cleanup() {
    if [[ -n $engine ]]; then
        "$engine" rm -f "$NAME" >/dev/null 2>&1 || true
        [[ -n $volume ]] && "$engine" volume rm -f "$volume" >/dev/null 2>&1
    fi
    [[ -n $workdir ]] && rm -rf "$workdir"
    return 0
}
trap cleanup EXIT

# A chat and /metrics through curl, or Python's urllib where curl is missing.
http() {  # method url bearer [json-body] -> body on stdout, non-zero on a non-2xx answer
    python3 - "$@" <<'PY'
import sys, urllib.request
method, url, token = sys.argv[1:4]
data = sys.argv[4].encode() if len(sys.argv) > 4 else None
request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
if token:
    request.add_header("Authorization", f"Bearer {token}")
with urllib.request.urlopen(request, timeout=30) as response:
    sys.stdout.write(response.read().decode())
PY
}

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(36))'; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

main() {
    have python3 || die "python3 is needed (secrets, a free port, HTTP)"
    engine="$(find_engine)" || skip
    log "engine: $engine ($("$engine" --version 2>/dev/null | head -n 1))"

    local -a build_args=(build -f "$ROOT/deploy/Containerfile" -t "$IMAGE")
    # Podman's default (OCI) image format drops HEALTHCHECK.
    [[ $engine == podman ]] && build_args+=(--format docker)
    local started=$SECONDS
    "$engine" "${build_args[@]}" "$ROOT" || die "$engine build failed"
    log "built $IMAGE in $((SECONDS - started)) s ($("$engine" image inspect --format '{{.Size}}' "$IMAGE") bytes)"

    # Secrets as files, readable by the image's user (uid 10001).
    workdir="$(mktemp -d)"
    chmod 0755 "$workdir"
    local api_key
    api_key="gh_smoke_$(secret)"
    secret >"$workdir/jwt_secret"
    secret >"$workdir/metrics_token"
    printf '%s\n' "$api_key" >"$workdir/bootstrap_admin_api_key"
    secret >"$workdir/bootstrap_admin_password"
    chmod 0644 "$workdir"/*

    volume="$NAME-data"
    "$engine" volume create "$volume" >/dev/null
    local port
    port="$(free_port)"
    "$engine" run -d --name "$NAME" \
        --read-only --tmpfs /tmp --cap-drop ALL --security-opt no-new-privileges \
        -p "127.0.0.1:$port:8000" \
        -v "$volume:/data" -v "$workdir:/run/secrets:ro" \
        -e ENVIRONMENT=prod \
        -e JWT_SECRET_FILE=/run/secrets/jwt_secret \
        -e METRICS_TOKEN_FILE=/run/secrets/metrics_token \
        -e BOOTSTRAP_ADMIN_API_KEY_FILE=/run/secrets/bootstrap_admin_api_key \
        -e BOOTSTRAP_ADMIN_PASSWORD_FILE=/run/secrets/bootstrap_admin_password \
        "$IMAGE" >/dev/null || die "$engine run failed"

    local base="http://127.0.0.1:$port"
    started=$SECONDS
    until http GET "$base/readyz" "" >/dev/null 2>&1; do
        if [[ "$("$engine" inspect --format '{{.State.Running}}' "$NAME")" != true ]]; then
            "$engine" logs "$NAME" >&2 || true
            die "the container exited before it was ready"
        fi
        ((SECONDS - started < READY_TIMEOUT)) || {
            "$engine" logs "$NAME" >&2 || true
            die "not ready within $READY_TIMEOUT s"
        }
        sleep 1
    done
    log "ready in $((SECONDS - started)) s"

    local answer
    answer="$(http POST "$base/v1/chat/completions" "$api_key" \
        '{"model": "demo", "messages": [{"role": "user", "content": "smoke test"}]}')" ||
        die "the chat to the demo model failed"
    [[ $answer == *'"choices"'* ]] || die "the chat answered without choices: $answer"
    log "chat: ok"

    local metrics
    metrics="$(http GET "$base/metrics" "$(cat "$workdir/metrics_token")")" || die "GET /metrics failed"
    [[ $metrics == *gatehouse_http_request_duration_seconds_count* ]] || die "/metrics lacks the request histogram"
    [[ $metrics == *gatehouse_build_info* ]] || die "/metrics lacks gatehouse_build_info"
    log "metrics: ok"

    # The image's HEALTHCHECK (/healthz every 15 s) must report healthy.
    started=$SECONDS
    local health=""
    while ((SECONDS - started < 90)); do
        health="$("$engine" inspect --format '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$NAME")"
        [[ $health == healthy ]] && break
        [[ $health == unhealthy ]] && die "the health check reports unhealthy"
        sleep 2
    done
    [[ $health == healthy ]] || die "the health check did not report healthy within 90 s (status: ${health:-none})"
    log "health check: healthy"

    "$engine" stop -t 45 "$NAME" >/dev/null
    local code
    code="$("$engine" inspect --format '{{.State.ExitCode}}' "$NAME")"
    # SIGTERM ends `gatehouse serve` with 0, or 143 (uvicorn re-raises the signal once it has drained).
    [[ $code == 0 || $code == 143 ]] || die "exit code $code after SIGTERM"
    if "$engine" logs "$NAME" 2>&1 | grep -q 'Traceback'; then
        "$engine" logs "$NAME" >&2
        die "the server log holds a traceback"
    fi
    log "stopped cleanly (exit $code)"
    log "PASSED: $IMAGE built, served a chat, exposed metrics, passed its health check and drained"
}

main "$@"
