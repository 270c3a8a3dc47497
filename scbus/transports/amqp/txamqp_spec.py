"""
RabbitMQ's AMQP 0-9-1 spec for the txAMQP client: where it is, and loading it once.

Apart from the client so that the settings can check it without importing the client
(which imports the settings).
"""

from __future__ import annotations

import os
from typing import Any

from ...errors import ConfigError

__all__ = ["DEFAULT_SPEC", "load_spec"]

DEFAULT_SPEC = "/usr/share/amqp/specs/0-9-1-rabbit/amqp0-9-1.stripped.extended.xml"
_specs: dict[str, Any] = {}


def load_spec(path: str | None = None, source: str = "<config>") -> Any:
    """The spec at C{path}; L{ConfigError} saying which package provides it if missing."""
    path = path or DEFAULT_SPEC
    if path not in _specs:
        if not os.path.exists(path):
            raise ConfigError(
                source, "transport.txamqp_spec",
                f"{path} does not exist: the txamqp client needs RabbitMQ's AMQP 0-9-1 spec, "
                "from Debian's amqp-specs package (apt-get install amqp-specs), or set "
                "txamqp_spec to its path",
            )
        import txamqp.spec

        _specs[path] = txamqp.spec.load(path)
    return _specs[path]
