#!/usr/bin/env bash
# The long suite: every test, with soak and race loops at their full count (DBSYNC_SOAK=1)
# instead of the few rounds the default test command runs. Installs PostgreSQL first when it is
# missing, as scripts/test.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."
DBSYNC_SOAK=1 exec scripts/test.sh "$@"
