#!/usr/bin/env bash
# What `make pi-check` (qemu user emulation, debootstrap) and `make docker-demo` (a Docker
# engine) need on the host: installed where missing, started where stopped. Root with apt only.
# Exit 0: ready; exit 2: cannot be made ready here (not root, no apt): the caller skips and says so.
#   deploy/heavy-deps.sh pi-check | docker
set -u
what=${1:?usage: heavy-deps.sh pi-check|docker}
case "$what" in
  pi-check) want=(qemu-user-static debootstrap mosquitto) ;;
  docker) want=(docker.io docker-compose debootstrap) ;;
  *) echo "heavy-deps: unknown $what" >&2; exit 64 ;;
esac
if [ "$(id -u)" != 0 ]; then echo "heavy-deps: $what needs root"; exit 2; fi
missing=()
for pkg in "${want[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then echo "heavy-deps: no apt-get for ${missing[*]}"; exit 2; fi
  echo "heavy-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { echo "heavy-deps: apt-get could not install ${missing[*]}"; exit 2; }
fi
if [ "$what" = pi-check ]; then
  B=/proc/sys/fs/binfmt_misc
  [ -e $B/register ] || mount -t binfmt_misc binfmt_misc $B || { echo "heavy-deps: cannot mount binfmt_misc"; exit 2; }
  [ -e $B/qemu-aarch64 ] || cat /usr/lib/binfmt.d/qemu-aarch64.conf >$B/register \
    || { echo "heavy-deps: cannot register qemu-aarch64"; exit 2; }
  exit 0
fi
# docker: a running engine (started here when none answers; its log in /var/log/fedvfer-dockerd.log)
docker info >/dev/null 2>&1 && exit 0
nohup dockerd >/var/log/fedvfer-dockerd.log 2>&1 &
echo $! >/run/fedvfer-dockerd.pid
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
echo "heavy-deps: dockerd did not start (see /var/log/fedvfer-dockerd.log)"; exit 2
