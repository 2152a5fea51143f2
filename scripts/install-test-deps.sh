#!/usr/bin/env bash
# Install what the test suite drives: real registries and real clients (Debian 12).
# Idempotent: installs only what is missing. Needs root (or sudo) for apt.
set -euo pipefail

PACKAGES=(
  docker-registry   # CNCF distribution 2.8: the real upstream, and the peer proxy in benchmarks
  skopeo containerd podman docker.io umoci  # real clients
  nginx iperf3 wrk  # fault injection, "CDN", path comparison, load generation
  apache2-utils     # htpasswd for the Basic-auth upstream
  debootstrap       # a Debian base image for the image build test (no registry to pull one from)
  docker-compose    # validates the compose files (docker-compose config)
  postgresql-15     # the cluster index: a real PostgreSQL the tests start on their own port
  radosgw ceph-mon ceph-osd ceph-common  # Ceph RGW 16.2: a real S3 engine (one mon, one memstore OSD)
  uidmap util-linux iproute2 curl jq ca-certificates
)
BINARIES=(docker-registry skopeo containerd ctr podman dockerd umoci nginx iperf3 wrk htpasswd unshare curl jq
  debootstrap docker-compose radosgw radosgw-admin ceph-mon ceph-osd ceph ceph-authtool monmaptool ss)

missing=0
for bin in "${BINARIES[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1 || missing=1
done
# PostgreSQL's server binaries are not on PATH.
[[ -x /usr/lib/postgresql/15/bin/postgres && -x /usr/lib/postgresql/15/bin/initdb ]] || missing=1
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
# (Debian's own PostgreSQL cluster 15/main may be started on 5432: the tests use their own port.)
for svc in nginx docker containerd docker-registry; do
  $SUDO service "$svc" stop >/dev/null 2>&1 || true
done
echo "test dependencies: installed"
