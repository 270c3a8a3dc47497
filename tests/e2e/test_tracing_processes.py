"""
One trace across two twistd processes over RabbitMQ: C{one} (process A, an idle run)
places an order, C{two} (process B) packs it, C{three} (process A again) books it. Each
process's SDK writes its spans to a file of its own (tests/tracing_app.py); read
together they are one trace whose parents cross the broker both ways.
"""

from __future__ import annotations

import json
import signal
import time

from .conftest import wait_for_log

CONFIG = """
[bus]
name = "{service}"
grace_period = 1
tracing = "{tracing}"

[transport]
type = "amqp"
url = "{url}"
heartbeat = 5

[root]
service = "{service}"
spans = "{spans}"
{apps}
"""

APP = """
[apps.{name}]
builder = "tests.tracing_app:make_{name}"
"""


def spans_in(path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_chain_over_two_processes_is_one_trace(rabbit, tmp_path, run_twistd):
    from ..broker.test_status import fresh_vhost

    url = fresh_vhost(rabbit, "trace-processes")
    buses = {}
    # B first, so that its app's queue is bound before A places the order
    for service, tracing, names in (("packer", "on", ["two"]), ("shop", "auto", ["one", "three"])):
        workdir = tmp_path / service
        workdir.mkdir()
        config = workdir / "scbus.toml"
        config.write_text(CONFIG.format(
            service=service, tracing=tracing, url=url, spans=workdir / "spans.jsonl",
            apps="".join(APP.format(name=name) for name in names),
        ))
        bus = buses[service] = run_twistd(str(workdir), str(config))
        for name in names:
            wait_for_log(bus, f"{name}: subscribed")
        wait_for_log(bus, r"tracing: on, spans to TracerProvider")

    deadline = time.monotonic() + 40
    while True:
        shop, packer = (spans_in(tmp_path / s / "spans.jsonl") for s in ("shop", "packer"))
        if any(s["name"] == "process scbus.type.tracing.Packed" for s in shop):
            break
        assert time.monotonic() < deadline, (shop, packer, buses["shop"].log()[-2000:])
        time.sleep(0.2)
    for bus in buses.values():
        assert bus.terminate() == -signal.SIGTERM

    everything = {s["span_id"]: s for s in shop + packer}
    [booked] = [s for s in shop if s["name"] == "process scbus.type.tracing.Packed"]
    chain = [booked]
    while chain[-1]["parent_id"] is not None:
        chain.append(everything[chain[-1]["parent_id"]])
    chain.reverse()
    assert [(s["name"], s["service"], s["kind"]) for s in chain] == [
        ("idle one", "shop", "INTERNAL"),
        ("send scbus.type.tracing.Placed", "shop", "PRODUCER"),
        ("process scbus.type.tracing.Placed", "packer", "CONSUMER"),
        ("send scbus.type.tracing.Packed", "packer", "PRODUCER"),
        ("process scbus.type.tracing.Packed", "shop", "CONSUMER"),
    ]
    assert len({s["trace_id"] for s in chain}) == 1
    # the parents that crossed the broker came in the headers, from the other process
    assert [s["remote_parent"] for s in chain] == [False, False, True, False, True]
    assert chain[2]["attributes"]["messaging.system"] == "rabbitmq"
    assert chain[2]["attributes"]["messaging.consumer.group.name"] == "two"
    assert chain[4]["attributes"]["messaging.message.conversation_id"] == chain[1]["attributes"]["messaging.message.id"]
