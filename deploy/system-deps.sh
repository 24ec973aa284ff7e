#!/usr/bin/env bash
# Install the Debian packages that fedvfer's tests, demo and provisioning use, where missing.
# Never fails the build by itself: a test that needs a missing tool says so when it skips.
set -u
want=(mosquitto mosquitto-clients mtools dosfstools fdisk chromium docker-compose cloud-init)
missing=()
for pkg in "${want[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: not root or no apt-get; missing: ${missing[*]} (tests that need them will skip and say why)"
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
for pkg in "${missing[@]}"; do
  apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null 2>&1 \
    || echo "system-deps: could not install $pkg"
done
exit 0
