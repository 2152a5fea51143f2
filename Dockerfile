# registry-cache: one process, one port (5000), every upstream registry.
#
#   docker build -t registry-cache .
#   docker run -d --name registry-cache -p 5000:5000 -v registry-cache-data:/data \
#       --env-file .env registry-cache
#
# Stage 1 builds the project's wheel and every dependency's; stage 2 installs them
# into a venv without touching the network, and runs as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore lets in only pyproject.toml, constraints.txt, README.md, LICENSE and src/.
COPY . .
# constraints.txt pins every dependency: the image gets the versions the tests ran with.
RUN pip wheel --wheel-dir /wheels -c constraints.txt .


FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="registry-cache" \
      org.opencontainers.image.description="Pull-through cache for Docker Hub, ghcr.io, quay.io and any OCI registry" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/registry-cache/bin:$PATH

COPY --from=builder /wheels /tmp/wheels
RUN python -m venv /opt/registry-cache \
    && /opt/registry-cache/bin/pip install --no-index --find-links /tmp/wheels registry-cache \
    && rm -rf /tmp/wheels \
    && groupadd --system --gid 10001 registry-cache \
    && useradd --system --uid 10001 --gid registry-cache --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin registry-cache \
    && mkdir -p /data \
    && chown registry-cache:registry-cache /data

USER registry-cache
# Blobs, manifests and the index. A named volume keeps them across upgrades.
VOLUME /data
EXPOSE 5000

# No curl in slim images: ask /readyz with the standard library (200: the index
# answers and the data directory takes files; see README "Health").
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request\ntry:\n    urllib.request.urlopen('http://127.0.0.1:5000/readyz', timeout=4)\nexcept Exception as exc:\n    sys.exit(f'not ready: {exc}')"]

ENTRYPOINT ["registry-cache"]
CMD ["serve", "--data-dir", "/data"]
