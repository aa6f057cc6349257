#!/usr/bin/env bash
# Runs every test (unit and integration). Installs PostgreSQL first when it is missing, and
# fetches the servers and client tools of other majors the version tests use (once, into
# $DBSYNC_PG_CACHE); the integration tests start their own throwaway servers and stop them when
# they end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
source scripts/lib/versions.sh
ensure_postgres
# The archive tests watch dbsync's fsyncs and renames.
ensure_package strace strace
ensure_versions
cargo test --all-targets "$@"
