"""A PostgreSQL that the network cuts off after the connect, as a frozen host or a lost
link would: whatever is sent to it is dropped, and nothing comes back, not even TCP's
acknowledgements. (``tcp_relay.py``'s cut hangs up at once instead: a restart.)

The database's address lives in a network namespace of the test's own, joined to this one
by a veth pair on the benchmarking range 198.18.0.0/15 (RFC 2544, never routed; nothing
leaves the machine). A relay in the namespace passes connections to a relay here, which
passes them to the test suite's PostgreSQL. ``cut()`` takes the namespace's end of the
pair down, and the kernel silently drops what is sent across; ``restore()`` brings it up.
Needs root and iproute2 (``ip netns``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.skips import skip_loudly
from tests.support.tcp_relay import tcp_relay

ROOT = Path(__file__).resolve().parents[2]
_numbers = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)  # noqa: S603,S607


class CutOffNetwork:
    def __init__(self, namespace: str, inner_link: str) -> None:
        self.namespace = namespace
        self.inner_link = inner_link

    def cut(self) -> None:
        _ip("netns", "exec", self.namespace, "ip", "link", "set", self.inner_link, "down")

    def restore(self) -> None:
        _ip("netns", "exec", self.namespace, "ip", "link", "set", self.inner_link, "up")


@contextmanager
def database_behind_a_link(database_url: str) -> Iterator[tuple[str, CutOffNetwork]]:
    """(``database_url`` rewritten to reach the database across the link, the link)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        skip_loudly("a network namespace needs root and iproute2 (ip netns): "
                    "the database behind a cut link is not tested")
    parts = urlsplit(database_url)
    number = next(_numbers)
    tag = f"{os.getpid() % 100000}x{number}"
    third, fourth = (os.getpid() + number) % 250, 4 * (number % 60)
    here, there = f"198.18.{third}.{fourth + 1}", f"198.18.{third}.{fourth + 2}"
    namespace, outer, inner = f"tsd-cut-{tag}", f"tsdc{tag}a", f"tsdc{tag}b"
    _ip("netns", "add", namespace)
    relay_there = None
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
        _ip("addr", "add", f"{here}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("netns", "exec", namespace, "ip", "addr", "add", f"{there}/30", "dev", inner)
        _ip("netns", "exec", namespace, "ip", "link", "set", inner, "up")
        # Its hardware address known for good: cut, a host that drops packets is silent,
        # where a neighbour left to ARP would soon fail fast ("No route to host").
        inner_mac = subprocess.run(  # noqa: S603
            ["ip", "netns", "exec", namespace, "cat", f"/sys/class/net/{inner}/address"],  # noqa: S607
            check=True, capture_output=True, text=True).stdout.strip()
        _ip("neigh", "replace", there, "lladdr", inner_mac, "dev", outer, "nud", "permanent")
        with tcp_relay(parts.hostname or "127.0.0.1", parts.port or 5432, here) as relay_here:
            relay_there = subprocess.Popen(  # noqa: S603
                ["ip", "netns", "exec", namespace, sys.executable, "-m",  # noqa: S607
                 "tests.support.tcp_relay", there, here, str(relay_here.port)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True)
            port = int(relay_there.stdout.readline())
            userinfo = parts.netloc.rpartition("@")[0]
            netloc = f"{userinfo}@{there}:{port}" if userinfo else f"{there}:{port}"
            yield (urlunsplit(parts._replace(netloc=netloc)),
                   CutOffNetwork(namespace, inner))
    finally:
        if relay_there is not None:
            relay_there.kill()
            relay_there.wait()
        subprocess.run(["ip", "link", "del", outer], capture_output=True)  # noqa: S603,S607
        _ip("netns", "del", namespace)
