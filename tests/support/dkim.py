"""DKIM for the tests: keys made at test time, dkimpy signing, keys published by a real DNS
server on 127.0.0.1 (the netsim ``DnsServer``, on a free port, in its own event-loop thread)."""

from __future__ import annotations

import base64
import functools
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.netsim import LoopThread
from tests.netsim.dns import DnsServer
from tests.support.factories import (
    detail,
    gzip_member,
    report_dict,
    sts_policy,
    tlsrpt_email,
    to_json,
)

LOOPBACK = "127.0.0.1"
SUBMITTER = "reporter.example"
SELECTOR = "tlsrpt"
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"message-id",
    b"tls-report-domain",
    b"tls-report-submitter",
    b"content-type",
)


@dataclass(frozen=True)
class KeyPair:
    private_pem: bytes
    public_b64: str

    @classmethod
    def generate(cls, bits: int = 2048) -> KeyPair:
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(pem, base64.b64encode(der).decode())

    def record(self, service: str | None = "tlsrpt") -> str:
        """The TXT value to publish at ``selector._domainkey.domain``."""
        s = f" s={service};" if service else ""
        return f"v=DKIM1; k=rsa;{s} p={self.public_b64}"


@functools.lru_cache(maxsize=4)
def key_pair(name: str) -> KeyPair:
    """One key per name for the whole test run (RSA generation is the slow part)."""
    return KeyPair.generate()


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def report_mail(
    *,
    submitter: str | None = SUBMITTER,
    contact: str | None = f"tlsrpt@{SUBMITTER}",
    report_id: str = "2024-01-09T00:00:00Z_example.com",
    failures: int = 3,
    to: str | None = None,
) -> bytes:
    """An RFC 8460 report mail (CRLF line ends, as on the wire) with ``failures`` failures."""
    policy = sts_policy(failure=failures, details=[detail(count=failures)] if failures else None)
    doc = report_dict(policy, report_id=report_id, contact=contact)
    raw = crlf(tlsrpt_email(gzip_member(to_json(doc)), submitter=submitter))
    if to is not None:
        raw = raw.replace(b"To: tlsrpt@example.com\r\n", f"To: {to}\r\n".encode())
    return raw


def sign(
    raw: bytes,
    key: KeyPair,
    domain: str = SUBMITTER,
    selector: str = SELECTOR,
    **options: Any,
) -> bytes:
    """``raw`` with a DKIM-Signature by ``domain`` on top (dkimpy, RFC 8460 mode by default)."""
    options.setdefault("tlsrpt", True)
    options.setdefault("include_headers", list(SIGNED_HEADERS))
    header: bytes = dkim.sign(raw, selector.encode(), domain.encode(), key.private_pem, **options)
    return header + raw


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (the DNS server needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


class LoopbackDns:
    """An authoritative DNS server on 127.0.0.1:<free port> holding the test's DKIM keys."""

    def __init__(self) -> None:
        self.loop = LoopThread("dkim-dns")
        self.server = DnsServer(LOOPBACK, free_port(), zones=(), negative_ttl=5)

    @property
    def nameserver(self) -> str:
        return self.server.nameserver

    def publish(
        self,
        key: KeyPair,
        domain: str = SUBMITTER,
        selector: str = SELECTOR,
        *,
        service: str | None = "tlsrpt",
        ttl: int = 300,
    ) -> str:
        name = f"{selector}._domainkey.{domain}"
        self.server.set(name, "TXT", key.record(service), ttl=ttl)
        return name

    def queries(self, name: str) -> int:
        return len(self.server.queries_for(name, "TXT"))

    def start(self) -> None:
        self.loop.start()
        self.loop.run(self.server.start())

    def stop(self) -> None:
        self.loop.run(self.server.stop())
        self.loop.stop()


@contextmanager
def loopback_dns() -> Iterator[LoopbackDns]:
    dns_server = LoopbackDns()
    dns_server.start()
    try:
        yield dns_server
    finally:
        dns_server.stop()


def closed_port() -> str:
    """``127.0.0.1:PORT`` where nothing answers DNS (queries are refused at once)."""
    return f"{LOOPBACK}:{free_port()}"
