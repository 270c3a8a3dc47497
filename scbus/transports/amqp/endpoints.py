"""
Where the AMQP transport connects: each broker address in turn (fail over across a
cluster), over TCP or TLS with the broker's certificate verified.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from ...reactors import IBusReactor
from .settings import AMQPSettings, pem_certificates

__all__ = ["broker_endpoint"]

log = Logger()


@implementer(IStreamClientEndpoint)
class RoundRobinEndpoint:
    """Each connection attempt goes to the next broker address: fail over across a cluster."""

    def __init__(self, endpoints: list[Any], names: list[str]) -> None:
        self._endpoints = endpoints
        self._names = names
        self._next = 0

    def connect(self, factory: Any) -> Deferred[Any]:
        index = self._next % len(self._endpoints)
        self._next += 1
        log.debug("connecting to {address}", address=self._names[index])
        return self._endpoints[index].connect(factory)

    def __repr__(self) -> str:
        return f"<brokers {', '.join(self._names)}>"


def broker_endpoint(settings: AMQPSettings, reactor: IBusReactor) -> RoundRobinEndpoint:
    endpoints = []
    for address in settings.addresses:
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            reactor, address.host, address.port, timeout=settings.connect_timeout
        )
        if address.tls:
            endpoint = wrapClientTLS(_tls_options(settings, address.host), endpoint)
        endpoints.append(endpoint)
    return RoundRobinEndpoint(endpoints, [str(a) for a in settings.addresses])


def _tls_options(settings: AMQPSettings, host: str) -> Any:
    from twisted.internet import ssl

    client_cert = None
    if settings.cert_file:
        with open(settings.cert_file) as c, open(settings.key_file or "") as k:
            client_cert = ssl.PrivateCertificate.loadPEM(c.read() + k.read())
    trust = None
    if settings.ca_file:
        with open(settings.ca_file) as f:
            trust = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(pem.encode("ascii")) for pem in pem_certificates(f.read(), settings.ca_file)]
            )
    return ssl.optionsForClientTLS(host, trustRoot=trust, clientCertificate=client_cert)

