#!/usr/bin/env bash
# The HA topology as local processes, no containers: HAProxy in front of three `gatehouse serve` replicas sharing
# one PostgreSQL database and one Redis. The test suite runs it (tests/e2e/ha/); operators use it to try a
# rotation, a reload or a rolling restart before doing it for real. RUNBOOK.md, "Local HA topology".
#
#   scripts/local-ha.sh up                 start what is not running; wait until every replica is ready through
#                                          the proxy; print the URLs and where logs, pids and secrets are
#   scripts/local-ha.sh down [--purge]     SIGTERM everything and wait; --purge also deletes HA_DIR and the
#                                          database the script created
#   scripts/local-ha.sh status             processes, HAProxy's view of each replica, each replica's /readyz
#   scripts/local-ha.sh restart-replica N  drain replica N in HAProxy, stop it gracefully, start it, put it back
#   scripts/local-ha.sh roll               rolling restart: SIGTERM each replica in turn (it drains itself: /readyz
#                                          503, HAProxy's checks take it out), start it, wait until HAProxy has it UP
#   scripts/local-ha.sh logs [-f] [proxy|N]
#   scripts/local-ha.sh env                `export` lines for the replicas' settings (for `gatehouse reload`, ...)
#
# Settings (environment):
#   HA_DIR            state directory (default .local-ha/ in the repository)
#   HA_PORT           the proxy's port (default 8800); HA_REPLICA_PORTS the replicas' (default "8801 8802 8803")
#   DATABASE_URL      PostgreSQL (default: a fresh database the script creates on 127.0.0.1:5432)
#   REDIS_URL         default redis://127.0.0.1:6379/0; REDIS_PREFIX default a unique one per HA_DIR
#   ENVIRONMENT       default prod (the script generates strong secrets, so prod's checks pass)
#   BACKUP_DIR        default HA_DIR/backups, shared by the replicas; each has its own DATA_DIR, HA_DIR/replica-N
#   Any other Gatehouse setting (GATEHOUSE_CONFIG, OPENAI_BASE_URL, UPSTREAM_READ_TIMEOUT, ...) reaches the
#   replicas as it is; with no upstream configured they serve the built-in demo model. Secrets are files in
#   HA_DIR/secrets (each file NAME is passed as NAME_FILE), so they can be rotated and reloaded; an
#   OPENAI_API_KEY (OLLAMA_, ANTHROPIC_) given in the environment is written there on the first `up`.
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly VENV="$ROOT/.venv"
readonly PY="$VENV/bin/python"
readonly REPLICAS=(1 2 3)
# Secrets the script generates on the first `up` (kept across down/up, so keys and sessions stay valid).
readonly GENERATED_SECRETS=(jwt_secret job_token metrics_token backup_key bootstrap_admin_api_key bootstrap_admin_password)
# Rotation windows (JOB_TOKEN_PREVIOUS...): empty files, filled by an operator during a rotation.
readonly PREVIOUS_SECRETS=(jwt_secret_previous job_token_previous metrics_token_previous)
readonly UPSTREAM_KEYS=(OPENAI_API_KEY OLLAMA_API_KEY ANTHROPIC_API_KEY)
readonly SECRET_NAMES=(JWT_SECRET JOB_TOKEN METRICS_TOKEN BACKUP_KEY BOOTSTRAP_ADMIN_API_KEY BOOTSTRAP_ADMIN_PASSWORD
    JWT_SECRET_PREVIOUS JOB_TOKEN_PREVIOUS METRICS_TOKEN_PREVIOUS "${UPSTREAM_KEYS[@]}")

log() { printf 'local-ha: %s\n' "$*" >&2; }
die() { printf 'local-ha: error: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

HA_DIR="$(realpath -m -- "${HA_DIR:-$ROOT/.local-ha}")"  # absolute (the replicas run in it); made by `up`
readonly HA_DIR
readonly STATE="$HA_DIR/state.env" RUN="$HA_DIR/run" LOGS="$HA_DIR/logs" SECRETS="$HA_DIR/secrets"
readonly SOCK="$HA_DIR/run/haproxy.sock" CFG="$HA_DIR/haproxy.cfg"
# A replica stops within SHUTDOWN_DRAIN_SECONDS + SHUTDOWN_DEADLINE_SECONDS + 5 s (then the request log's flush):
# the wait before a kill is that plus a margin, unless HA_STOP_TIMEOUT says otherwise.
stop_timeout_default() {
    "$PY" -c 'import math, sys; print(math.ceil(float(sys.argv[1]) + float(sys.argv[2]) + 15))' \
        "${SHUTDOWN_DRAIN_SECONDS:-5}" "${SHUTDOWN_DEADLINE_SECONDS:-30}" 2>/dev/null || echo 50
}
readonly START_TIMEOUT="${HA_START_TIMEOUT:-120}" STOP_TIMEOUT="${HA_STOP_TIMEOUT:-$(stop_timeout_default)}"

# ---------------------------------------------------------------------------------------------------------------
# State: what `up` chose once (database, Redis prefix, ports), kept in HA_DIR/state.env for the other commands.

load_state() {
    [[ -f $STATE ]] || return 0
    local line name value
    while IFS= read -r line; do
        [[ $line == *=* ]] || continue
        name="${line%%=*}" value="${line#*=}"
        # What the caller sets explicitly wins over what an earlier `up` chose, except the database the script
        # created (it stays this topology's).
        if [[ -z ${!name:-} || $name == CREATED_DATABASE ]]; then
            printf -v "$name" '%s' "$value"
            export "${name?}"
        fi
    done <"$STATE"
}

save_state() {
    local tmp="$STATE.tmp"
    {
        printf 'DATABASE_URL=%s\n' "$DATABASE_URL"
        printf 'CREATED_DATABASE=%s\n' "${CREATED_DATABASE:-}"
        printf 'REDIS_URL=%s\n' "$REDIS_URL"
        printf 'REDIS_PREFIX=%s\n' "$REDIS_PREFIX"
        printf 'HA_PORT=%s\n' "$HA_PORT"
        printf 'HA_REPLICA_PORTS=%s\n' "$HA_REPLICA_PORTS"
    } >"$tmp"
    chmod 600 "$tmp"
    mv "$tmp" "$STATE"
}

replica_port() {  # N
    local -a ports
    read -r -a ports <<<"$HA_REPLICA_PORTS"
    ((${#ports[@]} == ${#REPLICAS[@]})) || die "HA_REPLICA_PORTS must name ${#REPLICAS[@]} ports, got '$HA_REPLICA_PORTS'"
    printf '%s\n' "${ports[$1 - 1]}"
}

# ---------------------------------------------------------------------------------------------------------------
# Prerequisites

need_venv() {
    [[ -x $VENV/bin/gatehouse ]] && return 0
    log "no .venv yet: running make install"
    make -C "$ROOT" install >&2
}

need_haproxy() {
    have haproxy && return 0
    if [[ $EUID -eq 0 ]] && have apt-get; then
        log "installing haproxy (apt-get)..."
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1 ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null; } ||
            die "apt-get install haproxy failed"
        have haproxy || die "haproxy still not found after install"
        return 0
    fi
    local how="apt-get install -y --no-install-recommends haproxy"
    [[ $EUID -ne 0 ]] && have sudo && how="sudo $how"
    die "haproxy is needed for the proxy; install it with: $how"
}

# A fresh database on the local PostgreSQL (trust login as postgres or root, as tests/support/services.py).
create_database() {
    local name="gatehouse_ha_$(date +%s)_$RANDOM"
    DATABASE_URL="$("$PY" - "$name" <<'EOF'
import asyncio, sys
import asyncpg

async def main(name: str) -> str:
    last = None
    for user in ("postgres", "root"):
        try:
            conn = await asyncpg.connect(host="127.0.0.1", port=5432, user=user, database="postgres", timeout=5)
        except Exception as exc:  # wrong role, refused...: try the next, report the last
            last = exc
            continue
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await conn.close()
        return f"postgresql://{user}@127.0.0.1:5432/{name}"
    sys.exit(f"no PostgreSQL accepts a trust login as postgres or root on 127.0.0.1:5432 ({last}); "
             "start one, or set DATABASE_URL")

print(asyncio.run(main(sys.argv[1])))
EOF
)" || die "could not create a database (see above)"
    CREATED_DATABASE="$name"
    log "created database $name on 127.0.0.1:5432"
}

drop_created_database() {
    [[ -n ${CREATED_DATABASE:-} ]] || return 0
    "$PY" - "$DATABASE_URL" "$CREATED_DATABASE" <<'EOF' || log "could not drop database $CREATED_DATABASE (see above)"
import asyncio, sys
from urllib.parse import urlsplit
import asyncpg

async def main(url: str, name: str) -> None:
    parts = urlsplit(url)
    conn = await asyncpg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username,
                                 database="postgres", timeout=5)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await conn.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
EOF
}

flush_redis_prefix() {  # the topology's keys in Redis (rate-limit windows, stream registry...), nobody else's
    [[ -n ${REDIS_URL:-} && -n ${REDIS_PREFIX:-} ]] || return 0
    "$PY" - "$REDIS_URL" "$REDIS_PREFIX" <<'EOF' || log "could not delete the Redis keys under $REDIS_PREFIX (see above)"
import re, sys
import redis

client = redis.Redis.from_url(sys.argv[1], socket_connect_timeout=3, socket_timeout=5)
pattern = re.sub(r"([\\*?\[\]])", r"\\\1", sys.argv[2]) + "*"  # the prefix itself, never a glob
keys = list(client.scan_iter(match=pattern, count=1000))
for start in range(0, len(keys), 500):
    client.delete(*keys[start : start + 500])
client.close()
EOF
}

write_secret() {  # name value: written aside, then moved into place (a reader never sees half a file)
    local tmp="$SECRETS/.$1.tmp"
    (umask 077 && printf '%s\n' "$2" >"$tmp")
    mv "$tmp" "$SECRETS/$1"
}

prepare_secrets() {
    mkdir -p "$SECRETS"
    chmod 700 "$SECRETS"
    local name
    local name upper value
    for name in "${GENERATED_SECRETS[@]}"; do
        [[ -s $SECRETS/$name ]] && continue
        upper="${name^^}"
        value="${!upper:-}"  # given in the environment: that value (on the first `up` only)
        if [[ -z $value ]]; then
            value="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(36))')"
            [[ $name == bootstrap_admin_api_key ]] && value="gh_$value"  # Gatehouse's API key prefix
        fi
        write_secret "$name" "$value"
    done
    for name in "${PREVIOUS_SECRETS[@]}"; do
        [[ -e $SECRETS/$name ]] || write_secret "$name" ""
    done
    for name in "${UPSTREAM_KEYS[@]}"; do
        [[ -n ${!name:-} && ! -s $SECRETS/${name,,} ]] && write_secret "${name,,}" "${!name}"
    done
    for name in "${SECRET_NAMES[@]}"; do
        if [[ -n ${!name:-} && -s $SECRETS/${name,,} && "$(<"$SECRETS/${name,,}")" != "${!name}" ]]; then
            log "$name differs from secrets/${name,,}: the file is what the replicas use (edit it, then gatehouse reload)"
        fi
    done
}

# The replicas' settings on top of the caller's environment: every secret as NAME_FILE (an environment value
# would win over the file, so those are dropped), state under HA_DIR: a DATA_DIR per replica (its pid file for
# SIGHUP, as each container has its own /data), one BACKUP_DIR for all (a shared volume). Without N: for the CLI.
replica_env() {  # [N]
    local -a out=(
        "DATABASE_URL=$DATABASE_URL"
        "REDIS_URL=$REDIS_URL"
        "REDIS_PREFIX=$REDIS_PREFIX"
        "ENVIRONMENT=${ENVIRONMENT:-prod}"
        "DATA_DIR=$HA_DIR/${1:+replica-}${1:-data}"
        "BACKUP_DIR=${BACKUP_DIR:-$HA_DIR/backups}"
        "FORWARDED_ALLOW_IPS=127.0.0.1"
    )
    local file
    for file in "$SECRETS"/*; do
        [[ -f $file ]] || continue
        local base="${file##*/}"
        out+=("${base^^}_FILE=$file")
    done
    printf '%s\n' "${out[@]}"
}

unset_secret_args() {  # `env -u` arguments for every secret given as a plain variable
    local name
    for name in "${SECRET_NAMES[@]}"; do
        printf -- '-u\n%s\n' "$name"
    done
}

# ---------------------------------------------------------------------------------------------------------------
# Processes: pid files in HA_DIR/run; a pid is trusted only while its command line is still the process we started.

pid_of() {  # name marker: the live pid from RUN/name.pid whose command line contains marker, or nothing
    local file="$RUN/$1.pid" pid
    [[ -f $file ]] || return 1
    pid="$(<"$file")"
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
    printf '%s\n' "$pid"
}

replica_marker() { printf -- '--port %s' "$(replica_port "$1")"; }
replica_pid() { pid_of "replica-$1" "$(replica_marker "$1")"; }
proxy_pid() { pid_of haproxy "$CFG"; }

http_status() {  # url: the status code, or 000 when nothing answers
    "$PY" - "$1" <<'EOF'
import sys, urllib.error, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
        print(answer.status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except Exception:
    print("000")
EOF
}

haproxy_cmd() {  # command: HAProxy's runtime API over the admin socket (no socat needed)
    "$PY" - "$SOCK" "$1" <<'EOF'
import socket, sys
with socket.socket(socket.AF_UNIX) as sock:
    sock.settimeout(5)
    sock.connect(sys.argv[1])
    sock.sendall(sys.argv[2].encode() + b"\n")
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
sys.stdout.write(b"".join(chunks).decode())
EOF
}

server_field() {  # N column: a column of `show stat` for replica N (status, scur...)
    haproxy_cmd "show stat" 2>/dev/null | awk -F, -v srv="r$1" -v col="$2" '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) idx[$i] = i; next }
        $1 == "replicas" && $2 == srv { print $idx[col] }'
}

start_replica() {  # N
    local n="$1" port
    port="$(replica_port "$n")"
    mkdir -p "$RUN" "$LOGS"
    local -a settings unset_args
    mapfile -t settings < <(replica_env "$n")
    mapfile -t unset_args < <(unset_secret_args)
    printf '\n=== %s: replica %s starting on 127.0.0.1:%s\n' "$(date -u +%FT%TZ)" "$n" "$port" >>"$LOGS/replica-$n.log"
    # setsid: the replica outlives this script and a terminal's hang-up; its cwd is HA_DIR, so an HA_DIR/.env is
    # the .env it reads (and re-reads on `gatehouse reload`), never the repository's.
    (cd "$HA_DIR" && exec setsid env "${unset_args[@]}" "${settings[@]}" \
        "$VENV/bin/gatehouse" serve --host 127.0.0.1 --port "$port" --forwarded-allow-ips 127.0.0.1 \
        >>"$LOGS/replica-$n.log" 2>&1 </dev/null) &
    printf '%s\n' "$!" >"$RUN/replica-$n.pid"
}

wait_replica_ready() {  # N: until its own /readyz says 200
    local n="$1" port deadline=$((SECONDS + START_TIMEOUT))
    port="$(replica_port "$n")"
    while ((SECONDS < deadline)); do
        # The pid itself, not its command line: just started, it may still be the shell about to exec gatehouse.
        if ! kill -0 "$(<"$RUN/replica-$n.pid")" 2>/dev/null; then
            tail -n 30 "$LOGS/replica-$n.log" >&2 || true
            die "replica $n exited while starting (log: $LOGS/replica-$n.log)"
        fi
        [[ $(http_status "http://127.0.0.1:$port/readyz") == 200 ]] && return 0
        sleep 0.3
    done
    tail -n 30 "$LOGS/replica-$n.log" >&2 || true
    die "replica $n not ready after ${START_TIMEOUT}s (log: $LOGS/replica-$n.log)"
}

stop_pid() {  # pid what: SIGTERM, wait STOP_TIMEOUT (in-flight requests finish), then SIGKILL
    local pid="$1" what="$2" deadline=$((SECONDS + STOP_TIMEOUT))
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        log "$what (pid $pid) still running after ${STOP_TIMEOUT}s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
}

write_haproxy_cfg() {
    local servers="" n
    for n in "${REPLICAS[@]}"; do
        servers+="    server r$n 127.0.0.1:$(replica_port "$n")"$'\n'
    done
    cat >"$CFG.tmp" <<EOF
# Written by scripts/local-ha.sh; edits are overwritten by the next \`up\`.
global
    log stdout format raw local0
    maxconn 4096
    stats socket $SOCK mode 600 level admin
    stats timeout 30s

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # The client's address for the replicas' logs and IP rate limits (they trust 127.0.0.1: FORWARDED_ALLOW_IPS).
    option forwardfor
    # One connection to a replica per request, keep-alive towards the client: uvicorn closes idle connections
    # after 5 s and when it shuts down, and a POST sent on a connection it is just closing can neither succeed nor
    # be retried safely. On loopback a new connection costs a fraction of a millisecond.
    option http-server-close
    # A connection a replica refused (stopped, restarting) is retried on another replica: nothing was sent yet.
    # (`option redispatch 1`: every retry goes to another server, not the one that refused.)
    retries 3
    option redispatch 1
    timeout connect 3s
    timeout queue 30s
    timeout http-request 30s
    timeout http-keep-alive 60s
    # Streams: a replica sends a keep-alive at least every STREAM_PING_SECONDS (15 s), and a non-streamed answer
    # may take UPSTREAM_READ_TIMEOUT (300 s) to start; both sides get that plus a margin.
    timeout client 330s
    timeout server 330s
    timeout tunnel 1h
    timeout client-fin 10s
    timeout server-fin 10s
    timeout check 2s

frontend gatehouse
    bind 127.0.0.1:$HA_PORT
    default_backend replicas

backend replicas
    # Streams are long and uneven: the replica with the fewest open requests takes the next one.
    balance leastconn
    # /readyz: the database answers and its schema is at the code's head, and the replica is not draining. On
    # SIGTERM a replica answers 503 at once and keeps serving for SHUTDOWN_DRAIN_SECONDS (5 s), which must cover
    # (fall + 1) x inter = 3 s: HAProxy has taken it out before it stops accepting connections.
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 1s fall 2 rise 2
    # A request that reached a replica and got nothing back (it crashed or shut down mid-way) is sent again only
    # when replaying it is harmless (GET, HEAD); a chat is never sent twice.
    retry-on conn-failure empty-response
    http-request disable-l7-retry unless METH_GET || METH_HEAD
    # Which replica answered, for operators and for the tests.
    http-response set-header X-Gatehouse-Backend %[srv_name]
$servers
EOF
    haproxy -c -q -f "$CFG.tmp" || die "HAProxy refuses the generated configuration ($CFG.tmp)"
    mv "$CFG.tmp" "$CFG"
}

start_proxy() {
    write_haproxy_cfg
    printf '\n=== %s: haproxy starting on 127.0.0.1:%s\n' "$(date -u +%FT%TZ)" "$HA_PORT" >>"$LOGS/haproxy.log"
    # -db: stay in the foreground (logs to stdout, our file); setsid detaches it from this script.
    setsid haproxy -db -f "$CFG" >>"$LOGS/haproxy.log" 2>&1 </dev/null &
    printf '%s\n' "$!" >"$RUN/haproxy.pid"
}

wait_all_up_through_proxy() {
    local deadline=$((SECONDS + START_TIMEOUT)) n missing
    while ((SECONDS < deadline)); do
        proxy_pid >/dev/null || { tail -n 20 "$LOGS/haproxy.log" >&2; die "haproxy exited (log: $LOGS/haproxy.log)"; }
        missing=""
        for n in "${REPLICAS[@]}"; do
            [[ $(server_field "$n" status) == UP ]] || missing+=" r$n"
        done
        if [[ -z $missing && $(http_status "http://127.0.0.1:$HA_PORT/readyz") == 200 ]]; then
            return 0
        fi
        sleep 0.3
    done
    die "not every replica is UP in HAProxy after ${START_TIMEOUT}s (missing:$missing); see scripts/local-ha.sh status"
}

# ---------------------------------------------------------------------------------------------------------------
# Commands

cmd_up() {
    need_venv
    need_haproxy
    load_state
    mkdir -p "$RUN" "$LOGS"
    HA_PORT="${HA_PORT:-8800}"
    HA_REPLICA_PORTS="${HA_REPLICA_PORTS:-8801 8802 8803}"
    REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
    REDIS_PREFIX="${REDIS_PREFIX:-gatehouse-ha-$("$PY" -c 'import secrets; print(secrets.token_hex(4))'):}"
    [[ -n ${DATABASE_URL:-} ]] || create_database
    [[ $DATABASE_URL == postgres* ]] || die "DATABASE_URL must be PostgreSQL (replicas share it); got $(redact "$DATABASE_URL")"
    save_state
    prepare_secrets

    # The first replica alone (it migrates and creates the bootstrap admin), then the others together.
    local n
    if ! replica_pid 1 >/dev/null; then
        start_replica 1
    fi
    wait_replica_ready 1
    for n in "${REPLICAS[@]:1}"; do
        replica_pid "$n" >/dev/null || start_replica "$n"
    done
    for n in "${REPLICAS[@]:1}"; do wait_replica_ready "$n"; done
    if proxy_pid >/dev/null; then
        # Running already: a replica left drained by an interrupted restart-replica takes requests again.
        for n in "${REPLICAS[@]}"; do haproxy_cmd "set server replicas/r$n state ready" >/dev/null; done
    else
        start_proxy
    fi
    wait_all_up_through_proxy

    printf 'proxy:    http://127.0.0.1:%s\n' "$HA_PORT"
    for n in "${REPLICAS[@]}"; do
        printf 'replica %s: http://127.0.0.1:%s (pid %s)\n' "$n" "$(replica_port "$n")" "$(replica_pid "$n")"
    done
    printf 'database: %s\n' "$(redact "$DATABASE_URL")"
    printf 'redis:    %s (prefix %s)\n' "$(redact "$REDIS_URL")" "$REDIS_PREFIX"
    printf 'logs:     %s\n' "$LOGS"
    printf 'pids:     %s\n' "$RUN"
    printf 'secrets:  %s (admin API key: bootstrap_admin_api_key)\n' "$SECRETS"
}

cmd_down() {
    local purge=0
    [[ ${1:-} == --purge ]] && purge=1
    load_state
    local pid n
    if [[ -f $STATE ]]; then
        # HAProxy first, with a soft stop (SIGUSR1): it stops listening and lets requests in flight finish.
        if pid="$(proxy_pid)"; then
            kill -USR1 "$pid" 2>/dev/null || true
        fi
        local -a pids=()
        for n in "${REPLICAS[@]}"; do
            if pid="$(replica_pid "$n")"; then
                kill -TERM "$pid" 2>/dev/null || true
                pids+=("$pid")
            fi
        done
        for pid in "${pids[@]}"; do stop_pid "$pid" "a replica"; done
        if pid="$(proxy_pid)"; then stop_pid "$pid" haproxy; fi
    fi
    rm -rf "$RUN"
    log "stopped"
    if ((purge)); then
        drop_created_database
        flush_redis_prefix
        rm -rf "$HA_DIR"
        log "removed $HA_DIR"
    fi
}

cmd_status() {
    [[ -f $STATE ]] || { echo "not set up (no $STATE): run scripts/local-ha.sh up"; return 3; }
    load_state
    local worst=0 pid n
    if pid="$(proxy_pid)"; then
        printf 'proxy      http://127.0.0.1:%s  pid %s  /readyz %s\n' "$HA_PORT" "$pid" \
            "$(http_status "http://127.0.0.1:$HA_PORT/readyz")"
    else
        printf 'proxy      http://127.0.0.1:%s  not running\n' "$HA_PORT"
        worst=3
    fi
    for n in "${REPLICAS[@]}"; do
        local port state="-" sessions="-"
        port="$(replica_port "$n")"
        if proxy_pid >/dev/null; then
            state="$(server_field "$n" status)"
            sessions="$(server_field "$n" scur)"
        fi
        if pid="$(replica_pid "$n")"; then
            printf 'replica %s  http://127.0.0.1:%s  pid %s  /readyz %s  haproxy %s, %s in flight\n' "$n" "$port" \
                "$pid" "$(http_status "http://127.0.0.1:$port/readyz")" "$state" "$sessions"
        else
            printf 'replica %s  http://127.0.0.1:%s  not running  haproxy %s\n' "$n" "$port" "$state"
            worst=3
        fi
    done
    return "$worst"
}

restart_one() {  # N: SIGTERM (the replica drains, finishes or ends what is in flight, exits), start, wait ready
    local n="$1" pid deadline
    if pid="$(replica_pid "$n")"; then
        stop_pid "$pid" "replica $n"
    fi
    start_replica "$n"
    wait_replica_ready "$n"
    haproxy_cmd "set server replicas/r$n state ready" >/dev/null  # back in rotation if an operator drained it
    deadline=$((SECONDS + START_TIMEOUT))
    until [[ $(server_field "$n" status) == UP ]]; do
        ((SECONDS < deadline)) || die "replica $n is not UP in HAProxy after ${START_TIMEOUT}s"
        sleep 0.2
    done
    log "replica $n restarted (pid $(replica_pid "$n"))"
}

need_running_proxy() {
    [[ -f $STATE ]] || die "not set up: run scripts/local-ha.sh up first"
    load_state
    proxy_pid >/dev/null || die "haproxy is not running: run scripts/local-ha.sh up"
}

cmd_restart_replica() {
    local n="${1:-}"
    [[ $n =~ ^[1-3]$ ]] || die "restart-replica needs the replica's number: 1, 2 or 3"
    need_running_proxy
    # HAProxy sends it no new request from now on (no wait for its checks); what is in flight finishes on it within
    # its SHUTDOWN_DEADLINE_SECONDS once it has the SIGTERM.
    haproxy_cmd "set server replicas/r$n state drain" >/dev/null
    restart_one "$n"
}

cmd_roll() {
    need_running_proxy
    local n
    for n in "${REPLICAS[@]}"; do
        # As Kubernetes or compose stop a replica: a SIGTERM only. The replica drains itself (/readyz 503 while it
        # still serves, for SHUTDOWN_DRAIN_SECONDS), HAProxy's checks take it out, the requests in flight finish
        # (or end with shutdown_deadline), it exits; the next one goes only once this one is UP again.
        restart_one "$n"
    done
    log "rolled ${#REPLICAS[@]} replicas"
}

cmd_logs() {
    local follow=0 which=""
    while (($#)); do
        case "$1" in
        -f | --follow) follow=1 ;;
        proxy | haproxy) which="$LOGS/haproxy.log" ;;
        [1-3]) which="$LOGS/replica-$1.log" ;;
        *) die "logs [-f] [proxy|1|2|3]" ;;
        esac
        shift
    done
    local -a files
    if [[ -n $which ]]; then files=("$which"); else files=("$LOGS/haproxy.log" "$LOGS"/replica-*.log); fi
    if ((follow)); then exec tail -n 20 -F "${files[@]}"; fi
    tail -n 50 "${files[@]}"
}

cmd_env() {
    [[ -f $STATE ]] || die "not set up: run scripts/local-ha.sh up first"
    load_state
    local line
    while IFS= read -r line; do
        printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
    done < <(replica_env)
    local name
    for name in "${SECRET_NAMES[@]}"; do printf 'unset %s\n' "$name"; done
}

main() {
    local command="${1:-}"
    (($#)) && shift
    case "$command" in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    restart-replica) cmd_restart_replica "$@" ;;
    roll) cmd_roll "$@" ;;
    logs) cmd_logs "$@" ;;
    env) cmd_env "$@" ;;
    *)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
    esac
}

main "$@"
