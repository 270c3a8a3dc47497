"""
The SQLite transport: every queue, the unrouted and dead stores and the pause marks in
one database file (Python's sqlite3, WAL mode), so a bus on one host forgets nothing
when its process stops or dies. See docs/sqlite.md.
"""

from .settings import SQLiteSettings
from .transport import SQLiteDelivery, SQLiteTransport

__all__ = ["SQLiteTransport", "SQLiteDelivery", "SQLiteSettings"]
