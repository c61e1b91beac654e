"""A TCP proxy in front of PostgreSQL that the fault tests can freeze.

Frozen, it still accepts connections but passes nothing either way: a server
that hangs, or a host cut off by a network partition while its sockets stay
open (no RST, no FIN, keepalives unanswered for minutes). Thawed, it passes
everything again, held connections included. One thread, `select`, no
dependency.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from sqlalchemy.engine import make_url


class FreezableProxy:
    def __init__(self, host: str = "127.0.0.1", port: int = 5432,
                 unix_socket: str | None = None) -> None:
        self.target = (host, port)
        self.unix_socket = unix_socket  # a server without TCP (the embedded cluster)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = int(self.listener.getsockname()[1])
        self.frozen = False
        self.pending: list[socket.socket] = []  # accepted while frozen, no upstream yet
        self.peer: dict[socket.socket, socket.socket] = {}
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="freezable-proxy", daemon=True)
        self.thread.start()

    def url(self, database_url: str) -> str:
        """`database_url` through this proxy."""
        return make_url(database_url).set(host="127.0.0.1", port=self.port,
                                          query={}).render_as_string(hide_password=False)

    def freeze(self) -> None:
        self.frozen = True

    def thaw(self) -> None:
        self.frozen = False

    def close(self) -> None:
        self.closing = True
        self.thread.join(5)
        for sock in [self.listener, *self.pending, *self.peer]:
            with contextlib.suppress(OSError):
                sock.close()

    def _connect(self, client: socket.socket) -> None:
        try:
            if self.unix_socket:
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(self.unix_socket)
            else:
                upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        self.peer[client] = upstream
        self.peer[upstream] = client

    def _drop(self, sock: socket.socket) -> None:
        other = self.peer.pop(sock, None)
        if other is not None:
            self.peer.pop(other, None)
            with contextlib.suppress(OSError):
                other.close()
        with contextlib.suppress(OSError):
            sock.close()

    def _run(self) -> None:
        while not self.closing:
            if not self.frozen and self.pending:
                for client in self.pending:
                    self._connect(client)
                self.pending.clear()
            watched = [self.listener] + ([] if self.frozen else list(self.peer))
            readable, _, _ = select.select(watched, [], [], 0.05)
            for sock in readable:
                if sock is self.listener:
                    client, _ = self.listener.accept()
                    if self.frozen:
                        self.pending.append(client)
                    else:
                        self._connect(client)
                    continue
                if sock not in self.peer:
                    continue
                try:
                    data = sock.recv(65536)
                    if data:
                        self.peer[sock].sendall(data)
                        continue
                except OSError:
                    pass
                self._drop(sock)
