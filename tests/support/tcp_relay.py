"""A TCP relay on loopback between the app and its database, which a test can cut.

``cut()`` closes every connection through it and hangs up on new ones at once, as a
database that restarts does (psycopg2 reads "server closed the connection unexpectedly");
``restore()`` lets new connections through again. It listens on 127.0.0.1 unless told
otherwise (``cut_off_network.py`` runs one on each side of a link of the test's own) and
connects to the address it is given (the test suite's PostgreSQL).

``python -m tests.support.tcp_relay LISTEN_HOST TARGET_HOST TARGET_PORT`` runs one until
its standard input closes (the process that started it ended), and prints the port it
listens on.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress


class TcpRelay:
    def __init__(self, target: tuple[str, int], listen_host: str = "127.0.0.1") -> None:
        self.target = target
        self.listener = socket.create_server((listen_host, 0))
        self.port = self.listener.getsockname()[1]
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut.set()
            sockets, self._open = self._open, set()
        for sock in sockets:
            _hang_up(sock)

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        _hang_up(self.listener)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                _hang_up(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _hang_up(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._cut.is_set():  # cut while this one was connecting: it goes too
                    _hang_up(client)
                    _hang_up(upstream)
                    continue
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with self._lock:
                self._open.discard(sock)
            _hang_up(sock)


def _hang_up(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()


@contextmanager
def tcp_relay(host: str, port: int, listen_host: str = "127.0.0.1") -> Iterator[TcpRelay]:
    relay = TcpRelay((host, port), listen_host)
    try:
        yield relay
    finally:
        relay.close()


if __name__ == "__main__":
    import sys

    listen_host, target_host, target_port = sys.argv[1:]
    relay = TcpRelay((target_host, int(target_port)), listen_host)
    print(relay.port, flush=True)
    sys.stdin.read()
