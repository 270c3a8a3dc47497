"""
The operator's console: Twisted's manhole (a Python prompt inside the running bus) over
telnet, and over SSH when configured.

It is code execution in the bus process, so it always asks for credentials (password
hashes from the config or a passwd-format file; SSH keys for SSH) and listens on
127.0.0.1 unless the config explicitly allows another address.

auth.py decides who may log in; telnet.py and ssh.py speak the protocols; shell.py is
the prompt; namespace.py and views.py are what the operator finds there and how it
prints; listeners.py puts it on the configured ports.
"""

from .auth import LoginGuard, PasswordHashChecker, read_passwd_file
from .listeners import Listener, make_console_service
from .namespace import HELP, make_namespace
from .views import (
    AppStatusView,
    HealthView,
    Reply,
    SetAsideList,
    StatusTable,
    age,
    size,
)

__all__ = [
    "HELP",
    "AppStatusView",
    "HealthView",
    "Listener",
    "LoginGuard",
    "PasswordHashChecker",
    "Reply",
    "SetAsideList",
    "StatusTable",
    "age",
    "make_console_service",
    "make_namespace",
    "read_passwd_file",
    "size",
]
