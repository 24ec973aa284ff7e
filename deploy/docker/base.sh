#!/usr/bin/env bash
# Prints the base image for deploy/docker/'s Dockerfiles: $DOCKER_BASE (python:3.11-slim-bookworm
# by default) when it is here or a registry gives it, else fedvfer-base:bookworm, a Debian
# Bookworm made on this machine with debootstrap and `docker import` (root; cached in
# ${FEDVFER_CACHE:-/var/cache/fedvfer}/docker/). Progress goes to stderr.
set -euo pipefail
want=${DOCKER_BASE:-python:3.11-slim-bookworm}
if docker image inspect "$want" >/dev/null 2>&1 || timeout 60 docker pull -q "$want" >/dev/null 2>&1; then
  echo "$want"; exit 0
fi
local_base=fedvfer-base:bookworm
echo "docker-base: no registry gives $want; using $local_base (debootstrap)" >&2
if ! docker image inspect "$local_base" >/dev/null 2>&1; then
  cache=${FEDVFER_CACHE:-/var/cache/fedvfer}
  root=$cache/docker/base-bookworm-amd64
  if [ ! -d "$root" ]; then
    rm -rf "$root.tmp"
    mkdir -p "$cache/logs"
    echo "docker-base: debootstrap bookworm (log $cache/logs/docker-base.log)" >&2
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$root.tmp" http://deb.debian.org/debian >"$cache/logs/docker-base.log" 2>&1 \
      || { echo "docker-base: debootstrap failed; see $cache/logs/docker-base.log" >&2; exit 1; }
    mv "$root.tmp" "$root"
  fi
  tar -C "$root" -c . | docker import - "$local_base" >&2
fi
echo "$local_base"
