#!/usr/bin/env bash
# Install the Debian packages the tests use, only when they are missing:
# mosquitto (the third-party broker of the interoperability tests and of make bench),
# mosquitto-clients (make bench), prometheus (promtool,
# and the server that scrapes live workers in the observability tests) and postgresql
# (the storage example's tests and benchmark start private clusters with its initdb).
set -euo pipefail

need=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need+=(mosquitto)
# mosquitto_sub: the subscribers of make bench's platform-vs-Mosquitto comparison
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Debian keeps the server binaries off PATH, one folder per major version.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install: ${need[*]}" >&2; exit 1; }
    sudo="sudo"
fi
echo "installing Debian packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# --no-install-recommends keeps prometheus from pulling in its exporters and services.
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
