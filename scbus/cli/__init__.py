"""
The C{scbus} command: C{main.py} parses the command line and holds the verbs that need
no bus (hash-password, check-config) and those that ask every live process (status,
ping); C{pause.py} pauses and resumes apps everywhere; one module per verb that works
on a bus from outside it (publish, consume, set-aside, schema, dev-broker), registered
by C{commands.py}; C{reach.py} says how each verb reaches each transport's bus.
"""

from .main import main

__all__ = ["main"]
