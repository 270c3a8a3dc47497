"""
The SQLite transport's settings, read from the config's [transport] table.
"""

from __future__ import annotations

import dataclasses
import os

from ...codec import DEFAULT_MAX_NESTING
from ..setaside import DEFAULT_LIMIT

__all__ = ["SQLiteSettings", "DURABILITY", "DEFAULT_PATH", "DEFAULT_DELIVERY_LIMIT", "synchronous_pragma"]

#: ``transport.durability``: what a committed message survives, and the PRAGMA that gives it.
DURABILITY = {"process": "NORMAL", "power": "FULL"}

#: The file beside the config when ``transport.path`` is not given.
DEFAULT_PATH = "scbus.db"

#: Deliveries before a message is quarantined (``transport.delivery_limit``).
DEFAULT_DELIVERY_LIMIT = 20

#: Deliveries an app keeps claimed ahead of its handlers when the config does not say
#: (the config gives each app its ``max_in_flight``).
DEFAULT_PREFETCH = 10


@dataclasses.dataclass
class SQLiteSettings:
    """
    @ivar path: the database file (its ``-wal``, ``-shm`` and ``.lock`` files live beside it).
    @ivar durability: C{"process"} (a commit survives the process's death) or C{"power"}
        (it survives an OS crash or a power loss too).
    @ivar delivery_limit: a message claimed more times than this without being
        acknowledged is quarantined (set aside) instead of delivered again.
    @ivar app_prefetch: per app, how many deliveries it keeps claimed beyond those in flight.
    """

    path: str = DEFAULT_PATH
    durability: str = "process"
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    set_aside_limit: int = DEFAULT_LIMIT
    max_message_size: int | None = 1024 * 1024
    max_nesting: int = DEFAULT_MAX_NESTING
    app_prefetch: dict[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(map(repr, DURABILITY))}, not {self.durability!r}")
        self.path = os.path.abspath(self.path)

    def prefetch(self, app_name: str) -> int:
        return self.app_prefetch.get(app_name, DEFAULT_PREFETCH)


def synchronous_pragma(durability: str) -> str:
    return DURABILITY[durability]
