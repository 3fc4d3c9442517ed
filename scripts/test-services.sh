#!/usr/bin/env bash
# Make sure the test suite can get real PostgreSQL and Redis servers, Chromium for the console's tests, and
# HAProxy for the local HA topology's (scripts/local-ha.sh).
#
# Run by `make test` before pytest. Servers already answering on the standard local ports are used
# as they are; otherwise this only guarantees the server binaries are installed. It never starts a
# server itself: tests/support/services.py starts throwaway ones so they die with the test session.
# Idempotent, and quick (well under a second) when everything is already there.
set -euo pipefail

readonly PG_HOST=127.0.0.1 PG_PORT=5432
readonly REDIS_HOST=127.0.0.1 REDIS_PORT=6379

log() { printf 'test-services: %s\n' "$*"; }
die() { printf 'test-services: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# Run a command with a deadline when coreutils' timeout is available, so a firewalled or wedged
# port can never hang `make test`.
with_deadline() {
    if have timeout; then timeout "$@"; else shift; "$@"; fi
}

# Hide the password of a URL before printing it.
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

tcp_answers() {  # host port
    with_deadline 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

# PostgreSQL is usable when it accepts connections and, if psql is here to tell, lets the test
# suite in with trust auth as `postgres` or `root` (what tests/support/services.py tries).
pg_usable() {
    if have pg_isready; then
        with_deadline 3 pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 || return 1
    else
        tcp_answers "$PG_HOST" "$PG_PORT" || return 1
    fi
    have psql || return 0
    local user
    for user in postgres root; do
        # -w: never prompt for a password; a server that wants one is not usable unattended.
        if PGCONNECT_TIMEOUT=2 with_deadline 3 psql -w -X -q -A -t -h "$PG_HOST" -p "$PG_PORT" \
            -U "$user" -d postgres -c 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
    done
    log "PostgreSQL answers on $PG_HOST:$PG_PORT but refuses trust login as postgres/root"
    return 1
}

redis_usable() {
    if have redis-cli; then
        [[ "$(with_deadline 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
    else
        # Speak RESP by hand: send PING, expect +PONG (a server wanting AUTH answers -NOAUTH).
        with_deadline 3 bash -c "
            exec 3<>/dev/tcp/$REDIS_HOST/$REDIS_PORT || exit 1
            printf 'PING\r\n' >&3
            IFS= read -r -t 2 line <&3 || exit 1
            [[ \$line == +PONG* ]]
        " 2>/dev/null
    fi
}

# Print the first directory holding initdb, pg_ctl and postgres together (one version, so
# initdb and the server always match): the one pg_ctl in PATH comes from, then Debian's
# /usr/lib/postgresql/<version>/bin, newest version first.
pg_bindir() {
    local -a candidates=()
    local dir
    if have pg_ctl; then
        candidates+=("$(dirname "$(readlink -f "$(command -v pg_ctl)")")")
    fi
    if compgen -G '/usr/lib/postgresql/*/bin' >/dev/null; then
        while IFS= read -r dir; do candidates+=("$dir"); done \
            < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k4,4 -V -r)
    fi
    for dir in "${candidates[@]}"; do
        if [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    return 1
}

install_packages() {  # package...
    local pkgs="$*"
    if [[ $EUID -ne 0 ]]; then
        local how="apt-get install -y --no-install-recommends $pkgs"
        have sudo && how="sudo $how"
        die "missing server binaries for the tests; install them with: $how
  (or point the tests at running servers with TEST_POSTGRES_URL / TEST_REDIS_URL)"
    fi
    have apt-get || die "missing server binaries ($pkgs) and no apt-get to install them; install them by hand
  (or point the tests at running servers with TEST_POSTGRES_URL / TEST_REDIS_URL)"
    log "installing $pkgs (apt-get, quietly)..."
    local out
    out="$(mktemp)"
    # Keep apt quiet, but show everything it said if it fails.
    if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } \
        >"$out" 2>&1; then
        cat "$out" >&2
        rm -f "$out"
        die "apt-get install $pkgs failed"
    fi
    rm -f "$out"
}

main() {
    local need_pg=1 need_redis=1

    if [[ -n ${TEST_POSTGRES_URL:-} ]]; then
        log "PostgreSQL: using TEST_POSTGRES_URL=$(redact "$TEST_POSTGRES_URL")"
        need_pg=0
    elif pg_usable; then
        log "PostgreSQL: using the server on $PG_HOST:$PG_PORT"
        need_pg=0
    fi

    if [[ -n ${TEST_REDIS_URL:-} ]]; then
        log "Redis: using TEST_REDIS_URL=$(redact "$TEST_REDIS_URL")"
        need_redis=0
    elif redis_usable; then
        log "Redis: using the server on $REDIS_HOST:$REDIS_PORT"
        need_redis=0
    fi

    # The console's browser tests drive Debian's Chromium (Playwright cannot download a browser here).
    local -a browser=()
    if [[ -z ${CHROMIUM_PATH:-} ]] && ! have chromium && ! have chromium-browser; then
        browser=(chromium fonts-dejavu-core)
    fi

    if ((${#browser[@]})); then
        install_packages "${browser[@]}"
        have chromium || die "chromium still not found after install"
        log "Chromium: installed $(chromium --version 2>/dev/null || echo chromium)"
    fi

    # The HA tests (tests/e2e/ha) put Debian's HAProxy in front of three replicas (scripts/local-ha.sh).
    if ! have haproxy; then
        install_packages haproxy
        have haproxy || die "haproxy still not found after install"
        log "HAProxy: installed $(haproxy -v 2>/dev/null | head -n 1)"
    fi

    # tests/unit/deploy/test_scripts.py lints every scripts/*.sh with Debian's ShellCheck.
    if ! have shellcheck; then
        install_packages shellcheck
        have shellcheck || die "shellcheck still not found after install"
        log "ShellCheck: installed $(shellcheck --version 2>/dev/null | sed -n 's/^version: //p')"
    fi

    ((need_pg || need_redis)) || return 0

    local -a missing=()
    if ((need_pg)) && ! pg_bindir >/dev/null; then missing+=(postgresql); fi
    if ((need_redis)) && ! have redis-server; then missing+=(redis-server); fi
    ((${#missing[@]} == 0)) || install_packages "${missing[@]}"

    if ((need_pg)); then
        local dir
        dir="$(pg_bindir)" || die "PostgreSQL binaries (initdb, pg_ctl, postgres) still not found after install"
        log "PostgreSQL: the tests will start a throwaway server with $dir"
    fi
    if ((need_redis)); then
        have redis-server || die "redis-server still not found after install"
        log "Redis: the tests will start a throwaway server with $(command -v redis-server)"
    fi
}

main "$@"
