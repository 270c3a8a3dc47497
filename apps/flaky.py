"""
An app that fails on some input, so the error path is visible: squares divisible by
`unlucky` raise. The bus turns the exception, with the log lines the handler wrote,
into an AppErrorOccurredMessage that the error collector receives.

Config: unlucky (default 7).
"""

import logging

from apps.squares import Squared

logger = logging.getLogger(__name__)


def make_flaky(name, root_config, config):
    unlucky = config.get("unlucky", 7)

    def on_squared(msg):
        logger.info("checking %d", msg.number)
        if msg.number % unlucky == 0:
            logger.warning("%d looks unlucky", msg.number)
            raise ValueError(f"{msg.number} is a multiple of {unlucky}")
        return None

    return {Squared: on_squared}
