"""amqps:// against a RabbitMQ node with a test certificate, verified against its CA."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import pwd

import pytest
from twisted.internet import reactor, task
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from ..contract.test_amqp_contract import connected, make_amqp_transport
from ..contract.transport_contract import Note
from ..rabbit import RabbitNode, available, free_port


def _write_test_pki(directory: str) -> dict[str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def authority(cn):
        ca_key = key()
        ca = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        return ca_key, ca

    ca_key, ca = authority("scbus test CA")
    _, other_ca = authority("another CA")
    server_key = key()
    server = (
        x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
        .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: os.path.join(directory, name) for name in ("ca.pem", "bundle.pem", "server.pem", "server.key")}
    with open(paths["ca.pem"], "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["bundle.pem"], "wb") as f:  # the test CA second, as in a rotation
        f.write(other_ca.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.pem"], "wb") as f:
        f.write(server.public_bytes(serialization.Encoding.PEM))
    with open(paths["server.key"], "wb") as f:
        f.write(server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ))
    user = pwd.getpwnam("rabbitmq")
    for path in paths.values():
        os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(path, 0o644)
    return paths


@pytest.fixture(scope="module")
def tls_rabbit():
    reason = available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    node = RabbitNode(name=f"scbus-tls-{free_port()}")
    pki = _write_test_pki(node.base)
    node.tls_port = free_port()
    for line in (
        f"listeners.ssl.default = 127.0.0.1:{node.tls_port}",
        f"ssl_options.cacertfile = {pki['ca.pem']}",
        f"ssl_options.certfile = {pki['server.pem']}",
        f"ssl_options.keyfile = {pki['server.key']}",
        "ssl_options.verify = verify_none",
        "ssl_options.fail_if_no_peer_cert = false",
    ):
        node.add_config(line)
    node.ca_file = pki["ca.pem"]
    node.ca_bundle = pki["bundle.pem"]
    node.start()
    yield node
    node.cleanup()


@pytest.fixture
def tls_for_class(request, tls_rabbit):
    request.cls.node = tls_rabbit


@pytest.mark.usefixtures("tls_for_class")
class TLSTests(unittest.TestCase):
    timeout = 90

    async def carried_over_tls(self, ca_file: str, app: str, text: str) -> str:
        """The text of a note sent and received over amqps://, verified with C{ca_file}."""
        url = f"amqps://guest:guest@localhost:{self.node.tls_port}/%2F"
        # guest may only log in over loopback, which this is.
        transport = make_amqp_transport(self, url, ca_file=ca_file, admin_url=self.node.url)
        await connected(transport)
        await transport.setup(app, [Note])
        await transport.send(Note(text=text))
        delivery = await transport.retrieve(app).addTimeout(10, reactor)
        await delivery.ack()
        return delivery.message.text

    async def test_amqps_with_the_ca_verifies_and_carries_messages(self):
        self.assertEqual(await self.carried_over_tls(self.node.ca_file, "tls_app", "over TLS"), "over TLS")

    async def test_every_certificate_of_a_ca_bundle_is_trusted(self):
        text = "trusted through the bundle's second CA"
        self.assertEqual(await self.carried_over_tls(self.node.ca_bundle, "tls_bundle_app", text), text)

    async def test_a_certificate_the_client_cannot_verify_is_refused(self):
        # Any other failure (a wrong port, a refused login) must not pass for this one: the
        # attempt has to reach the TLS handshake and be refused there, for the certificate.
        # pika reports the reason through the standard logging module, scbus through its own.
        said: list[str] = []
        observer = lambda event: said.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        handler = _Collect(said)
        logging.getLogger("pika").addHandler(handler)
        self.addCleanup(logging.getLogger("pika").removeHandler, handler)
        url = f"amqps://guest:guest@localhost:{self.node.tls_port}/%2F"
        transport = make_amqp_transport(self, url)  # platform trust: does not know the test CA
        deadline = reactor.seconds() + 30
        while not any("certificate verify failed" in line for line in said):
            self.assertLess(reactor.seconds(), deadline, f"no certificate refusal in {said}")
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(transport.connected)
        self.assertEqual(transport.connections, 0)


class _Collect(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__()
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
