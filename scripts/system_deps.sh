#!/usr/bin/env bash
# Debian packages the tests and the prod-profile checks need beyond Python:
#   redis-server (Feast's prod online store), postgresql (the campaign store's prod
#   backend), chromium (screenshots of the HTML experiment report).
# Installs only what is missing; needs root (or sudo) the first time.
set -euo pipefail
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
{ command -v postgres >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; } || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  printf '\033[1m[install]\033[0m %s\n' "system packages present (redis-server, postgresql, chromium)"
  exit 0
fi
printf '\033[1m[install]\033[0m %s\n' "installing Debian packages: ${need[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! $SUDO apt-get install -y -q "${need[@]}" >/tmp/sightline-apt.log 2>&1; then
  $SUDO apt-get update -q >/tmp/sightline-apt.log 2>&1
  $SUDO apt-get install -y -q "${need[@]}" >>/tmp/sightline-apt.log 2>&1 || {
    echo "[install] could not install ${need[*]}; see /tmp/sightline-apt.log, or run: apt-get install -y ${need[*]}" >&2
    exit 1
  }
fi
