"""
A fault-injecting TCP proxy for the tests, on loopback: it forwards bytes between the
bus and the broker until told to reset the connections (RST) or to blackhole them
(keep them open and silently drop every byte, as a dead network path does).
"""

from __future__ import annotations

import select
import socket
import struct
import threading


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.blackholed = False
        self.closed = False

    def close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for s in (self.client, self.upstream):
            try:
                if reset:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError:
                pass


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._running = True
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    @property
    def url_port(self) -> int:
        return self.port

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, upstream)
            with self._lock:
                self._pairs.append(pair)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: _Pair) -> None:
        sockets = [pair.client, pair.upstream]
        try:
            while not pair.closed:
                readable, _, _ = select.select(sockets, [], [], 0.2)
                for s in readable:
                    try:
                        data = s.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        if pair.blackholed and s is pair.upstream:
                            # A dead path carries no FIN or RST either: the broker
                            # giving up on the bus must not tell the bus.
                            sockets.remove(s)
                            continue
                        pair.close()
                        return
                    if pair.blackholed:
                        continue  # dropped on the floor, no error to either side
                    (pair.upstream if s is pair.client else pair.client).sendall(data)
        except OSError:
            pair.close()

    def reset(self) -> int:
        """Abort every current connection with a TCP reset; new ones pass."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close(reset=True)
        return len(pairs)

    def blackhole(self) -> int:
        """Silently drop all traffic on every current connection; new ones pass."""
        with self._lock:
            live = [p for p in self._pairs if not p.closed]
        for pair in live:
            pair.blackholed = True
        return len(live)

    def close(self) -> None:
        self._running = False
        self._listener.close()
        self.reset()
