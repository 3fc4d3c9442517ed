#!/usr/bin/env bash
# Check and unit-test the Prometheus alerting rules (deploy/prometheus/alerts.yml) with promtool.
#
# Run by `make test` through tests/integration/monitoring/test_alert_rules.py. promtool comes from PATH, else
# /usr/bin/promtool; when neither exists and we are root on a Debian-like system, Debian's
# `prometheus` package is installed for it (about 19 MB download, ~10 s). That package also ships a
# Prometheus server: its start is blocked during the install and, if the install enabled the
# service, it is stopped and disabled again, so no server is left running or starting at boot.
# Exits non-zero, saying why, when promtool cannot be found or installed, or a check fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly RULES="$ROOT/deploy/prometheus/alerts.yml"
readonly TESTS="$ROOT/deploy/prometheus/alerts_test.yml"
readonly POLICY=/usr/sbin/policy-rc.d

log() { printf 'promtool-test: %s\n' "$*"; }
die() { printf 'promtool-test: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

find_promtool() {
    if have promtool; then
        command -v promtool
    elif [[ -x /usr/bin/promtool ]]; then
        printf '%s\n' /usr/bin/promtool
    else
        return 1
    fi
}

# Remove the policy-rc.d this script created (never one that was already there).
policy_created=0
cleanup() {
    if ((policy_created)); then rm -f "$POLICY"; fi
}
trap cleanup EXIT

install_promtool() {
    local manual="install Debian's prometheus package (apt-get install --no-install-recommends prometheus),
  or put a promtool binary from https://prometheus.io/download/ on PATH"
    [[ $EUID -eq 0 ]] || die "promtool not found and not running as root to install it; $manual"
    have apt-get || die "promtool not found and no apt-get to install it; $manual"

    local out
    out="$(mktemp)"
    log "promtool not found; installing Debian's prometheus package (apt-get, quietly)..."
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        die "apt-get update failed; $manual"
    fi
    # No PyPI or other packaged alternative ships promtool: without Debian's package, stop here.
    local candidate
    candidate="$(LC_ALL=C apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [[ -z $candidate || $candidate == "(none)" ]]; then
        rm -f "$out"
        die "promtool not found and the package sources offer no 'prometheus' package; $manual"
    fi

    # Keep the package's Prometheus server from starting (the invoke-rc.d convention: 101 = denied).
    if [[ ! -e $POLICY ]]; then
        printf '#!/bin/sh\n# Temporary, from scripts/promtool-test.sh.\nexit 101\n' >"$POLICY"
        chmod 755 "$POLICY"
        policy_created=1
    fi
    local started=$SECONDS
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
        >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        die "apt-get install prometheus ($candidate) failed; $manual"
    fi
    rm -f "$out"
    cleanup
    policy_created=0
    log "installed prometheus $candidate in $((SECONDS - started)) s"

    # Only promtool is wanted: make sure the server is neither running nor starting at boot.
    # (systemctl disable works offline too: in a container it just removes the boot-time link.)
    if have systemctl; then
        if [[ -d /run/systemd/system ]]; then
            systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        else
            systemctl disable prometheus.service >/dev/null 2>&1 || true
        fi
    fi
    if [[ ! -d /run/systemd/system ]] && have service; then
        service prometheus stop >/dev/null 2>&1 || true
    fi
}

main() {
    local promtool
    if ! promtool="$(find_promtool)"; then
        install_promtool
        promtool="$(find_promtool)" || die "promtool still not found after installing the prometheus package"
    fi
    log "using $promtool ($("$promtool" --version 2>&1 | head -n 1))"

    cd "$ROOT"
    "$promtool" check rules "${RULES#"$ROOT"/}"
    "$promtool" test rules "${TESTS#"$ROOT"/}"
}

main "$@"
