"""A PostgreSQL that the network cuts off after the connect, as a frozen host or a lost
link would: whatever is sent to it is dropped, and nothing comes back, not even TCP's
acknowledgements. (``tcp_relay.py``'s cut hangs up at once instead: a restart.)

The database's address lives in a network namespace of the test's own, joined to this one
by a veth pair on the benchmarking range 198.18.0.0/15 (RFC 2544, never routed; nothing
leaves the machine). A relay in the namespace passes connections to a relay here, which
passes them to the test suite's PostgreSQL. ``cut()`` takes the namespace's end of the
pair down, and the kernel silently drops what is sent across; ``restore()`` brings it up.
``answers_dropped()`` drops only what comes back (a lost acknowledgement or probe answer).
Needs root and iproute2 (``ip netns``).

A run killed before it could clean up leaves its namespace behind; the next run removes
those of processes that are gone. The relay in the namespace ends with the test process
(it waits on a pipe from it).
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import secrets
import select
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
PREFIX = "tsd-cut-"
BENCHMARKING = ipaddress.ip_network("198.18.0.0/15")
_numbers = itertools.count()


def _ip(*args: str, check: bool = True) -> str:
    return subprocess.run(["ip", *args], check=check, capture_output=True,  # noqa: S603,S607
                          text=True).stdout


class CutOffNetwork:
    def __init__(self, namespace: str, inner_link: str, here: str) -> None:
        self.namespace, self.inner_link, self.here = namespace, inner_link, here

    def _in_namespace(self, *args: str) -> None:
        _ip("netns", "exec", self.namespace, "ip", *args)

    def cut(self) -> None:
        self._in_namespace("link", "set", self.inner_link, "down")

    def restore(self) -> None:
        self._in_namespace("link", "set", self.inner_link, "up")

    @contextmanager
    def answers_dropped(self) -> Iterator[None]:
        """What the database's side sends back is dropped while inside."""
        self._in_namespace("route", "add", "blackhole", f"{self.here}/32")
        try:
            yield
        finally:
            self._in_namespace("route", "del", "blackhole", f"{self.here}/32")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_left_behind() -> None:
    """Namespaces (and their links) of test runs killed before they cleaned up."""
    for name in re.findall(rf"^({PREFIX}(\d+)-[0-9a-f]+)", _ip("netns", "list"), re.M):
        if not _alive(int(name[1])):
            _ip("netns", "del", name[0], check=False)


def _free_block(pid: int, number: int) -> tuple[str, str]:
    """A /30 of 198.18.0.0/15 that no interface here has: (this side, the namespace's)."""
    blocks = BENCHMARKING.num_addresses // 4
    for step in range(blocks):
        start = BENCHMARKING.network_address + (pid * 64 + number + step * 4099) % blocks * 4
        here, there = str(start + 1), str(start + 2)
        if not _ip("-o", "addr", "show", "to", f"{here}/30").strip():
            return here, there
    raise RuntimeError(f"no free /30 in {BENCHMARKING}")


@contextmanager
def database_behind_a_link(database_url: str) -> Iterator[tuple[str, CutOffNetwork]]:
    """(``database_url`` rewritten to reach the database across the link, the link)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        skip_loudly("a network namespace needs root and iproute2 (ip netns): "
                    "the database behind a cut link is not tested")
    _remove_left_behind()
    parts = urlsplit(database_url)
    pid, number, tag = os.getpid(), next(_numbers), secrets.token_hex(3)
    namespace = f"{PREFIX}{pid}-{tag}"
    outer, inner = f"tsdc{tag}a", f"tsdc{tag}b"  # at most 15 characters
    here, there = _free_block(pid, number)
    _ip("netns", "add", namespace)
    relay_there, made_outer = None, False
    try:
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", namespace)
        made_outer = True
        _ip("addr", "add", f"{here}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("netns", "exec", namespace, "ip", "addr", "add", f"{there}/30", "dev", inner)
        _ip("netns", "exec", namespace, "ip", "link", "set", inner, "up")
        # Its hardware address known for good: cut, a host that drops packets is silent,
        # where a neighbour left to ARP would soon fail fast ("No route to host").
        inner_mac = _ip("netns", "exec", namespace, "cat", f"/sys/class/net/{inner}/address")
        _ip("neigh", "replace", there, "lladdr", inner_mac.strip(), "dev", outer,
            "nud", "permanent")
        with tcp_relay(parts.hostname or "127.0.0.1", parts.port or 5432, here) as relay_here:
            relay_there = subprocess.Popen(  # noqa: S603
                ["ip", "netns", "exec", namespace, sys.executable, "-m",  # noqa: S607
                 "tests.support.tcp_relay", there, here, str(relay_here.port)],
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            ready, _, _ = select.select([relay_there.stdout], [], [], 30)
            assert ready, "the relay in the namespace did not start"
            port = int(relay_there.stdout.readline())
            userinfo = parts.netloc.rpartition("@")[0]
            netloc = f"{userinfo}@{there}:{port}" if userinfo else f"{there}:{port}"
            yield (urlunsplit(parts._replace(netloc=netloc)),
                   CutOffNetwork(namespace, inner, here))
    finally:
        if relay_there is not None:
            relay_there.kill()
            relay_there.wait()
        if made_outer:
            _ip("link", "del", outer, check=False)
        _ip("netns", "del", namespace, check=False)
