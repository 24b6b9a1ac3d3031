"""deploy/tsd-server.nginx.conf made ready to run on loopback in a test: its snippets beside
it, a throwaway certificate for its host name, and its ports, certificate paths and log
folder replaced. Everything else is the file as shipped."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HOST_NAME = "print.example.org"  # the name in the shipped site and the certificate
SNIPPETS = ("tsd-server-proxy.conf", "tsd-server-limits.conf")


def copy_snippets(directory: Path) -> None:
    """The files the site includes as ``snippets/...``, under ``directory`` (nginx's -p)."""
    (directory / "snippets").mkdir(parents=True, exist_ok=True)
    for snippet in SNIPPETS:
        shutil.copy(DEPLOY / snippet, directory / "snippets")


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for HOST_NAME, and its key."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={HOST_NAME}", "-addext", f"subjectAltName=DNS:{HOST_NAME}",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def replaced(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} is no longer in the shipped site: update this test"
    return text.replace(old, new)


def on_loopback(directory: Path, *, http_port: int, https_port: int,
                also: Iterable[tuple[str, str]] = ()) -> str:
    """The site's text listening on 127.0.0.1 at these ports (IPv4 only), with a throwaway
    certificate and its logs in ``directory``, its snippets copied there; ``also`` are
    further (old, new) replacements, each of which must apply."""
    copy_snippets(directory)
    cert, key = certificate(directory)
    site = (DEPLOY / "tsd-server.nginx.conf").read_text()
    site = "\n".join(line for line in site.splitlines() if "listen [::]" not in line)
    for old, new in (
            ("listen 80", f"listen 127.0.0.1:{http_port}"),
            ("listen 443", f"listen 127.0.0.1:{https_port}"),
            (f"/etc/letsencrypt/live/{HOST_NAME}/fullchain.pem", str(cert)),
            (f"/etc/letsencrypt/live/{HOST_NAME}/privkey.pem", str(key)),
            ("/var/log/nginx/", f"{directory}/"),
            *also):
        site = replaced(site, old, new)
    return site
