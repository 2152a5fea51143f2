#!/usr/bin/env bash
# Install what the test suite drives: real registries and real clients (Debian 12).
# Idempotent: installs only what is missing. Needs root (or sudo) for apt.
set -euo pipefail

PACKAGES=(
  docker-registry   # CNCF distribution 2.8: the real upstream, and the peer proxy in benchmarks
  skopeo containerd podman docker.io umoci  # real clients
  nginx iperf3 wrk  # fault injection, "CDN", path comparison, load generation
  apache2-utils     # htpasswd for the Basic-auth upstream
  uidmap util-linux iproute2 curl jq ca-certificates
  gcc libc6-dev     # the benchmark suite builds its small C helpers (benchmarks/native) at run time
)
BINARIES=(docker-registry skopeo containerd ctr podman dockerd umoci nginx iperf3 wrk htpasswd unshare curl jq gcc)

missing=0
for bin in "${BINARIES[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1 || missing=1
done
if [[ $missing -eq 0 ]]; then
  echo "test dependencies: all present"
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
# Debian starts nothing here without systemd, but make sure no stock daemon holds a port.
for svc in nginx docker containerd docker-registry; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
echo "test dependencies: installed"
