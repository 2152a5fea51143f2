# registry-cache: one process, one port (5000), every upstream registry.
#
#   docker build -t registry-cache .
#   docker run -d --name registry-cache -p 5000:5000 -v registry-cache-data:/data \
#       --read-only --env-file .env registry-cache
#
# Stage 1 builds the project's wheel and every dependency's; stage 2 installs them
# into a venv without touching the network, and runs as an unprivileged user.
#
# Build arguments:
#   PYTHON_IMAGE  the base of both stages: any Debian-like image with python3 (3.11+),
#                 the venv module, useradd and CA certificates.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_NO_INDEX, PIP_TRUSTED_HOST
#                 how stage 1's pip finds packages: a PyPI mirror, or offline from
#                 wheels put in ./wheelhouse/ (the context lets that directory in):
#                   pip wheel -w wheelhouse -c constraints.txt . 'setuptools>=68' wheel
#                   docker build --build-arg PIP_NO_INDEX=1 \
#                       --build-arg PIP_FIND_LINKS=/src/wheelhouse -t registry-cache .
#                 (the image test builds it that way: tests/integration/test_image.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Build arguments reach RUN as environment variables: pip reads these by itself.
ARG PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_NO_INDEX PIP_TRUSTED_HOST
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore lets in only pyproject.toml, constraints.txt, README.md, LICENSE, src/
# and wheelhouse/.
COPY . .
# A venv of its own: Debian's python3 has no pip (and refuses installs into it);
# the official image's works the same way.
# constraints.txt pins every dependency: the image gets the versions the tests ran with.
RUN python3 -m venv /build \
    && /build/bin/pip wheel --wheel-dir /wheels -c constraints.txt .


FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="registry-cache" \
      org.opencontainers.image.description="Pull-through cache for Docker Hub, ghcr.io, quay.io and any OCI registry" \
      org.opencontainers.image.licenses="Apache-2.0"
# PYTHONDONTWRITEBYTECODE: the bytecode is compiled at install time, and nothing is
# written next to it at run time, so the root filesystem may be read-only
# (docker run --read-only; Kubernetes readOnlyRootFilesystem). The cache writes only
# to its data directory.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/registry-cache/bin:$PATH

COPY --from=builder /wheels /tmp/wheels
RUN python3 -m venv /opt/registry-cache \
    && /opt/registry-cache/bin/pip install --no-index --find-links /tmp/wheels registry-cache \
    && rm -rf /tmp/wheels \
    && groupadd --system --gid 10001 registry-cache \
    && useradd --system --uid 10001 --gid registry-cache --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin registry-cache \
    && mkdir -p /data \
    && chown registry-cache:registry-cache /data

# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
# Blobs, manifests and the index. A named volume keeps them across upgrades.
VOLUME /data
EXPOSE 5000

# No curl in slim images: the probe is the standard library asking /readyz (200: the
# index answers and the data directory takes files; see README "Health"), on the port
# of REGISTRY_CACHE_LISTEN (default 5000), over HTTPS when REGISTRY_CACHE_TLS_CERT is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "registry_cache.healthcheck"]

ENTRYPOINT ["registry-cache"]
CMD ["serve", "--data-dir", "/data"]
