#!/usr/bin/env bash
# The PostgreSQL version matrix: every source × target pair of servers 13–18 (Debian's 15 and
# the ones scripts/lib/versions.sh fetches), copied by dbsync twice: with the client tools it
# finds on this machine itself, and with client tools 18 only (--pg-bin). Each copy is compared
# with its source by psql (every table's rows, sequences, large objects, the database setting).
# Then every source's archive (dbsync dump, compressed) is restored into every target. Prints the
# Markdown tables docs/guides/migration.md shows. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
source scripts/lib/versions.sh
ensure_postgres
ensure_versions
cargo build --quiet
dbsync="$PWD/target/debug/dbsync"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then dbsync="$CARGO_TARGET_DIR/debug/dbsync"; fi

majors=(13 14 15 16 17 18)
base=$(throwaway_base versions)
declare -A ports

server_bin() {
    if [ "$1" = 15 ]; then postgres_bin_dir; else echo "$DBSYNC_PG_CACHE/server-$1/bin"; fi
}

cleanup() {
    for major in "${majors[@]}"; do
        as_postgres "$(server_bin "$major")/pg_ctl" -D "$base/pg$major" -m immediate stop >/dev/null 2>&1 || true
    done
    rm -rf "$base"
}
trap cleanup EXIT

psql_on() { # MAJOR DATABASE SQL
    psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$base" -p "${ports[$1]}" -U postgres -d "$2" -c "$3"
}

uri() { # MAJOR DATABASE
    echo "postgresql://postgres@/$2?host=$base&port=${ports[$1]}"
}

# What a copy must carry: keys, a sequence and an identity, a partitioned table, a view, a large
# object, a database setting.
fixture="CREATE TABLE customers (id serial PRIMARY KEY, email text UNIQUE NOT NULL);
INSERT INTO customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 300) g;
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY, customer_id int NOT NULL REFERENCES customers,
  placed date NOT NULL, total numeric(10, 2), PRIMARY KEY (id, placed)) PARTITION BY RANGE (placed);
CREATE TABLE orders_2025 PARTITION OF orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE orders_2026 PARTITION OF orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO orders (customer_id, placed, total) SELECT 1 + g % 300, date '2025-06-01' + g % 400, g FROM generate_series(1, 2000) g;
CREATE INDEX ON orders (customer_id);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 1000;
SELECT lo_from_bytea(0, 'a large object');
ALTER DATABASE src SET work_mem = '8MB';
ANALYZE;"

# One line that changes when anything the fixture holds differs.
fingerprint="SELECT md5(string_agg(part, '|' ORDER BY part)) FROM (
  SELECT c.oid::regclass::text || ':' || (xpath('/row/d/text()', query_to_xml(format(
    'SELECT count(*) || md5(coalesce(string_agg(t::text, '','' ORDER BY t::text), '''')) AS d FROM %s t', c.oid::regclass),
    false, true, '')))[1]::text AS part
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public'
  UNION ALL SELECT sequencename || ':' || coalesce(last_value::text, '-') FROM pg_sequences WHERE schemaname = 'public'
  UNION ALL SELECT 'lo:' || count(*) FROM pg_largeobject_metadata
  UNION ALL SELECT 'setting:' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) parts"

echo "Starting PostgreSQL ${majors[*]}..." >&2
for major in "${majors[@]}"; do
    ports[$major]=$(free_port)
    bin=$(server_bin "$major")
    as_postgres "$bin/initdb" -D "$base/pg$major" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
    as_postgres "$bin/pg_ctl" -D "$base/pg$major" -w -l "$base/pg$major.log" \
        -o "-p ${ports[$major]} -k $base -c listen_addresses='' -c fsync=off" start >/dev/null
    psql_on "$major" postgres "CREATE DATABASE src" >/dev/null
    psql_on "$major" src "$fixture" >/dev/null
done

# copy SOURCE TARGET TOOLS: one cell's half: ok, refused (exit 2, with the first words of why),
# or failed / differs.
copy() {
    local source=$1 target=$2 tools=$3 database="from_$1_$3" output code=0
    local arguments=(sync --yes --plain --source "$(uri "$source" src)" --target "$(uri "$target" "$database")"
        --dump-dir "$base")
    if [ "$tools" = 18 ]; then arguments+=(--pg-bin "$DBSYNC_PG_CACHE/client-18/bin"); fi
    output=$("$dbsync" "${arguments[@]}" 2>&1) || code=$?
    verdict "$code" "$output" "$source" "$target" "$database"
}

# verdict CODE OUTPUT SOURCE TARGET DATABASE: a cell's half from how dbsync ended: exact (the copy
# DATABASE on TARGET has the source's fingerprint), DIFFERS, refused (with the first words of
# why), or FAILED.
verdict() {
    local code=$1 output=$2 source=$3 target=$4 database=$5
    case $code in
        0)
            if [ "$(psql_on "$source" src "$fingerprint")" = "$(psql_on "$target" "$database" "$fingerprint")" ]; then
                echo "exact"
            else
                echo "DIFFERS"
            fi
            ;;
        2)
            if grep -q "older than the source's" <<<"$output"; then echo "refused: downgrade";
            elif grep -q "client tools are too old" <<<"$output"; then echo "refused: needs client $source+";
            else echo "refused"; fi
            ;;
        *) echo "FAILED (exit $code)" ;;
    esac
}

echo "Copying every pair..." >&2
header="| source ↓ target → |"
rule="|---|"
for target in "${majors[@]}"; do header+=" $target |"; rule+="---|"; done
echo "$header"
echo "$rule"
for source in "${majors[@]}"; do
    row="| $source |"
    for target in "${majors[@]}"; do
        row+=" $(copy "$source" "$target" auto) / $(copy "$source" "$target" 18) |"
    done
    echo "$row"
done
echo
echo "Each cell: with the client tools found on this machine (Debian's 15) / with client tools 18 only."

# restore SOURCE TARGET: the source's archive (dbsync dump, gzip-compressed by default, written
# once per source with client tools 18) restored into the target: exact, refused or failed.
restore() {
    local source=$1 target=$2 database="restored_from_$1" output code=0
    output=$("$dbsync" restore "$base/archive-$source" --yes --plain --target "$(uri "$target" "$database")" \
        --dump-dir "$base" --pg-bin "$DBSYNC_PG_CACHE/client-18/bin" 2>&1) || code=$?
    verdict "$code" "$output" "$source" "$target" "$database"
}

echo "Dumping and restoring every pair..." >&2
for source in "${majors[@]}"; do
    "$dbsync" dump --plain --source "$(uri "$source" src)" --output "$base/archive-$source" \
        --pg-bin "$DBSYNC_PG_CACHE/client-18/bin" >/dev/null 2>&1 || echo "dump of $source failed" >&2
done
echo
echo "$header"
echo "$rule"
for source in "${majors[@]}"; do
    row="| $source |"
    for target in "${majors[@]}"; do row+=" $(restore "$source" "$target") |"; done
    echo "$row"
done
echo
echo "Each cell: dbsync dump of the source (compressed, gzip) restored by dbsync restore into the target, client tools 18."
