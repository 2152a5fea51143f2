#!/usr/bin/env bash
# Install every tool the test suite drives: real registries, real clients, the tools of
# the harness (Debian 12). Idempotent: installs only when something is missing.
# As root it runs apt-get directly (a fresh Debian has no sudo); otherwise through sudo.
# Usage: scripts/install-test-deps.sh [--list]   (--list: print the tools it provides)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

PACKAGES=(
  docker-registry   # CNCF distribution 2.8: the real upstream, and the peer proxy in benchmarks
  skopeo containerd podman docker.io umoci  # real clients
  docker-compose    # the compose files are checked with `docker-compose config`
  nginx iperf3 wrk  # fault injection, "CDN", path comparison, load generation
  apache2-utils     # htpasswd for the Basic-auth upstream and client logins
  systemd           # systemd-analyze verifies deploy/registry-cache.service
  python3-venv      # the suite's venv (Debian's python3 has no ensurepip without it)
  debootstrap       # a Debian base image for the image build test (no registry to pull one from)
  postgresql-15     # the cluster index: a real PostgreSQL the tests start on their own port
  radosgw ceph-mon ceph-osd ceph-common  # Ceph RGW 16.2: a real S3 engine (one mon, one memstore OSD)
  chromium          # the dashboard's browser tests (driven by Playwright for Python)
  gcc libc6-dev     # the benchmark suite builds its small C helpers (benchmarks/native) at run time
  valgrind          # the dashboard scenario counts instructions per request with callgrind
  uidmap util-linux mount iproute2 curl jq ca-certificates openssl libc-bin
)
# What the tests look for (each comes with a package above).
BINARIES=(
  docker-registry skopeo containerd ctr podman dockerd docker umoci docker-compose
  nginx iperf3 wrk htpasswd systemd-analyze debootstrap
  radosgw radosgw-admin ceph-mon ceph-osd ceph ceph-authtool monmaptool ss
  unshare nsenter runuser mount getent curl jq openssl chromium gcc valgrind callgrind_control
)

if [[ ${1:-} == --list ]]; then
  printf '%s\n' "${BINARIES[@]}"
  exit 0
fi

missing=()
for bin in "${BINARIES[@]}"; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
# PostgreSQL's server binaries are not on PATH.
[[ -x /usr/lib/postgresql/15/bin/postgres && -x /usr/lib/postgresql/15/bin/initdb ]] || missing+=("postgresql-15")
if ! "${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=("python3-venv")
fi
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "test dependencies: all present"
  exit 0
fi
echo "test dependencies: installing (missing: ${missing[*]})"
apt_install "${PACKAGES[@]}"
# Debian starts nothing here without systemd, but make sure no stock daemon holds a port.
# (Debian's own PostgreSQL cluster 15/main may be started on 5432: the tests use their own port.)
for svc in nginx docker containerd docker-registry; do
  as_root service "$svc" stop >/dev/null 2>&1 || true
done
echo "test dependencies: installed"
