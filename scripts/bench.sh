#!/usr/bin/env bash
# The benchmark: dbsync against `pg_dump -Fd -j N` + `pg_restore -j N` and `pgcopydb clone`, on
# two throwaway PostgreSQL servers, on the datasets *large* (pgbench plus a 12-partition table with
# a foreign key and two secondary indexes) and *many* (1,000 small tables plus a 500-partition
# table). Contenders alternate within each round; the table shows the median of the rounds.
#
#   scripts/bench.sh [--scale N] [--jobs N] [--runs N] [--datasets large,many] [--contenders LIST]
#                    [--baseline BINARY] [--no-scaling] [--keep]
#
#   --scale N        pgbench scale of *large* (default 20, about 500 MB in all)
#   --jobs N         parallelism given to every contender (default: the number of cores)
#   --runs N         rounds per dataset (default 3)
#   --datasets LIST  comma-separated, from: large, many (default both)
#   --contenders L   comma-separated, from: dbsync, dbsync-stream, pg_dump, pgcopydb, verify-checksum
#                    (default all; verify-checksum times `dbsync verify --checksum` against a copy
#                    that an untimed dbsync sync made just before)
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
datasets=large,many
contenders=dbsync,dbsync-stream,pg_dump,pgcopydb,verify-checksum
scaling=yes
keep=no
baseline=
while [ $# -gt 0 ]; do
    case $1 in
        --scale) scale=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --datasets) datasets=$2; shift 2 ;;
        --contenders) contenders=$2; shift 2 ;;
        --baseline) baseline=$(realpath "$2"); shift 2 ;;
        --no-scaling) scaling=no; shift ;;
        --keep) keep=yes; shift ;;
        -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

ensure_postgres
ensure_package pgcopydb pgcopydb
cargo build --release --quiet
dbsync=$PWD/target/release/dbsync
bin=$(postgres_bin_dir)
export PATH="$bin:$PATH"

base=$(throwaway_base bench)
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

# The same settings on both servers, for every contender: room for a bulk load without a
# checkpoint in the middle, and enough memory for index builds to sort in memory.
server_options="-c shared_buffers=512MB -c max_wal_size=8GB -c checkpoint_timeout=30min -c maintenance_work_mem=256MB"
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

# run_contender NAME DATABASE: times one run; prints "seconds rss_bytes dump_bytes".
run_contender() {
    local name=$1 database=$2 source target log started finished
    source=$(uri "$source_port" "$database")
    target=$(uri "$target_port" bench_copy)
    log=$base/logs/$database-$name-$(date +%s%N).log
    reset_target
    case $name in
        dbsync | dbsync-stream | baseline)
            local extra=() binary=$dbsync
            [ "$name" = dbsync-stream ] && extra=(--stream)
            [ "$name" = baseline ] && binary=$baseline
            started=$(now)
            "$binary" sync --source "$source" --target "$target" --jobs "$jobs" --yes --plain \
                --dump-dir "$base/work" --report "$base/work/report.json" "${extra[@]}" >"$log" 2>&1 ||
                { echo "dbsync failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
            finished=$(now)
            python3 - "$base/work/report.json" "$started" "$finished" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
print(float(sys.argv[3]) - float(sys.argv[2]), report["peak_memory_bytes"], report["peak_dump_bytes"])
PY
            ;;
        pg_dump)
            psql_on "$target_port" -d postgres -c "CREATE DATABASE bench_copy"
            started=$(now)
            {
                pg_dump -Fd -j "$jobs" -f "$base/work/dump" "$source" &&
                    pg_restore -j "$jobs" -d "$target" "$base/work/dump"
            } >"$log" 2>&1 || { echo "pg_dump/pg_restore failed, see $log" >&2; exit 1; }
            finished=$(now)
            echo "$(python3 -c "print($finished - $started)") - -"
            ;;
        verify-checksum)
            "$dbsync" sync --source "$source" --target "$target" --jobs "$jobs" --yes --plain \
                --dump-dir "$base/work" >"$log" 2>&1 || { echo "dbsync failed, see $log" >&2; exit 1; }
            psql_on "$target_port" -d postgres -c "CHECKPOINT"
            started=$(now)
            "$dbsync" verify --checksum --source "$source" --target "$target" --jobs "$jobs" >>"$log" 2>&1 ||
                { echo "dbsync verify --checksum failed, see $log" >&2; tail -n 20 "$log" >&2; exit 1; }
            finished=$(now)
            echo "$(python3 -c "print($finished - $started)") - -"
            ;;
        pgcopydb)
            psql_on "$target_port" -d postgres -c "CREATE DATABASE bench_copy"
            started=$(now)
            pgcopydb clone --source "$source" --target "$target" --table-jobs "$jobs" --index-jobs "$jobs" \
                --dir "$base/work/pgcopydb" >"$log" 2>&1 || { echo "pgcopydb failed, see $log" >&2; exit 1; }
            finished=$(now)
            echo "$(python3 -c "print($finished - $started)") - -"
            ;;
    esac
}

mkdir -p "$base/logs" target/bench
results=$base/results.tsv
: >"$results"
IFS=, read -r -a dataset_list <<<"$datasets"
IFS=, read -r -a contender_list <<<"$contenders"
[ -n "$baseline" ] && contender_list+=(baseline)

measure_dataset() {
    local label=$1 database=$2 names=("${@:3}")
    for round in $(seq 1 "$runs"); do
        for name in "${names[@]}"; do
            local measured
            measured=$(run_contender "$name" "$database")
            printf '  %-10s round %d  %-14s %6.2f s\n' "$label" "$round" "$name" "${measured%% *}"
            printf '%s\t%s\t%s\n' "$label" "$name" "$measured" >>"$results"
        done
    done
}

for dataset in "${dataset_list[@]}"; do
    case $dataset in
        large)
            echo "Building large (pgbench scale $scale + 12-partition table) ..."
            build_large bench_large "$scale"
            echo "large: $(database_size bench_large)"
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
            measure_dataset "many" bench_many "${contender_list[@]}"
            drop_dataset bench_many
            ;;
        *) echo "bench.sh: unknown dataset $dataset" >&2; exit 2 ;;
    esac
done

python3 - "$results" "$jobs" "$scale" <<'PY' | tee target/bench/results.md
import statistics, sys, platform, os
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
jobs, scale = sys.argv[2], sys.argv[3]
by_key = {}
for dataset, name, measured in rows:
    seconds, rss, dump = measured.split()
    by_key.setdefault((dataset, name), []).append((float(seconds), rss, dump))
cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
memory = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) // 1024 // 1024
print(f"Machine: {os.cpu_count()} cores ({cpu}), {memory} GiB; jobs {jobs}; pgbench scale {scale}; "
      f"median of {len(next(iter(by_key.values())))} runs")
print()
print("| dataset | contender | median s | runs (s) | ratio to dbsync | dbsync peak RSS | dbsync peak dump dir |")
print("|---|---|---|---|---|---|---|")
def mib(value):
    return "-" if value == "-" else f"{int(value) / 1048576:.1f} MiB"
datasets = list(dict.fromkeys(dataset for dataset, _ in by_key))
for dataset in datasets:
    reference = by_key.get((dataset, "dbsync"))
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
print("ratio to dbsync = dbsync's median / the contender's median (below 1: dbsync is faster).")
sync, verify = by_key.get(("large", "dbsync")), by_key.get(("large", "verify-checksum"))
if sync and verify:
    sync_median = statistics.median(s for s, _, _ in sync)
    verify_median = statistics.median(s for s, _, _ in verify)
    print(f"verify --checksum on large: {verify_median:.2f} s, {verify_median / sync_median:.2f} of the sync's "
          f"{sync_median:.2f} s (goal: below 0.50).")
small = by_key.get(("large", "dbsync"))
double = by_key.get(("large x2", "dbsync"))
if small and double:
    one = statistics.median(s for s, _, _ in small)
    two = statistics.median(s for s, _, _ in double)
    print(f"Scaling: dbsync took {one:.2f} s at scale {scale} and {two:.2f} s at scale {int(scale) * 2} "
          f"({two / one:.2f}x for twice the data).")
PY
