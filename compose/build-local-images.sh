#!/usr/bin/env bash
# Build the sandbox's images without pulling anything: root file systems assembled from
# this machine's target-app build and PostgreSQL binaries (with the shared libraries
# `ldd` names), imported into the local engine as `docker import` does.
#
#   compose/build-local-images.sh [--force]
#
# Produces aiops-target-app:local and aiops-postgres:local. The Docker runtime
# (`aiops up --runtime docker`) builds them itself when missing; this script is for
# `docker compose` users.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x target/release/aiops ] || ! [ -x target/release/target-app ]; then
  cargo build --release -p mcp-server -p target-app --bins
fi
AIOPS_TARGET_APP_BIN="$PWD/target/release/target-app" target/release/aiops images build "$@"
cat <<'MSG'

Use them with compose:
  export AIOPS_TARGET_IMAGE=aiops-target-app:local AIOPS_POSTGRES_IMAGE=aiops-postgres:local
  docker compose -p "aiops-$AIOPS_PROJECT" --env-file "$AIOPS_HOME/compose.env" \
    -f compose/docker-compose.yml up -d --no-build
MSG
