"""
Listening on a TCP port from the config, with one clear line when the port cannot be had.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.application import service
from twisted.internet.interfaces import IProtocolFactory, IReactorTCP
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger

__all__ = ["Listener"]

log = Logger()


class Listener(service.Service):
    """
    One port the bus process listens on (a console, the HTTP endpoints). A port that
    cannot be had is one line in the log naming the config key, and under twistd (which
    listens before it runs the reactor) the process exits with status 2.

    @param announce: logged once listening, formatted with C{host} and C{port} (the port
        the system chose, for port 0), e.g. C{"http: the status page is at http://{host}:{port}/"}.
    """

    def __init__(
        self, key: str, port: int, interface: str, factory: IProtocolFactory, reactor: IReactorTCP,
        announce: str | None = None,
    ) -> None:
        self.key = key
        self.announce = announce
        self.port = port
        self.interface = interface
        self.factory = factory
        self._reactor = reactor
        self._listening: Any = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if not self._listen():
            raise SystemExit(2)

    def startService(self) -> None:
        super().startService()
        if self._listening is None:
            self._listen()

    def _listen(self) -> bool:
        try:
            # IReactorTCP's stub asks for a ServerFactory; any IProtocolFactory listens.
            factory = cast(ServerFactory, self.factory)
            self._listening = self._reactor.listenTCP(self.port, factory, interface=self.interface)
        except CannotListenError as e:
            reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
            log.error(
                "scbus: {key}: cannot listen on {interface} port {port}: {reason}",
                key=self.key, interface=self.interface, port=self.port, reason=reason,
            )
            return False
        if self.announce is not None:
            log.info("{address}", address=self.announce.format(host=_host(self.interface), port=self.address[1]))
        return True

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens: the interface, and the port (the chosen one for port 0)."""
        if self._listening is None:
            return self.interface, self.port
        return self.interface, self._listening.getHost().port

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        listening, self._listening = self._listening, None
        return listening.stopListening() if listening is not None else None


def _host(interface: str) -> str:
    """An interface as a URL's host: IPv6 addresses in brackets."""
    return f"[{interface}]" if ":" in interface else interface
