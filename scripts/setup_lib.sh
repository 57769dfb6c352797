# Shared by scripts/start.sh and scripts/test.sh (sourced): install what a Debian/Ubuntu machine
# lacks, and start dockerd where nothing did. Run as root.

DENO_VERSION=2.9.6
log() { printf '[lqp] %s\n' "$*" >&2; }

ensure_deno() {
  if command -v deno >/dev/null 2>&1 && [ "$(deno --version | head -n1 | awk '{print $2}')" = "$DENO_VERSION" ]; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || ensure_packages npm || return 1
  log "installing deno $DENO_VERSION from npm (the package carries the real binary)"
  npm install -g "deno@$DENO_VERSION" >/dev/null
}

# ensure_packages PKG... : apt-get installs the ones given (callers pass only what is missing).
ensure_packages() {
  [ $# -eq 0 ] && return 0
  log "installing $*"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

docker_up() { curl -sf --max-time 2 --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1; }

ensure_dockerd() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  ensure_packages "${missing[@]}" || return 1
  docker_up && return 0
  log "starting dockerd (log: /tmp/lqp-dockerd.log)"
  (dockerd >/tmp/lqp-dockerd.log 2>&1 &)
  for _ in $(seq 1 150); do docker_up && return 0; sleep 0.2; done
  log "dockerd did not start:"
  tail -n 20 /tmp/lqp-dockerd.log >&2
  return 1
}
