"""nginx round robin in front of cache replicas, on 127.0.0.1 (Debian ``nginx``).

``LoadBalancer(workdir, backends).start()`` writes a config whose every path is
under ``workdir``, runs ``nginx -g 'daemon off;'`` (as a child we hold the PID
of), waits for the port, and ``stop()`` ends it by PID. No buffering: bytes pass
as they arrive, as a production proxy in front of the cache should be set up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from . import proc as procs
from .ports import free_port, http_status
from .service import LoopbackService

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available() -> bool:
    return Path(NGINX).exists()


class LoadBalancer(LoopbackService):
    def __init__(self, workdir: Path, backends: Sequence[str]) -> None:
        self.workdir = workdir
        self.backends = list(backends)  # host:port
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def config(self) -> str:
        d = self.workdir
        servers = "\n".join(f"    server {b} max_fails=0;" for b in self.backends)
        return f"""
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  upstream replicas {{
{servers}
    keepalive 16;
  }}
  server {{
    listen {self.host_port};
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_buffering off;
      proxy_buffer_size 1m;
      proxy_buffers 4 1m;  # unused unbuffered, but nginx checks them against the size
      proxy_request_buffering off;
      proxy_read_timeout 120s;
      proxy_next_upstream error timeout;
    }}
  }}
}}
"""

    def start(self) -> Self:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir / "tmp", 0o777)  # nginx's workers may run as nobody
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config())
        self._proc = procs.spawn(
            [NGINX, "-c", str(conf), "-p", str(self.workdir), "-g", "daemon off;"],
            stdout=self.workdir / "nginx.out",
        )
        deadline = time.monotonic() + 10.0
        while http_status(f"{self.url}/healthz", timeout=1.0) != 200:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not come up:\n{self.log_text()}")
            time.sleep(0.05)
        return self

    @property
    def log_path(self) -> Path:
        return self.workdir / "error.log"

    def stop(self) -> None:
        if self._proc is not None:
            procs.terminate(self._proc, grace=5.0)
            self._proc = None
