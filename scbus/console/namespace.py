"""
The names an operator finds at the console prompt, built on the bus's and the
transport's public methods only.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ..control import assess, set_aside_dropped
from ..errors import ReplayRefused
from ..mainbus import AppStatus, MainMessageBus
from ..message import HeartbeatMessage, Message, registered_types
from ..pausing import pause_everywhere
from .views import AppStatusView, HealthView, Reply, SetAsideList, StatusTable

__all__ = ["HELP", "make_namespace"]


def _settled(d: Deferred[Any]) -> Any:
    """
    The result now if the Deferred has fired (the in-memory transport), else the Deferred
    itself, still carrying its result for the manhole to print when it comes (RabbitMQ).
    """
    fired: list[Any] = []
    waiting = False

    def now_or_later(result: Any) -> Any:
        if waiting:
            return result
        fired.append(result)
        return None  # taken here: nothing is left unhandled in this Deferred

    d.addBoth(now_or_later)
    if not fired:
        waiting = True
        return d
    outcome = fired[0]
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


HELP = """\
scbus console: Python inside the running bus. exit() or Ctrl-D leaves it; the bus runs on.
  status()                 one line per app: handled, errors, in flight, queued, ...
  app_status('name')       one app's full status
  send(msg)                send a message, e.g. send(messages['clock.Tick'](count=1))
  pause('name'), resume('name')   this process; everywhere=True: every process, and
                           processes that start later (the pause is kept on the broker)
  unrouted(), dead_letters()   messages set aside: id, reason, type, age, size
  replay('unrouted'|'dead', id)  publish a set-aside message again (refused while it would
                           only be set aside again; force=True replays it anyway)
  heartbeat(app=None)      send a HeartbeatMessage through app queues (measures lag)
  processes()              every live bus process and its apps (the control plane)
  lag(app=None)            send heartbeats, then show each app's lag (time in its queue)
  messages                 wire name -> message class
  bus, transport, apps     the live objects
"""


def make_namespace(bus: MainMessageBus) -> dict[str, Any]:
    """The names an operator finds at the console prompt."""
    transport = bus.transport

    def status() -> Any:
        def shown(statuses: list[AppStatus]) -> StatusTable:
            view = StatusTable(statuses)
            view.dropped = set_aside_dropped(transport)
            return view

        return _settled(bus.status().addCallback(shown))

    def app_status(name: str) -> Any:
        names = list(bus.app_names())
        if name not in names:
            raise KeyError(f"no app named {name!r}; apps: {', '.join(sorted(names))}")
        return _settled(
            bus.status().addCallback(
                lambda all_: AppStatusView(next(s for s in all_ if s.name == name), bus.clock.seconds())
            )
        )

    def send(message: Message) -> Any:
        if not isinstance(message, Message):
            raise TypeError(f"send() takes a Message, not {type(message).__name__}")
        return _settled(
            bus.send(message).addCallback(lambda _: Reply(f"sent {message!r} as {message.id}"))
        )

    def pause(name: str, everywhere: bool = False) -> Any:
        if everywhere:
            return _settled(pause_everywhere(bus, name, True).addCallback(Reply))
        bus.pause(name)
        return Reply(f"paused {name}")

    def resume(name: str, everywhere: bool = False) -> Any:
        if everywhere:
            return _settled(pause_everywhere(bus, name, False).addCallback(Reply))
        bus.resume(name)
        return Reply(f"resumed {name}")

    def listing(kind: str) -> Any:
        def view(entries: list[Any]) -> SetAsideList:
            shown = SetAsideList(entries)
            shown.dropped = (set_aside_dropped(transport) or {}).get(kind, 0)
            return shown

        return _settled(transport.set_aside(kind).addCallback(view))

    def unrouted() -> Any:
        return listing("unrouted")

    def dead_letters() -> Any:
        return listing("dead")

    def replay(kind: str, entry_id: str, force: bool = False) -> Any:
        def refused(failure: Failure) -> Reply:
            failure.trap(ReplayRefused)
            return Reply(f"not replayed: {failure.getErrorMessage()} (force=True replays it anyway)")

        return _settled(
            transport.replay(kind, entry_id, force=force).addCallbacks(
                lambda found: Reply(f"replayed {entry_id}" if found else f"no {kind} message {entry_id}"), refused
            )
        )

    def heartbeat(app: str | None = None) -> Any:
        return send(HeartbeatMessage(app_name=app))

    def processes(timeout: float = 1.0) -> Any:
        """Every live bus process (over the control plane) and its apps."""
        expected = {name: 1 for name in bus.app_names()}
        return _settled(
            transport.ask({"op": "status"}, timeout).addCallback(
                lambda answers: HealthView(assess(answers, expected))
            )
        )

    def lag(app: str | None = None, wait: float = 2.0) -> Any:
        """Send heartbeats through the app queues; after C{wait} s show each app's lag."""
        shown: Deferred[Any] = Deferred()  # a Deferred of its own: the manhole waits for it
        sent = bus.send(HeartbeatMessage(app_name=app))
        sent.addCallback(lambda _: deferLater(bus.clock, wait, processes)).chainDeferred(shown)
        return _settled(shown)

    class _Help:
        def __repr__(self) -> str:
            return HELP

        def __call__(self, *args: Any) -> Any:
            if args:
                import pydoc

                return pydoc.help(*args)
            return self

    return {
        "bus": bus,
        "transport": transport,
        "apps": bus.apps,
        "messages": registered_types(),
        "status": status,
        "app_status": app_status,
        "send": send,
        "pause": pause,
        "resume": resume,
        "unrouted": unrouted,
        "dead_letters": dead_letters,
        "replay": replay,
        "heartbeat": heartbeat,
        "processes": processes,
        "lag": lag,
        "help": _Help(),
        "AppStatus": AppStatus,
    }
