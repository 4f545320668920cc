#!/usr/bin/env bash
# A throw-away PostgreSQL server for mpsearch's tests, benchmarks and by-hand tries.
#
#   bash scripts/test-postgres.sh start      # initdb + start (once); prints the URL
#   bash scripts/test-postgres.sh url        # prints the URL of the running server (exit 1 if none)
#   bash scripts/test-postgres.sh stop       # stops the server and deletes its folder
#   bash scripts/test-postgres.sh installed  # exit 0 when initdb and pg_ctl are found
#   bash scripts/test-postgres.sh run CMD…   # a server of its own in a fresh temporary folder, CMD run
#                                            # with MPSEARCH_TEST_POSTGRES set, the server stopped and
#                                            # its folder deleted when CMD ends (whatever its exit code,
#                                            # also on Ctrl-C); exits with CMD's exit code
#
# The server listens on a Unix socket only (listen_addresses = ''), in its own folder
# (start/url/stop: ${MPSEARCH_PG_DIR:-/tmp/mpsearch-test-postgres}; run: a new `mktemp -d` folder each
# time, so runs at the same time do not meet), so nothing outside this machine can reach it, and it
# does not meet a system cluster (whose socket is in /var/run/postgresql). Authentication is `trust`
# for the local socket: it is a test server. Its data are deleted by `stop`.
#
# PostgreSQL refuses to run as root: as root, initdb and the server run as the `postgres` user
# (created by Debian's postgresql package) through runuser. The binaries are taken from PATH, else from
# the newest /usr/lib/postgresql/*/bin (where Debian puts them). `.ci/run` installs the package when it
# is missing. The tests read the URL from MPSEARCH_TEST_POSTGRES; without it they print SKIPPED (and
# fail under CI=true).
#
# `run` never fails because the server cannot start: it says why and runs CMD without the variable
# (the PostgreSQL tests then skip, or fail under CI=true, which is what CI wants).
set -euo pipefail

DIR="${MPSEARCH_PG_DIR:-/tmp/mpsearch-test-postgres}"
DATA="$DIR/data"
LOG="$DIR/server.log"
DB_USER=postgres

say() {
    echo "test-postgres: $*" >&2
}

die() {
    say "error: $*"
    exit 1
}

# The folder of initdb and pg_ctl.
bindir() {
    if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
        dirname "$(command -v pg_ctl)"
        return 0
    fi
    local newest
    newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n "$newest" && -x "$newest/pg_ctl" ]] || return 1
    echo "$newest"
}

# Runs a command as the server's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# The URL: user postgres over the socket folder (percent-encoded in the host part).
url() {
    local host=${DIR//\//%2F}
    echo "postgres://$DB_USER@$host/postgres"
}

running() {
    [[ -f "$DATA/postmaster.pid" ]] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

# Empties $DIR for a new server: only a folder this script made (or an empty one) is deleted.
clear_dir() {
    [[ -e "$DIR" ]] || return 0
    if [[ -n "$(ls -A "$DIR")" && ! -e "$DIR/initdb.log" && ! -e "$DATA/PG_VERSION" ]]; then
        die "$DIR is not empty and is not a test server's folder: set MPSEARCH_PG_DIR to another one"
    fi
    rm -rf "$DIR"
}

start() {
    BIN=$(bindir) || die "PostgreSQL is not installed (apt-get install postgresql)"
    if running; then
        url
        return 0
    fi
    if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
        die "running as root needs a \`postgres\` user to own the server (Debian's postgresql package creates it)"
    fi
    clear_dir
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$DIR"
    as_owner "$BIN/initdb" -D "$DATA" -U "$DB_USER" --auth=trust --encoding=UTF8 --locale=C.UTF-8 \
        >"$DIR/initdb.log" 2>&1 || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    # The socket folder must be searchable by whoever runs the tests (root, or the same user).
    chmod 711 "$DIR"
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$DIR' -c max_connections=200" \
        start >/dev/null || { cat "$LOG" >&2; die "the server did not start"; }
    say "server running in $DIR"
    url
}

stop() {
    BIN=$(bindir) || return 0
    if running; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        say "server in $DIR stopped"
    fi
    clear_dir
}

case "${1:-}" in
start)
    start
    say "stop it with: bash scripts/test-postgres.sh stop"
    ;;
url)
    BIN=$(bindir) || die "PostgreSQL is not installed"
    running || die "no server is running in $DIR (bash scripts/test-postgres.sh start)"
    url
    ;;
stop)
    stop
    ;;
installed)
    bindir >/dev/null
    ;;
run)
    shift
    [[ $# -gt 0 ]] || die "usage: $0 run COMMAND [ARGS…]"
    if [[ -z "${MPSEARCH_PG_DIR:-}" ]]; then
        DIR=$(mktemp -d /tmp/mpsearch-pg.XXXXXX)
        DATA="$DIR/data"
        LOG="$DIR/server.log"
    fi
    # Stops the server (if this run started one) and keeps the command's exit code.
    finish() {
        local code=$?
        trap - EXIT INT TERM
        if [[ -n "${STARTED:-}" ]]; then
            stop || say "warning: could not stop the server in $DIR"
        elif [[ -z "${MPSEARCH_PG_DIR:-}" ]]; then
            rm -rf "$DIR"
        fi
        exit "$code"
    }
    trap finish EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if BIN=$(bindir) && running; then
        # A server someone started by hand in MPSEARCH_PG_DIR: used, and left running.
        export MPSEARCH_TEST_POSTGRES=$(url)
        say "using the server already running in $DIR"
    elif URL=$(start); then
        STARTED=1
        export MPSEARCH_TEST_POSTGRES="$URL"
    else
        say "no PostgreSQL server: the PostgreSQL tests will be skipped (or fail under CI=true)"
    fi
    # Not exec: the trap stops the server when the command ends, whatever its exit code.
    set +e
    "$@"
    exit $?
    ;;
*)
    die "usage: $0 start|url|stop|installed|run COMMAND [ARGS…]"
    ;;
esac
