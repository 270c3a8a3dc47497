"""The in-memory holding areas: bounded, counted, and free of unasked heartbeat answers."""

from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher

from scbus import codec
from scbus.message import HeartbeatResponseMessage, Message
from scbus.transports.local import LocalTransport


class Stray(Message, wire_name="test.setaside.Stray"):
    n: int


def logged(events):
    return [formatEvent(e) for e in events]


def capture(test_cleanup):
    events = []
    globalLogPublisher.addObserver(events.append)
    test_cleanup(lambda: globalLogPublisher.removeObserver(events.append))
    return events


def test_the_unrouted_and_dead_stores_keep_the_newest_and_count_what_they_drop(request):
    events = capture(request.addfinalizer)
    transport = LocalTransport(Clock(), set_aside_limit=3)
    transport.startService()
    for n in range(5):
        transport.send(Stray(n=n))
    assert [codec.decode(e.body).n for e in transport.unrouted] == [2, 3, 4]
    transport.setup("app", [Stray])
    for n in range(4):
        transport.publish_raw(b"not json %d" % n, "test.setaside.Stray")
    transport.retrieve("app")
    assert [e.body for e in transport.dead_letters] == [b"not json 1", b"not json 2", b"not json 3"]
    assert transport.dropped == {"unrouted": 2, "dead": 1}
    full = [line for line in logged(events) if "store full" in line]
    assert full == [
        "unrouted store full (3 entries, transport.set_aside_limit): dropped the oldest; 1 dropped so far",
        "dead store full (3 entries, transport.set_aside_limit): dropped the oldest; 1 dropped so far",
    ]


def test_a_dead_letter_log_line_carries_the_reason_code(request):
    events = capture(request.addfinalizer)
    transport = LocalTransport(Clock())
    transport.startService()
    transport.setup("app", [Stray])
    transport.publish_raw(b'{"type": "test.setaside.Stray", "id": "i", "created_at": 1, "data": {"n": 1e999}}', "test.setaside.Stray")
    transport.retrieve("app")
    [entry] = transport.dead_letters
    assert entry.code == "malformed"
    assert any(f"dead-lettered {entry.id} from app [malformed]: body is not acceptable JSON" in line for line in logged(events))


def test_heartbeat_answers_nobody_takes_are_not_kept():
    transport = LocalTransport(Clock())
    transport.startService()
    transport.send(HeartbeatResponseMessage(app_name="a", heartbeat_id="h"))
    assert list(transport.unrouted) == []
    transport.setup("monitor", [HeartbeatResponseMessage])
    transport.send(HeartbeatResponseMessage(app_name="a", heartbeat_id="h2"))
    assert transport.retrieve("monitor").result.message.heartbeat_id == "h2"


def test_the_nesting_limit_is_the_transports_to_set():
    transport = LocalTransport(Clock(), max_nesting=4)
    transport.startService()
    transport.setup("app", [Stray])
    transport.publish_raw(b'{"type": "test.setaside.Stray", "id": "i", "created_at": 1, "data": {"n": 1, "x": [[[]]]}}', "test.setaside.Stray")
    transport.publish_raw(b'{"type": "test.setaside.Stray", "id": "j", "created_at": 1, "data": {"n": 2, "x": [[]]}}', "test.setaside.Stray")
    assert transport.retrieve("app").result.message.n == 2
    [entry] = transport.dead_letters
    assert "nested deeper than 4 levels" in entry.reason


def test_stopping_says_what_is_lost_with_the_process(request):
    events = capture(request.addfinalizer)
    transport = LocalTransport(Clock())
    transport.startService()
    transport.stopService()
    assert not [line for line in logged(events) if "lost with the process" in line]  # nothing to lose
    transport.startService()
    transport.setup("app", [Stray])
    for n in range(3):
        transport.send(Stray(n=n))
    held = []
    transport.retrieve("app").addCallback(held.append)  # in hand, not acknowledged: queued again at stop
    transport.publish_raw(b"not json", "test.setaside.Stray")  # queued; dead-lettered once delivered
    transport.publish_raw(b'{"type": "test.setaside.Nobody", "id": "x", "created_at": 1, "data": {}}')
    assert len(held) == 1
    transport.stopService()
    [line] = [line for line in logged(events) if "lost with the process" in line]
    assert line == (
        'in-memory transport stopped: 4 queued message(s), 1 unrouted and 0 dead-lettered are lost with the '
        'process (a broker keeps them: transport.type = "amqp")'
    )
