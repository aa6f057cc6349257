#!/usr/bin/env bash
# Runs every test (unit and integration). Installs PostgreSQL first when it is missing; the
# integration tests start their own throwaway servers and stop them when they end.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
ensure_postgres
cargo test --all-targets "$@"
