"""Shared fixtures: a private RabbitMQ node for the tests that need a broker."""

from __future__ import annotations

import os

import pytest

from .rabbit import RabbitNode, available


@pytest.fixture(scope="session")
def rabbit():
    """One RabbitMQ node for the whole run, on its own port and data directory."""
    reason = available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the broker tests: {reason}")
        pytest.skip(reason)
    node = RabbitNode()
    node.start()
    yield node
    node.cleanup()


@pytest.fixture
def rabbit_for_class(request, rabbit):
    """For trial TestCases: the node as C{self.rabbit}."""
    request.cls.rabbit = rabbit
