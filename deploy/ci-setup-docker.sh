#!/usr/bin/env bash
# Prepare a Debian machine (CI, or a fresh developer box) for the docker-compose test:
# install docker.io, docker-compose and debootstrap if missing, start dockerd in the background if
# no daemon answers, wait for it, and build the node image on a Debian base made here
# (deploy/build-image.sh --debian-base), so no container registry is needed.
#
#   bash deploy/ci-setup-docker.sh
#   LIFERAFT_COMPOSE_TEST=1 LIFERAFT_COMPOSE_IMAGE=liferaft:latest pytest tests/compose
#
# Needs root (apt-get, dockerd, debootstrap). Safe to run again: each step is skipped when done.
# dockerd started here keeps running after the script (its log: $DOCKERD_LOG).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DOCKERD_LOG=${DOCKERD_LOG:-/var/log/liferaft-dockerd.log}
DAEMON_TIMEOUT_S=${DAEMON_TIMEOUT_S:-60}

say() { printf 'ci-setup-docker: %s\n' "$*" >&2; }
die() {
  say "error: $*"
  exit 1
}

[[ $(id -u) == 0 ]] || die "needs root (apt-get, dockerd, debootstrap): run it with sudo"

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [[ ${#missing[@]} -gt 0 ]]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi
command -v docker >/dev/null || die "docker.io is installed but there is no docker command"

daemon_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if daemon_up; then
  say "docker daemon $(docker version --format '{{.Server.Version}}') is running"
else
  say "starting dockerd (log: $DOCKERD_LOG)"
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  # Its own session, so it outlives this script and the CI step that ran it.
  setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
  dockerd_pid=$!
  for ((i = 0; i < DAEMON_TIMEOUT_S * 2; i++)); do
    daemon_up && break
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      tail -n 20 "$DOCKERD_LOG" >&2
      die "dockerd exited at start (full log: $DOCKERD_LOG)"
    fi
    sleep 0.5
  done
  daemon_up || {
    tail -n 20 "$DOCKERD_LOG" >&2
    die "dockerd did not answer within ${DAEMON_TIMEOUT_S}s (full log: $DOCKERD_LOG)"
  }
  say "docker daemon $(docker version --format '{{.Server.Version}}') is up (pid $dockerd_pid)"
fi

"$HERE/build-image.sh" --debian-base
