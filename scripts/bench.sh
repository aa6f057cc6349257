#!/usr/bin/env bash
# The benchmark: dbsync against `pg_dump -Fd -j N` + `pg_restore -j N` and `pgcopydb clone`, on
# two throwaway PostgreSQL servers, on the datasets *large* (pgbench plus a 12-partition table with
# a foreign key and two secondary indexes), *many* (1,000 small tables plus a 500-partition
# table), *huge* (one table of about 1 GB with a secondary index), *rich* (the tests' fixture: a
# few hundred kB with every kind of object) and *small* (a 20-table
# application schema of about 15 MB with views, triggers and a partitioned table). Contenders
# alternate within each round; the table shows the median of the rounds.
#
#   scripts/bench.sh [--scale N] [--jobs N] [--runs N] [--datasets large,many,huge,rich,small,incremental,merge,clone,subset,migrate]
#                    [--contenders LIST] [--server-config durable|tuned|fast] [--baseline BINARY]
#                    [--pgcopydb BINARY]
#                    [--no-scaling] [--keep]
#
#   --scale N        pgbench scale of *large* (default 20, about 500 MB in all)
#   --jobs N         parallelism given to every contender (default: the number of cores)
#   --runs N         rounds per dataset (default 3)
#   --datasets LIST  comma-separated, from: large, many, huge, rich, small, incremental, merge, clone
#                    (default all): clone is large copied on the source's own server by `sync
#                    --clone` (contender clone), a logical sync (same-server) and `pg_dump -Fc |
#                    pg_restore` (same-server-pipe); subset is large copied whole (dbsync) and as
#                    a [subset] of 1 % of its accounts with their measurements (subset; subset-pages
#                    samples whole pages); incremental is large after 1 % of pgbench_accounts updated and 0.1 %
#                    deleted, brought up to date by --incremental (by updated_at), --incremental
#                    --deep and a full dbsync sync; merge is `dbsync merge` of a million rows into
#                    a database holding 100,000 of its own, the first time and again; migrate is
#                    the downtime of moving large while pgbench -c 2 -R 200 writes to it (writes
#                    stopped -> target ready and -> verified): `dbsync migrate` cut over by
#                    --cutover, `pgcopydb clone --follow` cut over by its end position at the same
#                    moment, and an offline `dbsync sync` (the whole copy is downtime); the source
#                    runs with wal_level = logical for this dataset only
#   --contenders L   comma-separated, from: dbsync, dbsync-stream, dbsync-j1, dbsync-j4,
#                    dbsync-split (tables over 128 MB copied in parts), dbsync-whole (no table
#                    split), pg_dump, pg_dump-pipe, pgcopydb, pgcopydb-split, verify-checksum
#                    (default: dbsync, dbsync-stream, pg_dump, pgcopydb, verify-checksum; and on
#                    huge pgcopydb-split, dbsync-split, dbsync-whole, dbsync-j1, dbsync-j4; on
#                    large dbsync-split; on small pg_dump-pipe). verify-checksum times `dbsync
#                    verify --checksum` against a copy that an untimed dbsync sync made just before;
#                    pg_dump-pipe is `pg_dump -Fc | pg_restore`; dump, dump-none (--compress none),
#                    pg_dump-Fd-archive and pg_dump-Fc-archive write archives (default on small and
#                    large; the results give their sizes); pgcopydb-split splits tables
#                    larger than 128 MB (about 8 parts of huge)
#   --server-config  durable: PostgreSQL's defaults (fsync on); tuned (default): shared_buffers
#                    512MB, max_wal_size 8GB, checkpoint_timeout 30min, maintenance_work_mem 256MB;
#                    fast: the defaults with fsync and full_page_writes off
#   --pgcopydb BIN   the pgcopydb to measure (default: Debian's, installed with apt-get), e.g. a
#                    newer release built from its sources
#   --baseline BIN   also time another dbsync binary (contender "baseline", default mode), e.g. a
#                    build of the previous commit, to show what a change did to the speed
#   --no-scaling     skip the extra *large* at twice the scale (dbsync and pg_dump), which checks that
#                    dbsync's time grows linearly with the data
#   --keep           leave the servers and their data in place (prints where)
#
# Needs root on a fresh machine (installs PostgreSQL and pgcopydb with apt-get). Results are also
# written to target/bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh

scale=20
jobs=$(nproc)
runs=3
datasets=large,many,huge,rich,small,incremental,merge,clone,subset,migrate
contenders=
server_config=tuned
scaling=yes
keep=no
baseline=
pgcopydb=pgcopydb
while [ $# -gt 0 ]; do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --datasets) datasets=$2; shift 2 ;;
        --contenders) contenders=$2; shift 2 ;;
        --server-config) server_config=$2; shift 2 ;;
        --baseline) baseline=$(realpath "$2"); shift 2 ;;
        --pgcopydb) pgcopydb=$(realpath "$2"); shift 2 ;;
        --no-scaling) scaling=no; shift ;;
        --keep) keep=yes; shift ;;
        -h | --help) sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

ensure_postgres
[ "$pgcopydb" = pgcopydb ] && ensure_package pgcopydb pgcopydb
cargo build --release --quiet
bin=$(postgres_bin_dir)
# pgcopydb follows with wal2json.
[[ ,$datasets, == *,migrate,* ]] &&
    ensure_package "$(dirname "$bin")/lib/wal2json.so" "postgresql-$(basename "$(dirname "$bin")")-wal2json"
export PATH="$bin:$PATH"

base=$(throwaway_base bench)
# A copy of the binary: a rebuild while the benchmark runs does not change what it measures.
cp target/release/dbsync "$base/dbsync"
dbsync=$base/dbsync
source_port=$(free_port)
target_port=$(free_port)
cleanup() {
    if [ "$keep" = yes ]; then
        echo "Servers left running: sockets in $base, ports $source_port (source) and $target_port (target)"
        return
    fi
    stop_cluster "$base" source
    stop_cluster "$base" target
    rm -rf "$base"
}
trap cleanup EXIT

# The same settings on both servers, for every contender. tuned: room for a bulk load without a
# checkpoint in the middle, and enough memory for index builds to sort in memory.
case $server_config in
    durable) server_options="-c fsync=on" ;;
    tuned) server_options="-c shared_buffers=512MB -c max_wal_size=8GB -c checkpoint_timeout=30min -c maintenance_work_mem=256MB" ;;
    fast) server_options="-c fsync=off -c full_page_writes=off" ;;
    *) echo "bench.sh: --server-config is durable, tuned or fast" >&2; exit 2 ;;
esac
echo "Starting two throwaway PostgreSQL servers in $base ..."
start_cluster "$base" source "$source_port" "$server_options"
start_cluster "$base" target "$target_port" "$server_options"
uri() { echo "postgres://postgres@/$2?host=$base&port=$1"; }
psql_on() { psql -X -q -v ON_ERROR_STOP=1 -h "$base" -p "$1" -U postgres "${@:2}"; }

build_large() {
    local database=$1 scale=$2
    psql_on "$source_port" -d postgres -c "CREATE DATABASE $database"
    pgbench -i -q -s "$scale" -h "$base" -p "$source_port" -U postgres "$database" 2>/dev/null
    psql_on "$source_port" -d "$database" <<SQL
CREATE TABLE measurements (
    id bigint NOT NULL,
    account_id integer NOT NULL REFERENCES pgbench_accounts (aid),
    recorded_at timestamptz NOT NULL,
    reading numeric(12, 3) NOT NULL,
    note text,
    PRIMARY KEY (id, recorded_at)
) PARTITION BY RANGE (recorded_at);
SELECT format('CREATE TABLE measurements_2024_%s PARTITION OF measurements FOR VALUES FROM (%L) TO (%L)',
              to_char(month, 'MM'), month, month + interval '1 month')
FROM generate_series(timestamptz '2024-01-01', '2024-12-01', interval '1 month') AS month \gexec
INSERT INTO measurements
SELECT g, 1 + (g::bigint * 7919) % ($scale * 100000), timestamptz '2024-01-01' + (g % 525000) * interval '1 minute',
       (g % 100000) / 7.0, md5(g::text)
FROM generate_series(1, $scale * 60000) AS g;
CREATE INDEX measurements_account_idx ON measurements (account_id);
CREATE INDEX measurements_reading_idx ON measurements (recorded_at, reading);
VACUUM ANALYZE;
SQL
}

# One table of about 1 GB (pgbench_accounts at scale 80) with a secondary index, nothing else large.
build_huge() {
    local database=$1
    psql_on "$source_port" -d postgres -c "CREATE DATABASE $database"
    pgbench -i -q -s 80 -h "$base" -p "$source_port" -U postgres "$database" 2>/dev/null
    psql_on "$source_port" -d "$database" -c "CREATE INDEX pgbench_accounts_bid_balance ON pgbench_accounts (bid, abalance)" \
        -c "VACUUM ANALYZE"
}

# An application's database of about 15 MB: 20 tables with keys, foreign keys and indexes, views,
# a trigger, a sequence per table and a partitioned table.
build_small() {
    local database=$1
    psql_on "$source_port" -d postgres -c "CREATE DATABASE $database"
    psql_on "$source_port" -d "$database" <<'SQL'
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, created_at timestamptz DEFAULT now());
CREATE TABLE products (id serial PRIMARY KEY, sku text UNIQUE NOT NULL, title text, price numeric(10, 2), stock int);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, placed_at timestamptz, total numeric(12, 2));
CREATE TABLE order_items (order_id int REFERENCES orders, product_id int REFERENCES products, quantity int, PRIMARY KEY (order_id, product_id));
CREATE TABLE events (id bigserial, happened_at timestamptz NOT NULL, kind text, payload jsonb, PRIMARY KEY (id, happened_at))
    PARTITION BY RANGE (happened_at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE audit_log (id bigserial PRIMARY KEY, table_name text, changed_at timestamptz DEFAULT now(), row_data jsonb);
CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit_log (table_name, row_data) VALUES (TG_TABLE_NAME, to_jsonb(NEW)); RETURN NEW; END $$;
CREATE TRIGGER products_audit AFTER UPDATE ON products FOR EACH ROW EXECUTE FUNCTION audit();
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 5000) g;
DO $$
BEGIN
    FOR i IN 1..14 LOOP
        EXECUTE format('CREATE TABLE lookup_%s (id serial PRIMARY KEY, code text UNIQUE, label text, customer_id int REFERENCES customers)', i);
        EXECUTE format('INSERT INTO lookup_%s (code, label, customer_id) SELECT ''c'' || g, repeat(''x'', 40), 1 + g %% 5000 FROM generate_series(1, 1500) g', i);
    END LOOP;
END $$;
INSERT INTO products (sku, title, price, stock) SELECT 'sku-' || g, 'product ' || g, g % 500 + 0.99, g % 40 FROM generate_series(1, 2000) g;
INSERT INTO orders (customer_id, placed_at, total) SELECT 1 + g % 5000, timestamptz '2024-01-01' + g * interval '7 minutes', g % 900 FROM generate_series(1, 40000) g;
INSERT INTO order_items SELECT o, 1 + (o * 7 + k) % 2000, 1 + k FROM generate_series(1, 40000) o, generate_series(0, 1) k;
INSERT INTO events (happened_at, kind, payload) SELECT timestamptz '2024-01-01' + g * interval '9 minutes', 'kind' || g % 7,
    jsonb_build_object('n', g, 'note', repeat('y', 30)) FROM generate_series(1, 60000) g;
UPDATE products SET stock = stock + 1 WHERE id <= 3000;
CREATE VIEW customer_totals AS SELECT c.id, c.name, sum(o.total) AS total FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name;
CREATE MATERIALIZED VIEW product_sales AS SELECT product_id, sum(quantity) AS sold FROM order_items GROUP BY product_id;
CREATE INDEX orders_placed_at ON orders (placed_at);
CREATE INDEX events_kind ON events (kind);
VACUUM ANALYZE;
SQL
}

# The integration tests' fixture (tests/fixtures/rich.sql): a few hundred kilobytes with every kind
# of object a copy must get right (schemas, types, domains, identity and generated columns, views,
# a materialized view, partitions, inheritance, triggers, policies, large objects, comments), and
# its roles on both servers.
build_rich() {
    local database=$1
    for port in "$source_port" "$target_port"; do
        psql_on "$port" -d postgres -c "DO \$\$ BEGIN CREATE ROLE app_owner; CREATE ROLE app_reader; \
            EXCEPTION WHEN duplicate_object THEN NULL; END \$\$"
    done
    psql_on "$source_port" -d postgres -c "CREATE DATABASE $database"
    psql_on "$source_port" -d "$database" -f tests/fixtures/rich.sql >/dev/null
    psql_on "$source_port" -d "$database" -c "VACUUM ANALYZE"
}

build_many() {
    local database=$1
    psql_on "$source_port" -d postgres -c "CREATE DATABASE $database"
    psql_on "$source_port" -d "$database" <<'SQL'
DO $$
BEGIN
    FOR i IN 1..1000 LOOP
        EXECUTE format('CREATE TABLE small_%s (id integer PRIMARY KEY, name text NOT NULL, '
                       'created_at timestamptz NOT NULL, amount numeric(10, 2))', lpad(i::text, 4, '0'));
        EXECUTE format('CREATE INDEX ON small_%s (created_at)', lpad(i::text, 4, '0'));
        EXECUTE format('INSERT INTO small_%s SELECT g, ''row '' || g, now() - g * interval ''1 hour'', g * 1.5 '
                       'FROM generate_series(1, 100) g', lpad(i::text, 4, '0'));
    END LOOP;
END $$;
CREATE TABLE readings (id integer NOT NULL, sensor integer NOT NULL, reading double precision,
                       PRIMARY KEY (id)) PARTITION BY RANGE (id);
DO $$
BEGIN
    FOR i IN 0..499 LOOP
        EXECUTE format('CREATE TABLE readings_%s PARTITION OF readings FOR VALUES FROM (%s) TO (%s)',
                       lpad(i::text, 3, '0'), i * 1000, (i + 1) * 1000);
    END LOOP;
END $$;
CREATE INDEX ON readings (sensor);
INSERT INTO readings SELECT g, g % 97, g / 3.0 FROM generate_series(0, 499999, 10) g;
VACUUM ANALYZE;
SQL
}

# *incremental*: *large* with an indexed updated_at on pgbench_accounts and measurements (the
# small pgbench tables have none: compared by key ranges every time), copied once and brought
# up to date by one untimed incremental run (its watermarks set). Every round starts the source
# and that copy afresh from their templates, then updates 1 % of the accounts and deletes 0.1 %
# (accounts no measurement references), untimed; a contender then brings bench_copy up to date.
build_incremental() {
    build_large bench_incremental_base "$scale"
    mkdir -p "$base/work"
    psql_on "$source_port" -d bench_incremental_base \
        -c "ALTER TABLE pgbench_accounts ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()" \
        -c "CREATE INDEX ON pgbench_accounts (updated_at)" \
        -c "ALTER TABLE measurements ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()" \
        -c "CREATE INDEX ON measurements (updated_at)" -c "VACUUM ANALYZE"
    psql_on "$source_port" -d postgres -c "CREATE DATABASE bench_incremental TEMPLATE bench_incremental_base"
    local source target
    source=$(uri "$source_port" bench_incremental)
    target=$(uri "$target_port" incremental_base)
    "$dbsync" sync --source "$source" --target "$target" --yes --plain --dump-dir "$base/work" \
        >"$base/logs/incremental-base.log" 2>&1 &&
        "$dbsync" sync --incremental --source "$source" --target "$target" --yes --plain \
            >>"$base/logs/incremental-base.log" 2>&1 ||
        { echo "the incremental base copy failed:" >&2; tail -n 20 "$base/logs/incremental-base.log" >&2; exit 1; }
}

prepare_incremental_round() {
    psql_on "$source_port" -d postgres -c "DROP DATABASE IF EXISTS bench_incremental WITH (FORCE)" \
        -c "CREATE DATABASE bench_incremental TEMPLATE bench_incremental_base"
    psql_on "$source_port" -d bench_incremental <<'SQL'
UPDATE pgbench_accounts SET abalance = abalance + 1, updated_at = now() WHERE aid % 100 = 7;
DELETE FROM pgbench_accounts WHERE aid IN (
    SELECT aid FROM pgbench_accounts AS a
    WHERE NOT EXISTS (SELECT 1 FROM measurements AS m WHERE m.account_id = a.aid)
    ORDER BY (aid::bigint * 7919) % 100003 LIMIT (SELECT count(*) / 1000 FROM pgbench_accounts));
VACUUM ANALYZE pgbench_accounts;
SQL
    psql_on "$target_port" -d postgres -c "DROP DATABASE IF EXISTS bench_copy WITH (FORCE)" \
        -c "CREATE DATABASE bench_copy TEMPLATE incremental_base"
}

# *merge*: a regional database of 10,000 owners and 1,000,000 items (a unique code, a key to
# its owner and one to the item before it) folded into a central one holding 5,000 owners and
# 100,000 items, half and a tenth of them the same records by natural key. merge_base is the
# central database; merge_again_base the same after one merge (every row in the ID map).
build_merge() {
    local schema="CREATE TABLE owners (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text);
CREATE TABLE items (id serial PRIMARY KEY, code text UNIQUE NOT NULL, owner_id int NOT NULL REFERENCES owners,
  parent_id int REFERENCES items, payload text, amount numeric, created_at timestamptz);"
    psql_on "$source_port" -d postgres -c "CREATE DATABASE bench_merge"
    psql_on "$target_port" -d postgres -c "CREATE DATABASE merge_base"
    psql_on "$source_port" -d bench_merge -c "$schema"
    psql_on "$target_port" -d merge_base -c "$schema"
    psql_on "$source_port" -d bench_merge <<'SQL'
INSERT INTO owners (email, name) SELECT 'o' || g || '@example.org', 'owner ' || g FROM generate_series(1, 10000) g;
INSERT INTO items (code, owner_id, parent_id, payload, amount, created_at)
  SELECT 'c' || g, 1 + g % 10000, CASE WHEN g > 1 THEN g - 1 END, repeat('p', 60), g / 3.0, now()
  FROM generate_series(1, 1000000) g;
VACUUM ANALYZE;
SQL
    psql_on "$target_port" -d merge_base <<'SQL'
INSERT INTO owners (email, name) SELECT 'o' || (g * 2) || '@example.org', 'central ' || g FROM generate_series(1, 5000) g;
INSERT INTO items (code, owner_id, payload, amount, created_at)
  SELECT 'c' || (g * 10), 1 + g % 5000, 'central', g, now() FROM generate_series(1, 100000) g;
VACUUM ANALYZE;
SQL
    printf '[merge.tables.owners]\nnatural_key = ["email"]\n[merge.tables.items]\nnatural_key = ["code"]\n' \
        >"$base/merge.toml"
    psql_on "$target_port" -d postgres -c "CREATE DATABASE merge_again_base TEMPLATE merge_base"
    "$dbsync" merge --source "$(uri "$source_port" bench_merge)" --target "$(uri "$target_port" merge_again_base)" \
        --config "$base/merge.toml" --yes --plain >"$base/logs/merge-base.log" 2>&1 ||
        { echo "the first merge failed:" >&2; tail -n 20 "$base/logs/merge-base.log" >&2; exit 1; }
}

database_size() {
    psql_on "$source_port" -d postgres -Atc "SELECT pg_size_pretty(pg_database_size('$1'))"
}

# Before every timed run: no target database, nothing dirty waiting to be flushed.
reset_target() {
    psql_on "$target_port" -d postgres -c "DROP DATABASE IF EXISTS bench_copy WITH (FORCE)"
    psql_on "$target_port" -d postgres -c "CHECKPOINT"
    psql_on "$source_port" -d postgres -c "CHECKPOINT"
    rm -rf "$base/work"
    mkdir -p "$base/work"
    [ "$(id -u)" -eq 0 ] && chown postgres "$base/work"
    sync
}

now() { date +%s.%N; }

# Datasets are dropped once measured (the next one needs the room), unless --keep.
drop_dataset() {
    [ "$keep" = yes ] || psql_on "$source_port" -d postgres -c "DROP DATABASE $1"
}


# timed LOG COMMAND...: runs COMMAND (output to LOG); prints "seconds source_cpu target_cpu
# client_cpu", the CPU seconds each server (from the first and the last sample) and the client
# processes used meanwhile. Every half second it also samples the CPU each side has used so far
# into LOG's .cpu.tsv (seconds, source, target, client), for the timeline pictures.
timed() {
    local log=$1 started finished
    started=$(now)
    python3 - "$(head -n 1 "$base/source/postmaster.pid")" "$(head -n 1 "$base/target/postmaster.pid")" \
        "${log%.log}.cpu.tsv" "${@:2}" >"$log" 2>&1 3>"$base/cpu_used" <<'PY' || return 1
import os, resource, subprocess, sys, threading, time
source_pid, target_pid, samples_path, *command = sys.argv[1:]
ticks = os.sysconf("SC_CLK_TCK")
me = str(os.getpid())

def processes():
    found = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            found[pid] = (fields[1], int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14]))
    return found

def tree(found, children, root, own=True):
    """CPU seconds of root (its own unless own is False, and its waited children's) and of every
    live descendant."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in found:
            _, used, waited = found[pid]
            total += waited + (used if (own or pid != root) else 0)
        stack.extend(children.get(pid, []))
    return total / ticks

samples, started = [], time.monotonic()
def sample():
    found = processes()
    children = {}
    for pid, (parent, _, _) in found.items():
        children.setdefault(parent, []).append(pid)
    samples.append((time.monotonic() - started, tree(found, children, source_pid),
                    tree(found, children, target_pid), tree(found, children, me, own=False)))

sample()
process = subprocess.Popen(command)
ended = threading.Event()
def sampler():
    # Woken at once when the command ends: the run's time is not rounded to the next sample.
    while not ended.wait(0.5):
        sample()
thread = threading.Thread(target=sampler, daemon=True)
thread.start()
status = process.wait()
ended.set()
thread.join()
sample()
with open(samples_path, "w") as out:
    out.writelines(f"{t:.3f}\t{s:.2f}\t{g:.2f}\t{c:.2f}\n" for t, s, g, c in samples)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
first, last = samples[0], samples[-1]
os.write(3, f"{last[1] - first[1]:.2f} {last[2] - first[2]:.2f} {usage.ru_utime + usage.ru_stime:.2f}\n".encode())
sys.exit(status)
PY
    finished=$(now)
    python3 -c "print(f'{$finished - $started:.3f}', '$(cat "$base/cpu_used")')"
}

# with_report MEASURED LOG: a dbsync run's result line, MEASURED ("seconds source_cpu target_cpu
# client_cpu") with its report's peak memory, peak dump bytes and phases; the report is kept as
# LOG's .report.json for the timeline pictures.
with_report() {
    cp "$base/work/report.json" "${2%.log}.report.json"
    python3 - "$base/work/report.json" "$1" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
seconds, *cpu = sys.argv[2].split()
phases = ",".join(f"{phase['phase']}={phase['seconds']:.2f}" for phase in report.get("phases", []))
print(seconds, report["peak_memory_bytes"], report["peak_dump_bytes"], *cpu, phases or "-")
PY
}

# run_contender NAME DATABASE: times one run; prints "seconds rss_bytes dump_bytes source_cpu
# target_cpu client_cpu". A contender that needs an empty target database creates it inside its
# time, as a user of that tool would.
run_contender() {
    local name=$1 database=$2 source target log measured
    source=$(uri "$source_port" "$database")
    target=$(uri "$target_port" bench_copy)
    log=${3:-$base/logs/$database-$name-$(date +%s%N).log}
    [ "$database" = bench_incremental ] && prepare_incremental_round
    case $name in
        incremental | incremental-deep) ;;
        merge | merge-again)
            local template=merge_base
            [ "$name" = merge-again ] && template=merge_again_base
            psql_on "$target_port" -d postgres -c "DROP DATABASE IF EXISTS bench_copy WITH (FORCE)" \
                -c "CREATE DATABASE bench_copy TEMPLATE $template"
            ;;
        *) reset_target ;;
    esac
    case $name in
        incremental | incremental-deep)
            local extra=()
            [ "$name" = incremental-deep ] && extra=(--deep)
            psql_on "$target_port" -d postgres -c "CHECKPOINT"
            psql_on "$source_port" -d postgres -c "CHECKPOINT"
            sync
            measured=$(timed "$log" "$dbsync" sync --incremental --source "$source" --target "$target" --jobs "$jobs" \
                --yes --plain --report "$base/work/report.json" "${extra[@]}") ||
                { echo "dbsync --incremental failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
            with_report "$measured" "$log"
            ;;
        merge | merge-again)
            psql_on "$target_port" -d postgres -c "CHECKPOINT"
            psql_on "$source_port" -d postgres -c "CHECKPOINT"
            mkdir -p "$base/work"
            measured=$(timed "$log" "$dbsync" merge --source "$source" --target "$target" --config "$base/merge.toml" \
                --yes --plain --report "$base/work/report.json") ||
                { echo "dbsync merge failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
            with_report "$measured" "$log"
            ;;
        dbsync | dbsync-stream | dbsync-j1 | dbsync-j4 | dbsync-split | dbsync-whole | baseline)
            local extra=() binary=$dbsync run_jobs=$jobs
            [ "$name" = dbsync-stream ] && extra=(--stream)
            [ "$name" = dbsync-j1 ] && run_jobs=1
            [ "$name" = dbsync-j4 ] && run_jobs=4
            [ "$name" = dbsync-split ] && extra=(--split-larger-than 128MB)
            [ "$name" = dbsync-whole ] && extra=(--split-larger-than 0)
            [ "$name" = baseline ] && binary=$baseline
            measured=$(timed "$log" "$binary" sync --source "$source" --target "$target" --jobs "$run_jobs" --yes --plain \
                --dump-dir "$base/work" --report "$base/work/report.json" "${extra[@]}") ||
                { echo "dbsync failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
            with_report "$measured" "$log"
            ;;
        subset | subset-pages)
            # 1 % of the accounts (sampled row by row, or page by page), with their measurements
            # (the rows that reference them).
            local sample=rows
            [ "$name" = subset-pages ] && sample=pages
            printf '[subset]\nreferencing = ["measurements"]\nseed = 1\n[subset.tables.pgbench_accounts]\npercent = 1\nsample = "%s"\n' \
                "$sample" >"$base/subset.toml"
            measured=$(timed "$log" "$dbsync" sync --source "$source" --target "$target" --jobs "$jobs" --yes --plain \
                --dump-dir "$base/work" --report "$base/work/report.json" --config "$base/subset.toml") ||
                { echo "dbsync (subset) failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
            with_report "$measured" "$log"
            ;;
        clone | same-server | same-server-pipe)
            # Copies on the source's own server: the target is bench_copy beside the source.
            psql_on "$source_port" -d postgres -c "DROP DATABASE IF EXISTS bench_copy WITH (FORCE)" -c "CHECKPOINT"
            target=$(uri "$source_port" bench_copy)
            if [ "$name" = same-server-pipe ]; then
                measured=$(timed "$log" bash -c 'createdb -h "$1" -p "$2" -U postgres bench_copy &&
                    pg_dump -Fc "$3" | pg_restore -d "$4"' - "$base" "$source_port" "$source" "$target") ||
                    { echo "pg_dump | pg_restore failed, see $log" >&2; exit 1; }
                echo "${measured%% *} - - ${measured#* } -"
            else
                local extra=()
                [ "$name" = clone ] && extra=(--clone)
                measured=$(timed "$log" "$dbsync" sync --source "$source" --target "$target" --jobs "$jobs" --yes --plain \
                    --dump-dir "$base/work" --report "$base/work/report.json" "${extra[@]}") ||
                    { echo "dbsync failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
                with_report "$measured" "$log"
            fi
            ;;
        pg_dump)
            measured=$(timed "$log" bash -c 'createdb -h "$1" -p "$2" -U postgres bench_copy &&
                pg_dump -Fd -j "$3" -f "$4" "$5" && pg_restore -j "$3" -d "$6" "$4"' - \
                "$base" "$target_port" "$jobs" "$base/work/dump" "$source" "$target") ||
                { echo "pg_dump/pg_restore failed, see $log" >&2; exit 1; }
            echo "${measured%% *} - - ${measured#* } -"
            ;;
        verify-checksum)
            "$dbsync" sync --source "$source" --target "$target" --jobs "$jobs" --yes --plain \
                --dump-dir "$base/work" >"$log" 2>&1 || { echo "dbsync failed, see $log" >&2; exit 1; }
            psql_on "$target_port" -d postgres -c "CHECKPOINT"
            measured=$(timed "$log.verify" "$dbsync" verify --checksum --source "$source" --target "$target" --jobs "$jobs") ||
                { echo "dbsync verify --checksum failed, see $log.verify" >&2; tail -n 20 "$log.verify" >&2; exit 1; }
            echo "${measured%% *} - - ${measured#* } -"
            ;;
        dump | dump-none)
            local extra=()
            [ "$name" = dump-none ] && extra=(--compress none)
            rm -rf "$base/work/archive"
            measured=$(timed "$log" "$dbsync" dump --source "$source" --output "$base/work/archive" --jobs "$jobs" \
                --plain --report "$base/work/report.json" "${extra[@]}") ||
                { echo "dbsync dump failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
            cp "$base/work/report.json" "${log%.log}.report.json"
            echo "${measured%% *} - $(du -sb "$base/work/archive" | cut -f1) ${measured#* } -"
            rm -rf "$base/work/archive"
            ;;
        pg_dump-Fd-archive | pg_dump-Fc-archive)
            rm -rf "$base/work/archive"
            if [ "$name" = pg_dump-Fd-archive ]; then
                measured=$(timed "$log" pg_dump -Fd -j "$jobs" -f "$base/work/archive" "$source") ||
                    { echo "pg_dump -Fd failed, see $log" >&2; exit 1; }
            else
                measured=$(timed "$log" pg_dump -Fc -f "$base/work/archive" "$source") ||
                    { echo "pg_dump -Fc failed, see $log" >&2; exit 1; }
            fi
            echo "${measured%% *} - $(du -sb "$base/work/archive" | cut -f1) ${measured#* } -"
            rm -rf "$base/work/archive"
            ;;
        pg_dump-pipe)
            measured=$(timed "$log" bash -c 'createdb -h "$1" -p "$2" -U postgres bench_copy &&
                pg_dump -Fc "$3" | pg_restore -d "$4"' - "$base" "$target_port" "$source" "$target") ||
                { echo "pg_dump | pg_restore failed, see $log" >&2; exit 1; }
            echo "${measured%% *} - - ${measured#* } -"
            ;;
        pgcopydb | pgcopydb-split)
            local split=()
            [ "$name" = pgcopydb-split ] && split=(--split-tables-larger-than 128MB)
            measured=$(timed "$log" bash -c 'createdb -h "$1" -p "$2" -U postgres bench_copy &&
                "$7" clone --source "$3" --target "$4" --table-jobs "$5" --index-jobs "$5" --dir "$6" "${@:8}"' - \
                "$base" "$target_port" "$source" "$target" "$jobs" "$base/work/pgcopydb" "$pgcopydb" "${split[@]}") ||
                { echo "pgcopydb failed, see $log" >&2; exit 1; }
            echo "${measured%% *} - - ${measured#* } -"
            ;;
    esac
}

# The downtime of moving DATABASE while pgbench writes to it (see --datasets migrate): a line per
# contender and round in $downtimes, "contender ready_seconds ended_seconds equal".
measure_downtime() {
    local database=$1 source target load log measured equal started
    source=$(uri "$source_port" "$database")
    target=$(uri "$target_port" bench_copy)
    load="pgbench -n -c 2 -R 200 -T 7200 -h $base -p $source_port -U postgres $database"
    for round in $(seq 1 "$runs"); do
        # Offline: writes stay stopped for the whole copy.
        reset_target
        log=$base/logs/migrate-offline-$round.log
        started=$(now)
        "$dbsync" sync --source "$source" --target "$target" --jobs "$jobs" --yes --plain --dump-dir "$base/work" \
            >"$log" 2>&1 || { echo "dbsync sync failed, see $log" >&2; exit 1; }
        measured=$(python3 -c "print(f'{$(now) - $started:.2f}')")
        printf 'dbsync sync (offline)\t%s\t%s\tyes (row counts)\n' "$measured" "$measured" >>"$downtimes"
        printf '  migrate    round %d  %-24s %6.2f s\n' "$round" "offline sync" "$measured"

        reset_target
        log=$base/logs/migrate-dbsync-$round.log
        measured=$(python3 scripts/lib/downtime.py "$log" "Following: the target is" 10 "$load" \
            "'$dbsync' migrate --source '$source' --target '$target' --jobs $jobs --yes --plain --dump-dir '$base/work'" \
            "'$dbsync' migrate --source '$source' --target '$target' --cutover --plain" \
            "Removed subscription") || { echo "dbsync migrate failed, see $log" >&2; exit 1; }
        read -r ready ended code <<<"$measured"
        [ "$code" = 0 ] && equal="yes (verify --checksum)" || equal="no: exit $code, see $log"
        printf 'dbsync migrate\t%s\t%s\t%s\n' "$ready" "$ended" "$equal" >>"$downtimes"
        printf '  migrate    round %d  %-24s %6s s ready, %6s s verified\n' "$round" "dbsync migrate" "$ready" "$ended"

        # pgcopydb ends its follow once a change past the end position arrives: one row is
        # written for it right after the end position is set. Releases after 0.10 keep the
        # sentinel in their --dir.
        reset_target
        psql_on "$target_port" -d postgres -c "CREATE DATABASE bench_copy"
        log=$base/logs/migrate-pgcopydb-$round.log
        measured=$(python3 scripts/lib/downtime.py "$log" "The pgcopydb sentinel has enabled applying changes" 10 "$load" \
            "'$pgcopydb' clone --follow --source '$source' --target '$target' --table-jobs $jobs --index-jobs $jobs --dir '$base/work/pgcopydb'" \
            "{ '$pgcopydb' stream sentinel set endpos --current --dir '$base/work/pgcopydb' --source '$source' || '$pgcopydb' stream sentinel set endpos --current --source '$source'; } && psql -X -q -h '$base' -p $source_port -U postgres -d $database -c 'INSERT INTO bench_tick DEFAULT VALUES'") ||
            { echo "pgcopydb clone --follow failed, see $log" >&2; exit 1; }
        read -r ready ended code <<<"$measured"
        # It leaves its slot (and, before 0.11, a sentinel table) on the source, and its origin on
        # the target: removed before the comparison, which leaves out the row written past the end
        # position.
        "$pgcopydb" stream cleanup --source "$source" --target "$target" --dir "$base/work/pgcopydb" >>"$log" 2>&1 || true
        if [ "$code" = timeout ]; then
            equal="no: not caught up 600 s after writes stopped (ended there)"
        elif [ "$ready" = - ]; then
            equal="no: it failed while following (exit $code), see $log"
        elif [ "$code" = 0 ] && "$dbsync" verify --checksum --source "$source" --target "$target" --jobs "$jobs" \
            --exclude bench_tick >"$log.verify" 2>&1; then
            equal="yes (dbsync verify --checksum, not timed)"
        elif [ "$code" = 0 ]; then
            equal="no: $(grep -A 2 'difference(s):' "$log.verify" | tr -s ' ' | tr '\n' ' ' || true)"
        else
            equal="no: exit $code, see $log"
        fi
        printf 'pgcopydb clone --follow\t%s\t%s\t%s\n' "$ended" "$ended" "$equal" >>"$downtimes"
        printf '  migrate    round %d  %-24s %6s s ready\n' "$round" "pgcopydb clone --follow" "$ended"
    done
}

# wal_level for the migrate dataset: logical, then back to the default.
set_source_wal_level() {
    psql_on "$source_port" -d postgres -c "ALTER SYSTEM SET wal_level = $1"
    as_postgres "$bin/pg_ctl" -D "$base/source" -w -m fast -l "$base/source.log" restart >/dev/null
}

mkdir -p "$base/logs" target/bench
downtimes=$base/downtimes.tsv
: >"$downtimes"
rm -f target/bench/timeline-*.svg
results=$base/results.tsv
: >"$results"
IFS=, read -r -a dataset_list <<<"$datasets"
# The contenders of a dataset: --contenders, or the defaults with the dataset's own additions.
contenders_for() {
    local list=$contenders
    if [ -z "$list" ]; then
        list=dbsync,dbsync-stream,pg_dump,pgcopydb,verify-checksum
        [ "$1" = huge ] && list=$list,pgcopydb-split,dbsync-split,dbsync-whole,dbsync-j1,dbsync-j4
        [ "$1" = large ] && list=$list,dbsync-split
        [ "$1" = small ] && list=$list,pg_dump-pipe
        [ "$1" = rich ] && list=dbsync,pgcopydb,pg_dump,pg_dump-pipe
        # Archives (size and time): dbsync dump, compressed and not, against pg_dump's own formats.
        case $1 in small | large) list=$list,dump,dump-none,pg_dump-Fd-archive,pg_dump-Fc-archive ;; esac
        [ "$1" = incremental ] && list=dbsync,incremental,incremental-deep
        [ "$1" = merge ] && list=merge,merge-again
        [ "$1" = clone ] && list=clone,same-server,same-server-pipe
        [ "$1" = subset ] && list=dbsync,subset,subset-pages
    fi
    [ -n "$baseline" ] && list=$list,baseline
    echo "$list"
}

measure_dataset() {
    local label=$1 database=$2 names=("${@:3}")
    for round in $(seq 1 "$runs"); do
        for name in "${names[@]}"; do
            local measured log="$base/logs/${label// /_}-$name-$round.log"
            measured=$(run_contender "$name" "$database" "$log")
            printf '  %-10s round %d  %-14s %6.2f s\n' "$label" "$round" "$name" "${measured%% *}"
            printf '%s\t%s\t%s\t%s\n' "$label" "$name" "$measured" "$log" >>"$results"
        done
    done
}

for dataset in "${dataset_list[@]}"; do
    case $dataset in
        large)
            echo "Building large (pgbench scale $scale + 12-partition table) ..."
            build_large bench_large "$scale"
            echo "large: $(database_size bench_large)"
            IFS=, read -r -a contender_list <<<"$(contenders_for large)"
            measure_dataset "large" bench_large "${contender_list[@]}"
            drop_dataset bench_large
            if [ "$scaling" = yes ]; then
                echo "Building large at scale $((scale * 2)) (dbsync and pg_dump, for linearity) ..."
                build_large bench_large2 $((scale * 2))
                echo "large x2: $(database_size bench_large2)"
                measure_dataset "large x2" bench_large2 dbsync pg_dump
                drop_dataset bench_large2
            fi
            ;;
        many)
            echo "Building many (1,000 tables + 500-partition table) ..."
            build_many bench_many
            echo "many: $(database_size bench_many)"
            IFS=, read -r -a contender_list <<<"$(contenders_for many)"
            measure_dataset "many" bench_many "${contender_list[@]}"
            drop_dataset bench_many
            ;;
        huge)
            echo "Building huge (pgbench_accounts at scale 80 with a secondary index) ..."
            build_huge bench_huge
            echo "huge: $(database_size bench_huge)"
            IFS=, read -r -a contender_list <<<"$(contenders_for huge)"
            measure_dataset "huge" bench_huge "${contender_list[@]}"
            drop_dataset bench_huge
            ;;
        rich)
            echo "Building rich (the tests' fixture: every kind of object, a few hundred kB) ..."
            build_rich bench_rich
            echo "rich: $(database_size bench_rich)"
            IFS=, read -r -a contender_list <<<"$(contenders_for rich)"
            measure_dataset "rich" bench_rich "${contender_list[@]}"
            drop_dataset bench_rich
            ;;
        small)
            echo "Building small (20 tables, views, a trigger, a partitioned table) ..."
            build_small bench_small
            echo "small: $(database_size bench_small)"
            IFS=, read -r -a contender_list <<<"$(contenders_for small)"
            measure_dataset "small" bench_small "${contender_list[@]}"
            drop_dataset bench_small
            ;;
        incremental)
            echo "Building incremental (large with updated_at, copied and brought up to date once) ..."
            build_incremental
            echo "incremental: $(database_size bench_incremental_base)"
            IFS=, read -r -a contender_list <<<"$(contenders_for incremental)"
            measure_dataset "incremental" bench_incremental "${contender_list[@]}"
            drop_dataset bench_incremental
            drop_dataset bench_incremental_base
            ;;
        subset)
            echo "Building subset (large: 1 % of its accounts with their measurements, against a full sync) ..."
            build_large bench_large "$scale"
            echo "subset: $(database_size bench_large)"
            IFS=, read -r -a contender_list <<<"$(contenders_for subset)"
            measure_dataset "subset" bench_large "${contender_list[@]}"
            drop_dataset bench_large
            ;;
        clone)
            echo "Building clone (large, copied on its own server: --clone, a logical sync, pg_dump | pg_restore) ..."
            build_large bench_large "$scale"
            echo "clone: $(database_size bench_large)"
            IFS=, read -r -a contender_list <<<"$(contenders_for clone)"
            measure_dataset "clone" bench_large "${contender_list[@]}"
            drop_dataset bench_large
            psql_on "$source_port" -d postgres -c "DROP DATABASE IF EXISTS bench_copy WITH (FORCE)"
            ;;
        merge)
            echo "Building merge (a million rows into a database holding 100,000) ..."
            build_merge
            echo "merge: $(database_size bench_merge)"
            IFS=, read -r -a contender_list <<<"$(contenders_for merge)"
            measure_dataset "merge" bench_merge "${contender_list[@]}"
            drop_dataset bench_merge
            [ "$keep" = yes ] || psql_on "$target_port" -d postgres -c "DROP DATABASE IF EXISTS merge_base" \
                -c "DROP DATABASE IF EXISTS merge_again_base"
            ;;
        migrate)
            echo "Building migrate (large, then moved while pgbench -c 2 -R 200 writes to it) ..."
            set_source_wal_level logical
            build_large bench_large "$scale"
            psql_on "$source_port" -d bench_large -c "ALTER TABLE pgbench_history REPLICA IDENTITY FULL" \
                -c "CREATE TABLE bench_tick (id serial PRIMARY KEY)"
            echo "migrate: $(database_size bench_large)"
            measure_downtime bench_large
            drop_dataset bench_large
            set_source_wal_level replica
            ;;
        *) echo "bench.sh: unknown dataset $dataset" >&2; exit 2 ;;
    esac
done

python3 - "$results" "$jobs" "$scale" "$server_config" "$downtimes" <<'PY' | tee target/bench/results.md
import statistics, sys, platform, os
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
downtimes = [line.rstrip("\n").split("\t") for line in open(sys.argv[5]) if line.strip()]
jobs, scale, server_config = sys.argv[2], sys.argv[3], sys.argv[4]
by_key = {}
cpu_by_key, phases_by_key = {}, {}
logs_by_key = {}
for dataset, name, measured, log in rows:
    logs_by_key.setdefault((dataset, name), []).append(log)
    seconds, rss, dump, source_cpu, target_cpu, client_cpu, phases = measured.split()
    by_key.setdefault((dataset, name), []).append((float(seconds), rss, dump))
    cpu_by_key.setdefault((dataset, name), []).append((float(source_cpu), float(target_cpu), float(client_cpu)))
    if phases != "-":
        for phase in phases.split(","):
            key, value = phase.split("=")
            phases_by_key.setdefault((dataset, name), {}).setdefault(key, []).append(float(value))
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
memory = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) // 1024 // 1024
runs_done = len(next(iter(by_key.values()))) if by_key else len(downtimes) // 3
print(f"Machine: {os.cpu_count()} cores ({cpu}), {memory} GiB; server config {server_config}; jobs {jobs}; pgbench scale {scale}; "
      f"median of {runs_done} runs")
if downtimes:
    print()
    print("Downtime of moving large while pgbench -c 2 -R 200 writes to it: seconds from writes stopped to the")
    print("target ready, and to the run's end (for dbsync migrate: verified by checksum), medians.")
    print()
    print("| contender | writes stopped -> target ready | runs (s) | -> run ended | equal to the source |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(row[0] for row in downtimes):
        measured = [row for row in downtimes if row[0] == name]
        # "-": no cut-over (it failed, or was not caught up within the limit); medians of the rest.
        ready = [row[1] for row in measured]
        ended = [row[2] for row in measured]
        median = lambda values: (f"{statistics.median(float(v) for v in values if v != '-'):.2f}"
                                 if any(v != "-" for v in values) else "-")
        verdicts = "; ".join(f"round {round}: {row[3]}" for round, row in enumerate(measured, 1))
        print(f"| {name} | {median(ready)} | {' '.join(ready)} | {median(ended)} | {verdicts} |")
print()
print("| dataset | contender | median s | runs (s) | ratio to dbsync | dbsync peak RSS | dbsync peak dump dir |")
print("|---|---|---|---|---|---|---|")
def mib(value):
    return "-" if value == "-" else f"{int(value) / 1048576:.1f} MiB"
datasets = list(dict.fromkeys(dataset for dataset, _ in by_key))
for dataset in datasets:
    reference = by_key.get((dataset, "dbsync")) or by_key.get((dataset, "clone"))
    reference_median = statistics.median(s for s, _, _ in reference) if reference else None
    for (row_dataset, name), measured in by_key.items():
        if row_dataset != dataset:
            continue
        median = statistics.median(s for s, _, _ in measured)
        ratio = f"{reference_median / median:.2f}" if reference_median else "-"
        rss = max((int(r) for _, r, _ in measured if r != "-"), default=None)
        dump = max((int(d) for _, _, d in measured if d != "-"), default=None)
        runs = " ".join(f"{s:.2f}" for s, _, _ in measured)
        print(f"| {dataset} | {name} | {median:.2f} | {runs} | {ratio} | "
              f"{mib(str(rss)) if rss is not None else '-'} | {mib(str(dump)) if dump is not None else '-'} |")
print()
print("ratio to dbsync = dbsync's median / the contender's median (below 1: dbsync is faster); on clone,")
print("the clone's median / the contender's.")
print()
print("Where the time goes: CPU seconds of the source server, the target server and the client")
print("processes (dbsync with its pg_dump/pg_restore, or the contender's tools), medians; dbsync's")
print("time by phase from its report.")
print()
print("floor = the CPU seconds of all three / the cores: no run on this machine can be shorter; wall / floor")
print("shows how long cores sat idle (1.00: none).")
print()
print("| dataset | contender | source CPU s | target CPU s | client CPU s | floor s | wall / floor | phases (s) |")
print("|---|---|---|---|---|---|---|---|")
cores = os.cpu_count() or 1
for (dataset, name), measured in cpu_by_key.items():
    medians = [statistics.median(values) for values in zip(*measured)]
    floors = [sum(cpu) / cores for cpu in measured]
    walls = [s for s, _, _ in by_key[(dataset, name)]]
    ratio = statistics.median(wall / floor for wall, floor in zip(walls, floors) if floor > 0) if any(floors) else 0
    phases = phases_by_key.get((dataset, name), {})
    phase_text = ", ".join(f"{key} {statistics.median(values):.2f}" for key, values in phases.items()) or "-"
    print(f"| {dataset} | {name} | {medians[0]:.2f} | {medians[1]:.2f} | {medians[2]:.2f} | "
          f"{statistics.median(floors):.2f} | {ratio:.2f} | {phase_text} |")
archives = [(key, measured) for key, measured in by_key.items() if key[1].startswith(("dump", "pg_dump-F"))]
if archives:
    print()
    print("Archives: `dbsync dump` (gzip by default; dump-none: --compress none) against `pg_dump -Fd -j N` and")
    print("`pg_dump -Fc` (each at its default compression), time and size on disk, medians.")
    print()
    print("| dataset | contender | median s | archive size |")
    print("|---|---|---|---|")
    for (dataset, name), measured in archives:
        median = statistics.median(s for s, _, _ in measured)
        size = statistics.median(int(d) for _, _, d in measured)
        print(f"| {dataset} | {name} | {median:.2f} | {size / 1048576:.1f} MiB |")
sync, verify = by_key.get(("large", "dbsync")), by_key.get(("large", "verify-checksum"))
if sync and verify:
    sync_median = statistics.median(s for s, _, _ in sync)
    verify_median = statistics.median(s for s, _, _ in verify)
    print(f"verify --checksum on large: {verify_median:.2f} s, {verify_median / sync_median:.2f} of the sync's "
          f"{sync_median:.2f} s (goal: below 0.50).")
full = by_key.get(("incremental", "dbsync"))
for name, goal in (("incremental", 0.10), ("incremental-deep", 0.50)):
    measured = by_key.get(("incremental", name))
    if full and measured:
        full_median = statistics.median(s for s, _, _ in full)
        median = statistics.median(s for s, _, _ in measured)
        print(f"{name} after 1 % of the accounts updated and 0.1 % deleted: {median:.2f} s, "
              f"{median / full_median:.2f} of a full sync's {full_median:.2f} s (goal: below {goal:.2f}).")
for name, what in (("merge", "the first time"), ("merge-again", "again (every row in the ID map)")):
    measured = by_key.get(("merge", name))
    if measured:
        median = statistics.median(s for s, _, _ in measured)
        print(f"dbsync merge of 1,000,000 rows into a database of 100,000, {what}: {median:.2f} s.")
small = by_key.get(("large", "dbsync"))
double = by_key.get(("large x2", "dbsync"))
if small and double:
    one = statistics.median(s for s, _, _ in small)
    two = statistics.median(s for s, _, _ in double)
    print(f"Scaling: dbsync took {one:.2f} s at scale {scale} and {two:.2f} s at scale {int(scale) * 2} "
          f"({two / one:.2f}x for twice the data).")
PY

# A picture of each dataset's and contender's last round beside results.md: CPU of each side
# over time, with dbsync's phases and steps as bars.
echo
echo "Timelines (the last round of each):" | tee -a target/bench/results.md
while IFS=$'\t' read -r label name measured log; do
    picture="target/bench/timeline-${label// /_}-$name.svg"
    report="${log%.log}.report.json"
    [ -f "$report" ] || report=-
    [ -f "${log%.log}.cpu.tsv" ] &&
        python3 scripts/lib/timeline.py "${log%.log}.cpu.tsv" "$report" "$picture" "$label: $name (wall ${measured%% *} s)" "$(nproc)"
done <"$results"
for picture in target/bench/timeline-*.svg; do echo "- $picture"; done | sort -u | tee -a target/bench/results.md
