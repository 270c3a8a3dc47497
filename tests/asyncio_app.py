"""
The app the asyncio reactor's end-to-end tests run in a real twistd process: an idle
coroutine and a message coroutine meet on an asyncio.Queue, sleep with asyncio.sleep and
await a Deferred from Twisted; one job sleeps past the app's time limit. A second app
writes what reaches it to a file, one JSON object a line.
"""

import asyncio
import json
import logging
from datetime import timedelta

from scbus import AppErrorOccurredMessage, Message

log = logging.getLogger("tests.asyncio_app")


class Work(Message, wire_name="e2e.aio.Work"):
    n: int


class Worked(Message, wire_name="e2e.aio.Worked"):
    n: int
    ticket: int
    loop: str
    deferred: str


def make_worker(name, root_config, config):
    from twisted.internet import reactor, task

    queue: asyncio.Queue[int] = asyncio.Queue()
    made = {"n": 0}

    async def produce():
        if made["n"] >= config["count"]:
            return None
        made["n"] += 1
        await asyncio.sleep(0.05)
        await queue.put(made["n"])
        return Work(n=made["n"])

    async def on_work(work):
        ticket = await queue.get()
        await asyncio.sleep(0.05)
        deferred = await task.deferLater(reactor, 0.01, lambda: "from a Deferred")
        if work.n == config["slow"]:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                log.warning("job %s cancelled inside the coroutine", work.n)
                raise
        return Worked(n=work.n, ticket=ticket, loop=type(asyncio.get_running_loop()).__name__, deferred=deferred)

    return {timedelta(seconds=0.1): produce, Work: on_work}


def make_recorder(name, root_config, config):
    path = config["path"]

    def record(message):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"type": message.wire_name, **message.to_dict()["data"]}) + "\n")

    return {Worked: record, AppErrorOccurredMessage: record}
