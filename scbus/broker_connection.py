"""
A blocking connection to the broker for programs that are not a bus (the ``scbus``
command, the blocking publisher), and one line saying why none could be made.

Twisted-free on purpose: ``scbus status`` starts in a fraction of a second.
"""

from __future__ import annotations

import socket
import ssl

import pika
import pika.exceptions

from .errors import TransportError
from .transports.amqp.settings import AMQPSettings, BrokerAddress

__all__ = ["BrokerUnreachable", "connect_blocking", "why_unreachable"]


class BrokerUnreachable(TransportError):
    """No broker address accepted the connection; the text says why, per address."""


def connect_blocking(settings: AMQPSettings, timeout: float, connection_name: str) -> pika.BlockingConnection:
    """A blocking connection to the first broker address that answers."""
    errors = []
    for address in settings.addresses:
        params = pika.ConnectionParameters(
            host=address.host,
            port=address.port,
            virtual_host=settings.vhost,
            credentials=pika.PlainCredentials(settings.username, settings.password),
            socket_timeout=timeout,
            stack_timeout=timeout,
            blocked_connection_timeout=timeout,
            connection_attempts=1,
            heartbeat=settings.heartbeat,
            client_properties={"connection_name": connection_name, "product": "scbus"},
        )
        if address.tls:
            context = ssl.create_default_context(cafile=settings.ca_file)
            if settings.cert_file:
                context.load_cert_chain(settings.cert_file, settings.key_file)
            params.ssl_options = pika.SSLOptions(context, server_hostname=address.host)
        try:
            return pika.BlockingConnection(params)
        except Exception as e:  # pika raises many kinds; none carries the password
            errors.append(f"{address}: {why_unreachable(e, address, settings, timeout)}")
    raise BrokerUnreachable("; ".join(errors))


def _causes(error: BaseException) -> list[BaseException]:
    """The error and every error pika wrapped inside it (workflows, phases, args)."""
    found, todo = [], [error]
    while todo:
        e = todo.pop(0)
        if e in found:
            continue
        found.append(e)
        todo += [x for x in getattr(e, "exceptions", None) or [] if isinstance(x, BaseException)]
        inner = getattr(e, "exception", None)
        if isinstance(inner, BaseException):
            todo.append(inner)
        todo += [a for a in e.args if isinstance(a, BaseException)]
        if e.__cause__ is not None:
            todo.append(e.__cause__)
    return found


def why_unreachable(error: BaseException, address: BrokerAddress, settings: AMQPSettings, timeout: float) -> str:
    """One line an operator can act on: refused, timed out, credentials, TLS, name."""
    causes = _causes(error)

    def has(*kinds: type[BaseException]) -> BaseException | None:
        return next((c for c in causes if isinstance(c, kinds)), None)

    if tls := has(ssl.SSLError):
        return f"TLS failed ({getattr(tls, 'reason', None) or tls}); check ca_file and the broker's certificate"
    if has(pika.exceptions.ProbableAuthenticationError, pika.exceptions.AuthenticationError):
        return f"the broker refused the credentials of user {settings.username!r}"
    if has(pika.exceptions.ProbableAccessDeniedError):
        return f"user {settings.username!r} may not use vhost {settings.vhost!r} (or its credentials are wrong)"
    if has(ConnectionRefusedError):
        return "connection refused: nothing listens there (is RabbitMQ running, and is the port right?)"
    if has(socket.gaierror):
        return f"unknown host {address.host!r}"
    timed_out = has(TimeoutError, socket.timeout)
    if timed_out or any("Timeout" in type(c).__name__ for c in causes):
        return f"no answer within {timeout:g}s (a firewall, a wrong address, or a broker too busy)"
    if has(pika.exceptions.IncompatibleProtocolError, pika.exceptions.StreamLostError):
        hint = "" if address.tls else "; if the broker expects TLS, use amqps://"
        return f"the connection closed before AMQP began (not an AMQP port?{hint})"
    if reset := has(ConnectionResetError, OSError):
        return f"connection failed: {reset}"
    return f"{type(error).__name__}: {error}"
