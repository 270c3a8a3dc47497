"""
One connection's session: the connection and the channels every part of the transport
shares on it (declaring, publishing, control), and the exchanges declared on it.
"""

from __future__ import annotations

from typing import Any

from .client import IAMQPChannel, IAMQPConnection

__all__ = ["Session", "passive_count"]


class Session:
    """
    State only: the transport opens and closes it. C{alive} until the connection is lost;
    C{ready} while messages may be published on it.
    """

    def __init__(self, number: int, connection: IAMQPConnection) -> None:
        self.number = number
        self.connection = connection
        self.topology: IAMQPChannel | None = None
        self.publisher: IAMQPChannel | None = None
        #: exchange name -> True once declared, or the Deferreds waiting for it
        self.exchanges: dict[str, Any] = {}
        self.control: IAMQPChannel | None = None
        self.replies_queue = ""
        self.alive = True
        self.ready = False

    @property
    def publishing(self) -> bool:
        """
        A publish written now can be confirmed: the session is ready and its connection and
        publishing channel are up. (C{ready} alone lags: a channel's closing is heard after
        the publishes it fails.)
        """
        channel = self.publisher
        return (
            self.ready and self.alive and channel is not None and bool(channel.is_open)
            and bool(self.connection.is_open)
        )


async def passive_count(session: Session, queue: str) -> int:
    """Messages ready in C{queue}; fails if it does not exist."""
    # A passive declare of a missing queue closes its channel: use a throwaway one.
    channel = await session.connection.channel()
    try:
        return await channel.queue_declare(queue, passive=True)
    finally:
        if channel.is_open:
            channel.close()
