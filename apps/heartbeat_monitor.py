"""
A heartbeat monitor: every `every` seconds sends a HeartbeatMessage through every app's
queue and logs how long each app's answer waited (its backlog). Lag over `warn_after`
seconds is a warning.

Config: every (default 30), warn_after (default 5).
"""

import logging
from datetime import timedelta

from scbus import HeartbeatMessage, HeartbeatResponseMessage

logger = logging.getLogger(__name__)


def make_heartbeat_monitor(name, root_config, config):
    every = config.get("every", 30)
    warn_after = config.get("warn_after", 5)
    lag = {}

    def send_heartbeat():
        return HeartbeatMessage()

    def on_response(response):
        lag[response.app_name] = response.queued_seconds
        level = logging.WARNING if response.queued_seconds > warn_after else logging.INFO
        logger.log(
            level,
            "%s answered after %.3fs in its queue (handled %d, errors %d)",
            response.app_name,
            response.queued_seconds,
            response.handled,
            response.errors,
        )

    return {timedelta(seconds=every): send_heartbeat, HeartbeatResponseMessage: on_response}
