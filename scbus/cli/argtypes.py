"""Argument types of the `scbus` command: a bad value is one line from argparse, never a traceback later."""

from __future__ import annotations

import argparse
import math

#: The longest wait a command accepts, seconds (a day).
MAX_SECONDS = 86400.0


def seconds(text: str) -> float:
    """A wait in seconds: a finite number above 0 and at most a day."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} must be more than 0 and at most {MAX_SECONDS:g} seconds")
    return value
