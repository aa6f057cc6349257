# Shared shell helpers: install PostgreSQL when missing, and start/stop throwaway clusters.
# Sourced by scripts/test.sh, scripts/demo.sh and scripts/bench.sh.

# apt_install PACKAGE...: installs Debian packages; needs root (CI and fresh machines run as root).
apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$* not installed; run as root, or: sudo apt-get install -y $*" >&2
        exit 2
    fi
    echo "Installing $* with apt-get..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}

# Installs the PostgreSQL server, client tools and contrib modules when no server binaries are
# present.
ensure_postgres() {
    if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v pg_dump >/dev/null 2>&1; then
        return 0
    fi
    apt_install postgresql postgresql-contrib
}

# ensure_package FILE PACKAGE: installs a Debian package when FILE (a path or a command) is missing.
ensure_package() {
    if [ -e "$1" ] || command -v "$1" >/dev/null 2>&1; then
        return 0
    fi
    apt_install "$2"
}

# throwaway_base NAME: a new directory for two clusters' data and sockets, usable by the postgres
# OS user.
throwaway_base() {
    local base
    base=$(mktemp -d "/tmp/dbsync-$1-XXXXXX")
    chmod 755 "$base"
    if [ "$(id -u)" -eq 0 ]; then chown postgres "$base"; fi
    echo "$base"
}

# The newest installed server's bin directory.
postgres_bin_dir() {
    ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1
}

# Runs a server binary as the postgres OS user when we are root (the server refuses root).
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# start_cluster BASE NAME PORT [SERVER_OPTIONS]: initdb BASE/NAME, listen only on a socket in
# BASE, trust auth. Without SERVER_OPTIONS the server runs with fsync off (tests and the demo).
start_cluster() {
    local base=$1 name=$2 port=$3 options=${4:--c fsync=off} bin
    bin=$(postgres_bin_dir)
    as_postgres "$bin/initdb" -D "$base/$name" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    as_postgres "$bin/pg_ctl" -D "$base/$name" -w -l "$base/$name.log" \
        -o "-p $port -k $base -c listen_addresses='' $options" start >/dev/null
}

stop_cluster() {
    local base=$1 name=$2
    as_postgres "$(postgres_bin_dir)/pg_ctl" -D "$base/$name" -m fast stop >/dev/null 2>&1 || true
}

# A free TCP port number (the servers listen on sockets only, but the port names the socket).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
