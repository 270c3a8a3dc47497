"""
The control plane of a transport whose bus runs in one process (in memory, or one
process on an SQLite file): a request is a direct call to this process's answerer, so it
never waits behind an app's queue.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed

__all__ = ["InProcessControl"]


class InProcessControl:
    """L{IControlPlane} for one process: C{ask} answers with this process's answer alone."""

    _control: Any = None

    def serve_control(self, handler: Any) -> None:
        self._control = handler

    def ask(self, request: dict[str, Any], timeout: float) -> Deferred[list[dict[str, Any]]]:
        if self._control is None:
            return succeed([])
        return maybeDeferred(self._control, request).addCallback(lambda r: [] if r is None else [r])
