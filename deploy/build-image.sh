#!/usr/bin/env bash
# Build the liferaft node image: wheels first (liferaft and every dependency, into deploy/wheels/),
# then `docker build` of deploy/Dockerfile, which installs from those wheels only (no index).
#
#   deploy/build-image.sh                  # base python:3.11-slim, pulled from a registry
#   deploy/build-image.sh --debian-base    # base made here from Debian packages (no registry)
#
# --debian-base makes a minimal Debian image (debootstrap --variant=minbase, plus python3,
# python3-venv, python3-pip, ca-certificates) and `docker import`s it, once: the image is kept
# under its tag with a label describing how it was made, and reused while that still matches.
#
# Safe to run again: wheels are rebuilt (cheap with pip's cache), docker's layer cache keeps the
# rest, and the base is reused. Exits non-zero with a one-line reason when something is missing.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: deploy/build-image.sh [options]

  --debian-base         build the base image from Debian packages with debootstrap (needs root)
  --base IMAGE          use this base image (default python:3.11-slim, or the Debian one)
  --rebuild-base        with --debian-base: make the base again even if one is cached
  --tag IMAGE           the image to build (default $LIFERAFT_IMAGE or liferaft:latest)
  --python PATH         the Python that builds the wheels (default $PYTHON, python3.11, python3);
                        it must have the base image's Python minor version
  --skip-wheels         reuse deploy/wheels/ as it is
  -h, --help            this text

environment: LIFERAFT_IMAGE, PYTHON, DEBIAN_MIRROR (default http://deb.debian.org/debian),
             LIFERAFT_BASE_TAG (default liferaft-base:bookworm)
USAGE
}

die() {
  echo "build-image: error: $*" >&2
  exit 1
}
say() { echo "build-image: $*" >&2; }

# Temporary folders, removed on exit however the script ends.
TEMPS=()
cleanup() {
  local dir
  for dir in "${TEMPS[@]}"; do
    [[ -d $dir ]] || continue
    # debootstrap mounts /proc and /sys in the new root while it works: never delete through a
    # mount that an interrupted run left behind (deepest first).
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
      while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    rm -rf --one-file-system "$dir"
  done
}
trap cleanup EXIT

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WHEELS=$HERE/wheels

IMAGE=${LIFERAFT_IMAGE:-liferaft:latest}
BASE=""
DEBIAN_BASE=0
REBUILD_BASE=0
SKIP_WHEELS=0
PY=${PYTHON:-}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
BASE_TAG=${LIFERAFT_BASE_TAG:-liferaft-base:$SUITE}
BASE_PACKAGES=python3,python3-venv,python3-pip,ca-certificates

while [[ $# -gt 0 ]]; do
  case $1 in
    --debian-base) DEBIAN_BASE=1 ;;
    --rebuild-base) REBUILD_BASE=1 ;;
    --skip-wheels) SKIP_WHEELS=1 ;;
    --base) BASE=${2:?--base needs an image}; shift ;;
    --tag) IMAGE=${2:?--tag needs an image name}; shift ;;
    --python) PY=${2:?--python needs a path}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument $1" ;;
  esac
  shift
done
[[ $DEBIAN_BASE == 1 && -n $BASE ]] && die "--debian-base and --base exclude each other"

# -- docker ---------------------------------------------------------------------------------------
command -v docker >/dev/null || die "no docker command (Debian: apt-get install docker.io)"
if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  die "no docker daemon answers (${DOCKER_HOST:-unix:///var/run/docker.sock}): start dockerd \
(systemctl start docker, or deploy/ci-setup-docker.sh), or check your access to its socket"
fi

# -- base image -----------------------------------------------------------------------------------
# How the Debian base is made; stored as a label so a change here makes a new base.
BASE_SPEC="debootstrap $SUITE minbase +$BASE_PACKAGES"

debian_base() {
  if [[ $REBUILD_BASE == 0 ]] &&
    [[ $(docker image inspect --format '{{index .Config.Labels "org.liferaft.base"}}' \
      "$BASE_TAG" 2>/dev/null) == "$BASE_SPEC" ]]; then
    say "reusing base image $BASE_TAG ($BASE_SPEC)"
    return
  fi
  command -v debootstrap >/dev/null || die "--debian-base needs debootstrap (apt-get install debootstrap)"
  [[ $(id -u) == 0 ]] || die "--debian-base needs root (debootstrap and chroot): run it with sudo"
  local rootfs log
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/liferaft-base.XXXXXX")
  log=$(mktemp "${TMPDIR:-/tmp}/liferaft-debootstrap.XXXXXX.log")
  TEMPS+=("$rootfs")
  say "making base image $BASE_TAG with debootstrap from $MIRROR (a minute or two)"
  if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$MIRROR" \
    >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "debootstrap failed (full log: $log)"
  fi
  rm -f "$log"
  # No package caches or lists in the image: it is rebuilt, never apt-get upgraded in place.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar --numeric-owner -C "$rootfs" -c . |
    docker import \
      --change "LABEL org.liferaft.base=\"$BASE_SPEC\"" \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["python3"]' \
      - "$BASE_TAG" >/dev/null
  cleanup
  say "base image $BASE_TAG ready"
}

if [[ $DEBIAN_BASE == 1 ]]; then
  debian_base
  BASE=$BASE_TAG
fi
BASE=${BASE:-python:3.11-slim}

# -- wheels ---------------------------------------------------------------------------------------
base_python_version() {
  docker run --rm --entrypoint python3 "$BASE" \
    -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

pick_python() {
  if [[ -n $PY ]]; then
    command -v "$PY" >/dev/null || die "Python $PY not found"
    echo "$PY"
    return
  fi
  local want=$1 candidate
  for candidate in "python$want" python3; do
    if command -v "$candidate" >/dev/null &&
      [[ $("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])') == "$want" ]]; then
      echo "$candidate"
      return
    fi
  done
  die "no Python $want here to build the wheels for the image's Python $want: pass --python"
}

build_wheels() {
  local want py have src
  want=$(base_python_version) || die "cannot run python3 in base image $BASE (pull it, or use --debian-base)"
  py=$(pick_python "$want")
  have=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [[ $have == "$want" ]] ||
    die "$py is Python $have but the base image has $want: wheels would not install; pass --python"
  "$py" -m pip --version >/dev/null 2>&1 || die "$py has no pip"
  # Build from a clean copy of the source: an in-tree build reuses build/lib, which can ship
  # modules that no longer exist. In a git checkout the copy is every file git would not ignore.
  src=$(mktemp -d "${TMPDIR:-/tmp}/liferaft-src.XXXXXX")
  TEMPS+=("$src")
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
      tar -C "$ROOT" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$src" -xf -
  else
    tar -C "$ROOT" --exclude=.git --exclude=.venv --exclude=deploy/wheels --exclude=build \
      --exclude='*.egg-info' -cf - . | tar -C "$src" -xf -
  fi
  say "building wheels with $py (Python $have) into deploy/wheels/"
  rm -rf "$WHEELS"
  mkdir -p "$WHEELS"
  # A fixed SOURCE_DATE_EPOCH makes the liferaft wheel a function of the source alone, so an
  # unchanged tree gives the same bytes and docker's layer cache skips the install stage.
  if ! SOURCE_DATE_EPOCH=315532800 "$py" -m pip wheel --quiet --disable-pip-version-check \
    "$src" -w "$WHEELS"; then
    die "pip wheel failed (is a package index reachable, or are the wheels in pip's cache?)"
  fi
  say "$(find "$WHEELS" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELS" | cut -f1)"
}

if [[ $SKIP_WHEELS == 1 ]]; then
  compgen -G "$WHEELS/liferaft-*.whl" >/dev/null || die "--skip-wheels, but deploy/wheels/ has no liferaft wheel"
else
  build_wheels
fi

# -- image ----------------------------------------------------------------------------------------
say "building $IMAGE on $BASE"
previous=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
build_log=$(mktemp "${TMPDIR:-/tmp}/liferaft-docker-build.XXXXXX.log")
if ! docker build --build-arg "BASE_IMAGE=$BASE" -t "$IMAGE" -f "$HERE/Dockerfile" "$HERE" \
  >"$build_log" 2>&1; then
  tail -n 30 "$build_log" >&2
  die "docker build failed (full log: $build_log)"
fi
rm -f "$build_log"

# The classic builder keeps each build's install stage as an untagged image (its layer cache).
# Keep the newest, which the next build can reuse, and the image this one replaced if a container
# still uses it; remove the rest so repeated builds do not pile up gigabytes.
stale=$(docker images --quiet --no-trunc --filter label=org.liferaft.stage=install | tail -n +2)
current=$(docker image inspect --format '{{.Id}}' "$IMAGE")
if [[ -n $previous && $previous != "$current" ]]; then
  stale="$stale $previous"
fi
for id in $stale; do
  docker image rm "$id" >/dev/null 2>&1 || true
done
say "built $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
