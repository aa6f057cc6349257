#!/usr/bin/env bash
# The demo: starts two throwaway PostgreSQL servers, builds a sample database on the first
# (partitions, inheritance, sequences, large objects, triggers, RLS, ...), and runs a full
# `dbsync sync` to the second with its phases visible. Everything is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
ensure_postgres
# The first build compiles every dependency: a few minutes on two cores. Its progress shows.
echo "Building dbsync (release; the first build takes a few minutes) ..."
cargo build --release

base=$(throwaway_base demo)
source_port=$(free_port)
target_port=$(free_port)
cleanup() {
    stop_cluster "$base" source
    stop_cluster "$base" target
    rm -rf "$base"
}
trap cleanup EXIT

echo "Starting two throwaway PostgreSQL servers in $base ..."
start_cluster "$base" source "$source_port"
start_cluster "$base" target "$target_port"
psql_on() { psql -X -q -v ON_ERROR_STOP=1 -h "$base" -p "$1" -U postgres "${@:2}"; }
for port in "$source_port" "$target_port"; do
    psql_on "$port" -d postgres -c "CREATE ROLE app_owner; CREATE ROLE app_reader;"
done

echo "Building the sample database Main_DB ..."
psql_on "$source_port" -d postgres -c 'CREATE DATABASE "Main_DB"'
psql_on "$source_port" -d Main_DB -f tests/fixtures/rich.sql >/dev/null
psql_on "$source_port" -d Main_DB -c "INSERT INTO events SELECT g, '2024-01-01'::date + (g % 700), (ARRAY['click', 'view', 'buy'])[1 + g % 3], NULL FROM generate_series(10000, 400000) g"
psql_on "$source_port" -d postgres -c "ALTER DATABASE \"Main_DB\" SET work_mem = '16MB'"

./target/release/dbsync sync \
    --source "postgres://postgres@/Main_DB?host=$base&port=$source_port" \
    --target "postgres://postgres@/Archive_DB?host=$base&port=$target_port" \
    --dump-dir "$base" "$@"

echo
echo "Rows on the target (Archive_DB), counted:"
psql_on "$target_port" -d Archive_DB -P pager=off -c "
  SELECT format('%I.%I', n.nspname, c.relname) AS table,
         (xpath('/row/count/text()', query_to_xml(format('SELECT count(*) FROM ONLY %s', c.oid::regclass), false, true, '')))[1]::text::bigint AS rows
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  ORDER BY 2 DESC, 1 LIMIT 12" || true
