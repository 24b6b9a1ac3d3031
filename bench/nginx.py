"""nginx answering a fixed body: the target that shows the load generators' own ceiling.

tests/support/servers.nginx caps nginx at 64 connections (plenty for tests); an open-loop
generator at thousands of requests per second needs more, so the bench writes its own
small config and reuses the test suite's process launcher.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support import servers

CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        {location}
    }}
}}
"""


@contextmanager
def static_json(directory: Path, location: str) -> Iterator[servers.RunningServer]:
    directory = directory / "nginx"
    directory.mkdir(parents=True, exist_ok=True)
    port = servers.free_port()
    user = "user root root;" if os.geteuid() == 0 else ""
    conf = directory / "nginx.conf"
    conf.write_text(CONF.format(dir=directory, port=port, user=user, location=location))
    command = [servers.NGINX, "-p", str(directory), "-e", str(directory / "error.log"),
               "-c", str(conf)]
    with servers.run_process("nginx", command, port=port, log_path=directory / "error.log",
                            probe="/healthz") as server:
        yield server
