"""
The service tree of one bus process, which stops in stages.

Twisted's C{MultiService} stops every child at once. The main bus cannot drain that way:
during its grace period its handlers' results must still be sent and their deliveries
acknowledged, so the transport has to outlive the drain. Listeners (the console, any
other server a process runs) stay up while the bus drains, so an operator can watch it,
and stop after it.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger

from .errors import StartupProblem

__all__ = ["BusServiceTree"]

log = Logger()


class BusServiceTree(MultiService):
    """
    Starts the transport, then the bus, then the listeners; stops the bus first (it
    drains within its grace period), then the listeners, then the transport.

    @ivar bus: the main bus (a service).
    @ivar transport: the transport, or None when it is not a service.
    """

    def __init__(self, transport: Any, bus: IService) -> None:
        super().__init__()
        self.transport = transport if IService.providedBy(transport) else None
        self.bus = bus
        self.listeners: list[IService] = []
        if self.transport is not None:
            self.transport.setServiceParent(self)
        bus.setServiceParent(self)

    def startService(self) -> None:
        """
        A part that cannot start (the transport's file is unusable, say) ends start-up
        with its one line and exit status 2, before the bus takes or sends anything.
        """
        try:
            super().startService()
        except StartupProblem as e:
            log.error("scbus: {problem}", problem=str(e))
            raise SystemExit(2) from None

    def add_listener(self, listener: IService) -> None:
        """A service that runs beside the bus (the console, an HTTP server)."""
        self.listeners.append(listener)
        listener.setServiceParent(self)

    def stopService(self) -> Deferred[None]:
        # Not MultiService.stopService: that would stop the transport beside the bus.
        self.running = 0
        stages: list[list[IService]] = [[self.bus]]
        rest = [s for s in reversed(list(self)) if s is not self.bus and s is not self.transport]
        if rest:
            stages.append(rest)
        if self.transport is not None:
            stages.append([self.transport])
        return Deferred.fromCoroutine(self._stop_in_stages(stages))

    async def _stop_in_stages(self, stages: list[list[IService]]) -> None:
        for stage in stages:
            results = await DeferredList(
                [maybeDeferred(s.stopService) for s in stage], consumeErrors=True
            )
            for ok, result in results:
                if not ok:
                    log.failure("a service failed to stop", result)
