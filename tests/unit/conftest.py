"""Fixtures shared by the unit tests."""

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher


@pytest.fixture
def logged():
    """What was logged during the test: C{logged()} every line, C{logged("warn")} one level's."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield lambda level=None: [
        formatEvent(e) for e in events if level is None or e.get("log_level") == LogLevel.levelWithName(level)
    ]
    globalLogPublisher.removeObserver(events.append)
