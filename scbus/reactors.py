"""
The reactor as scbus's parts are typed with it. A part names the reactor interfaces it
uses (``IReactorTime`` for timers, ``IReactorTCP`` to listen, ...), so a test passes a
``Clock`` where time is all it needs; one that connects or builds other parts takes an
L{IBusReactor}. Without one, a part takes the running reactor, imported only then:
twistd installs its reactor before it builds the service, and importing
``twisted.internet.reactor`` earlier would install the default one.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorFromThreads, IReactorTCP, IReactorTime

__all__ = ["IBusReactor", "running_reactor"]


class IBusReactor(IReactorTime, IReactorTCP, IReactorFromThreads):
    """
    What a bus process needs of its reactor: timers, TCP and calls from threads. A name
    for the type checker; every reactor twistd runs provides each of these interfaces.
    """


def running_reactor() -> Any:
    """Twisted's global reactor: it provides every reactor interface a part asks for."""
    from twisted.internet import reactor  # noqa: PLC0415 - after twistd chose one

    return reactor
