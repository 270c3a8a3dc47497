"""
The record of a message a transport kept aside instead of delivering it.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from zope.interface import implementer

from ..interfaces import ISetAside

__all__ = ["SetAsideMessage", "UNROUTED", "DEAD"]

UNROUTED = "unrouted"
DEAD = "dead"


@implementer(ISetAside)
@dataclasses.dataclass
class SetAsideMessage:
    """An unrouted or dead-lettered body, kept with why it was set aside."""

    body: bytes
    reason: str
    code: str
    type_name: str | None = None
    app_name: str | None = None
    at: float = dataclasses.field(default_factory=time.time)
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __repr__(self) -> str:
        where = f" from {self.app_name}" if self.app_name else ""
        preview = self.body[:60].decode("utf-8", "replace")
        return (
            f"<SetAside {self.id} {self.code}{where} type={self.type_name!r} "
            f"reason={self.reason!r} body={preview!r}{'...' if len(self.body) > 60 else ''}>"
        )
