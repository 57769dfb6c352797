#!/usr/bin/env bash
# Installs what the whole suite needs and is missing (Deno, Docker Engine, redis-server, nginx,
# wrk, python3-venv, Node, Chromium), starts dockerd, runs `deno task test` and ends with
# "N passed, N failed" (non-zero exit on any failure). `.ci/run` runs exactly this.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_lib.sh

fail() { log "$1"; echo "0 passed, 1 failed"; exit 1; }

missing=()
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# The suite runs the benchmark's quick configuration, which needs nginx and wrk.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
# The disconnect tests drive real Python and Node clients (tests/clients/install.ts makes
# their venv and node_modules from pinned lists).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# The dashboard test drives a real headless Chromium.
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
ensure_packages "${missing[@]}" || fail "apt-get install failed"
ensure_deno || fail "deno install failed"
ensure_dockerd || fail "dockerd did not start"

log "deno task test"
out=$(mktemp)
NO_COLOR=1 deno task test 2>&1 | tee "$out"
status=${PIPESTATUS[0]}

summary=$(grep -E '^(ok|FAILED) \| [0-9]+ passed' "$out" | tail -n 1)
if [ -n "$summary" ]; then
  passed=$(sed -E 's/.*\| ([0-9]+) passed.*/\1/' <<<"$summary")
  failed=$(sed -E 's/.*\| ([0-9]+) failed.*/\1/' <<<"$summary")
else
  # fmt, lint or check failed before any test ran.
  passed=0
  failed=1
fi
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi
echo "$passed passed, $failed failed"
[ "$status" -eq 0 ] && [ "$failed" -eq 0 ]
