"""A throw-away PKI for the loopback test internet: a test CA, a rogue CA and server certificates.

Everything is generated at test time with ``cryptography`` (ECDSA P-256 by default: a key takes
well under a millisecond, so a whole PKI costs a few milliseconds) and written as PEM files into a
directory. ``TestPKI.ca_file`` is the trust store to give the code under test: it holds only the
test CA, so anything issued by the rogue CA, or self-signed, must be rejected.

Certificate kinds (``CertKind``):

* ``good``          issued by the test CA, SAN dNSName = the requested names, valid now
* ``expired``       like ``good`` but ``notAfter`` is in the past
* ``not_yet_valid`` like ``good`` but ``notBefore`` is in the future
* ``wrong_name``    valid and trusted, but for ``wrong-name.invalid`` (CN and SAN) only
* ``self_signed``   right names and dates, signed by its own key (no CA)
* ``rogue``         right names and dates, issued by the rogue CA (not in ``ca_file``)
* ``no_san``        trusted, right dates, the name only in the subject CN, no SAN extension
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CertKind = Literal[
    "good", "expired", "not_yet_valid", "wrong_name", "self_signed", "rogue", "no_san"
]
CERT_KINDS: tuple[CertKind, ...] = get_args(CertKind)
KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

WRONG_NAME = "wrong-name.invalid"
_DAY = dt.timedelta(days=1)


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _safe_filename(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-._" else "_" for c in text)
    return keep[:80] or "cert"


@dataclass(frozen=True)
class IssuedCert:
    """A server certificate on disk. ``chain_file`` = leaf + issuing CA (what a server sends)."""

    names: tuple[str, ...]
    kind: CertKind
    cert: x509.Certificate
    cert_file: Path
    key_file: Path
    chain_file: Path

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def spki_der(self) -> bytes:
        return self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def tlsa(self, usage: int = 3, selector: int = 1, mtype: int = 1) -> str:
        """TLSA rdata text for this certificate (DANE-EE by default: ``3 1 1 <sha256(spki)>``)."""
        return tlsa_rdata(self.cert_der if selector == 0 else self.spki_der, usage, selector, mtype)


def tlsa_rdata(data: bytes, usage: int, selector: int, mtype: int) -> str:
    """TLSA rdata text ``usage selector mtype hex`` for DER ``data`` (a cert or an SPKI)."""
    if mtype == 0:
        digest = data.hex()
    elif mtype == 1:
        digest = hashlib.sha256(data).hexdigest()
    elif mtype == 2:
        digest = hashlib.sha512(data).hexdigest()
    else:
        raise ValueError(f"unknown TLSA matching type {mtype}")
    return f"{usage} {selector} {mtype} {digest}"


class CertificateAuthority:
    """A self-signed root CA that issues server certificates."""

    def __init__(self, common_name: str, directory: Path, key_type: KeyType = "ec") -> None:
        self.common_name = common_name
        self.key = _new_key(key_type)
        now = _now()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tlsrpt-lmtp netsim"),
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            ]
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - 30 * _DAY)
            .not_valid_after(now + 3650 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_file = directory / f"{_safe_filename(common_name)}.pem"
        self.cert_file.write_bytes(self.cert_pem)

    @property
    def cert_der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def tlsa(self, usage: int = 2, selector: int = 0, mtype: int = 1) -> str:
        """TLSA rdata text for this CA (DANE-TA by default: ``2 0 1 <sha256(cert)>``)."""
        spki = self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return tlsa_rdata(self.cert_der if selector == 0 else spki, usage, selector, mtype)

    def sign_leaf(
        self,
        key: PrivateKey,
        common_name: str,
        san: Sequence[str] | None,
        not_before: dt.datetime,
        not_after: dt.datetime,
        *,
        self_signed: bool = False,
    ) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        issuer = subject if self_signed else self.cert.subject
        signing_key: PrivateKey = key if self_signed else self.key
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        )
        if not self_signed:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        if san:
            entries: list[x509.GeneralName] = []
            for name in san:
                try:
                    entries.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    entries.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
        return builder.sign(signing_key, hashes.SHA256())


class TestPKI:
    """Test CA + rogue CA in ``directory``; issues (and caches) server certificates by kind."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, key_type: KeyType = "ec") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key_type: KeyType = key_type
        self.ca = CertificateAuthority("Netsim Test CA", self.directory, key_type)
        self.rogue_ca = CertificateAuthority("Netsim Rogue CA", self.directory, key_type)
        self._cache: dict[tuple[tuple[str, ...], CertKind, KeyType], IssuedCert] = {}
        self._lock = threading.Lock()
        self._counter = 0

    @property
    def ca_file(self) -> Path:
        """The trust store for the code under test: the test CA only."""
        return self.ca.cert_file

    @property
    def rogue_ca_file(self) -> Path:
        return self.rogue_ca.cert_file

    def issue(
        self,
        names: str | Sequence[str],
        kind: CertKind = "good",
        *,
        key_type: KeyType | None = None,
        fresh: bool = False,
    ) -> IssuedCert:
        """A server certificate of ``kind`` for ``names`` (the first one is also the CN).

        Results are cached per (names, kind, key type); ``fresh=True`` always makes a new one.
        """
        name_tuple = (names,) if isinstance(names, str) else tuple(names)
        if not name_tuple:
            raise ValueError("a certificate needs at least one name")
        if kind not in CERT_KINDS:
            raise ValueError(f"unknown certificate kind {kind!r}; one of {CERT_KINDS}")
        ktype = key_type or self.key_type
        cache_key = (name_tuple, kind, ktype)
        with self._lock:
            if not fresh and cache_key in self._cache:
                return self._cache[cache_key]
            self._counter += 1
            serial = self._counter
        issued = self._issue(name_tuple, kind, ktype, serial)
        with self._lock:
            self._cache[cache_key] = issued
        return issued

    def _issue(
        self, names: tuple[str, ...], kind: CertKind, key_type: KeyType, serial: int
    ) -> IssuedCert:
        key = _new_key(key_type)
        now = _now()
        not_before, not_after = now - _DAY, now + 90 * _DAY
        if kind == "expired":
            not_before, not_after = now - 60 * _DAY, now - _DAY
        elif kind == "not_yet_valid":
            not_before, not_after = now + _DAY, now + 60 * _DAY
        ca = self.rogue_ca if kind == "rogue" else self.ca
        san: Sequence[str] | None = names
        cn = names[0]
        if kind == "wrong_name":
            san, cn = (WRONG_NAME,), WRONG_NAME
        elif kind == "no_san":
            san = None
        cert = ca.sign_leaf(
            key, cn, san, not_before, not_after, self_signed=(kind == "self_signed")
        )
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        stem = f"{serial:04d}-{_safe_filename(names[0])}-{kind}"
        cert_file = self.directory / f"{stem}.crt"
        key_file = self.directory / f"{stem}.key"
        chain_file = self.directory / f"{stem}.chain.pem"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(_key_pem(key))
        key_file.chmod(0o600)
        chain = cert_pem if kind == "self_signed" else cert_pem + ca.cert_pem
        chain_file.write_bytes(chain)
        return IssuedCert(names, kind, cert, cert_file, key_file, chain_file)
