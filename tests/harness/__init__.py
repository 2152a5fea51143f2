"""Integration-test harness for registry-cache.

Everything here starts real processes bound to 127.0.0.1 on free ports and stops
them by PID. Modules:

- ``ports``: free ports and waiting for an HTTP server to answer.
- ``registry``: a real CNCF distribution (``docker-registry``) upstream.
- ``token_issuer``: a Docker token server signing JWTs the upstream accepts.
- ``images``: build real OCI / Docker images in memory (or spooled to disk).
- ``push``: push those images to a registry (plain, Basic or Bearer auth).
- ``netns``: run clients in a private mount namespace with their own /etc/hosts.
- ``cache``: run the cache under test as a subprocess.
- ``service``: what those servers and daemons share (pid, log, context manager;
  the state-dir daemons' start/stop).
- ``postgres``, ``seaweedfs``, ``rgw`` (with ``s3engine``): the real engines of cluster
  mode (PostgreSQL 15, SeaweedFS, Ceph RGW); ``sockets``: which sockets a process
  tree holds (the loopback-only checks); ``missing``: a missing engine fails under CI.
"""
