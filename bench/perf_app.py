"""The relay app bench/twistd_relay.py runs in a twistd bus: each perf.In answered by one perf.Out."""

from __future__ import annotations

from typing import Any

from scbus import Message


class In(Message, wire_name="perf.In"):
    n: int
    payload: str


class Out(Message, wire_name="perf.Out"):
    n: int
    payload: str


#: The payload of every input: 200 characters.
PAYLOAD = "p" * 200


def make_relay(name: str, root_config: dict[str, Any], config: dict[str, Any]) -> dict[Any, Any]:
    """One output per input, the payload carried over."""

    def on_in(msg: In) -> Out:
        return Out(n=msg.n, payload=msg.payload)

    return {In: on_in}
