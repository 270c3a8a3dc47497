"""
twistd plugin for scbus. Kept import-light: the service maker loads L{scbus.tap} only
when the C{scbus} subcommand is used.
"""

from twisted.application.service import ServiceMaker

scbus = ServiceMaker(
    "scbus",
    "scbus.tap",
    "A message bus for apps written as plain Python callables.",
    "scbus",
)
