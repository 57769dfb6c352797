#!/usr/bin/env bash
# Installs what the proxy needs and is missing (Deno, Docker Engine), starts dockerd where
# nothing did, then runs the proxy on config.yml (or the config given: --config PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_lib.sh
ensure_deno
ensure_dockerd
exec deno task start "$@"
