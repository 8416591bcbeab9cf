"""Report authenticity: DKIM verification by RFC 8460 §3's rules, with dkimpy.

RFC 8460 §3: a report MUST carry a valid DKIM signature by the reporting domain (receivers
MUST ignore reports without one), ``l=`` MUST NOT be used, and the key record SHOULD have
``s=tlsrpt`` (a receiver MAY ignore signatures whose key lacks it: ``strict_service_type``).

The verification core is sans-I/O: ``verify_message`` takes the raw bytes and a key lookup
function (name → TXT record bytes, ``None`` when there is no record, ``DnsTempError`` when DNS
gave no definitive answer). ``DnsKeyLookup`` is the real lookup (dnspython, configurable
nameservers, a small TTL'd cache); tests inject their own.

Every signature on the message is checked (at most ``MAX_SIGNATURES``); each report then gets
the verdict that matters for it (``MessageVerdict.for_submitter``): an aligned pass wins over
an aligned temperror, over an unaligned pass, over any temperror, over a fail. Alignment: the
signing domain equals the submitter (the TLS-Report-Submitter header, else the contact-info
domain) or one is a subdomain of the other (Mail.ru signs as corp.mail.ru for mail.ru). A DNS
failure is ``temperror``: never an exception, never a pass.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import dkim as dkimpy
import dns.exception
import dns.rdatatype
import dns.resolver
from dkim.util import InvalidTagValueList, parse_tag_value

from tlsrpt_lmtp.config import ConfigError, read_table
from tlsrpt_lmtp.sts.dnsclient import _nameserver

__all__ = [
    "DkimChecker",
    "DkimConfig",
    "DkimPolicy",
    "DkimResult",
    "DkimVerdict",
    "DnsKeyLookup",
    "DnsTempError",
    "KeyCache",
    "MessageVerdict",
    "SignatureCheck",
    "aligned",
    "build_checker",
    "checker_from_file",
    "load_dkim_config",
    "verify_message",
]

MAX_SIGNATURES = 5  # bounds the DNS work one message can cause
NEGATIVE_TTL = 60  # seconds an absent key record is remembered


class DkimResult(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"  # no DKIM-Signature at all (or a bare report file)
    TEMPERROR = "temperror"  # the key could not be fetched (DNS timeout, SERVFAIL, ...)


class DkimPolicy(StrEnum):
    OFF = "off"  # no verification, the dkim_* event fields are null
    VERIFY = "verify"  # record the verdict, keep every report
    ENFORCE = "enforce"  # a report without an aligned pass goes to quarantine


class DnsTempError(Exception):
    """The key lookup had no definitive answer; the signature's verdict is temperror."""


# name (e.g. "sel._domainkey.example.com.") → TXT record bytes, or None if there is none.
KeyLookup = Callable[[str], bytes | None]


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The outcome for one DKIM-Signature header."""

    domain: str | None
    selector: str | None
    result: DkimResult
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    """What one report's event says about its authenticity."""

    result: DkimResult
    domain: str | None
    aligned: bool
    reason: str | None = None

    @property
    def authentic(self) -> bool:
        """RFC 8460 §3: a valid signature by the reporting domain."""
        return self.result is DkimResult.PASS and self.aligned

    def describe(self) -> str:
        """One line for a tlsrpt.invalid reason."""
        if self.result is DkimResult.PASS:
            return f"DKIM pass for {self.domain}, not aligned with the submitter"
        if self.result is DkimResult.NONE:
            return "no DKIM signature (RFC 8460 §3 requires one)"
        where = f" for {self.domain}" if self.domain else ""
        why = f": {self.reason}" if self.reason else ""
        return f"DKIM {self.result.value}{where}{why}"


NO_SIGNATURE = DkimVerdict(DkimResult.NONE, None, False)


@dataclass(frozen=True, slots=True)
class MessageVerdict:
    signatures: tuple[SignatureCheck, ...]

    def for_submitter(self, submitter: str | None) -> DkimVerdict:
        def first(result: DkimResult, want_aligned: bool | None) -> DkimVerdict | None:
            for sig in self.signatures:
                is_aligned = aligned(sig.domain, submitter)
                if sig.result is result and want_aligned in (None, is_aligned):
                    return DkimVerdict(sig.result, sig.domain, is_aligned, sig.reason)
            return None

        order = (
            (DkimResult.PASS, True),
            (DkimResult.TEMPERROR, True),
            (DkimResult.PASS, None),
            (DkimResult.TEMPERROR, None),
            (DkimResult.FAIL, None),
        )
        for result, want in order:
            found = first(result, want)
            if found is not None:
                return found
        return NO_SIGNATURE


def aligned(domain: str | None, submitter: str | None) -> bool:
    """Same domain, or one a subdomain of the other; the shorter one needs two labels at least,
    so that a signature by a bare TLD never aligns (there is no public-suffix list here)."""
    if not domain or not submitter:
        return False
    d = domain.strip().rstrip(".").lower()
    s = submitter.strip().strip("<>").rstrip(".").lower()
    if not d or not s:
        return False
    if d == s:
        return True
    shorter, longer = sorted((d, s), key=len)
    return "." in shorter and longer.endswith("." + shorter)


# --------------------------------------------------------------------------------------------
# verification (sans-I/O: the key lookup is injected)
# --------------------------------------------------------------------------------------------

_SIG_HEADER = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)


def verify_message(
    raw: bytes,
    lookup: KeyLookup,
    *,
    strict_service_type: bool = False,
    min_key_bits: int = 1024,
) -> MessageVerdict:
    """Check every DKIM-Signature on ``raw`` (RFC 8460 rules); never raises."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    count = len(_SIG_HEADER.findall(head))
    if not count:
        return MessageVerdict(())
    mode: bool | str = "strict" if strict_service_type else True
    checks = tuple(
        _check_signature(raw, idx, lookup, mode, min_key_bits)
        for idx in range(min(count, MAX_SIGNATURES))
    )
    return MessageVerdict(checks)


class _Capture:
    """A stand-in for dkimpy's logger: it keeps the error messages as the reason."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger's method name
        return False

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = warning = debug

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self.errors.append(str(msg))


def _check_signature(
    raw: bytes, idx: int, lookup: KeyLookup, mode: bool | str, min_key_bits: int
) -> SignatureCheck:
    capture = _Capture()
    try:
        signer = dkimpy.DKIM(raw, logger=capture, minkey=min_key_bits, tlsrpt=mode)
        headers = [v for k, v in signer.headers if k.lower() == b"dkim-signature"]
        tags = parse_tag_value(headers[idx])
    except (dkimpy.DKIMException, InvalidTagValueList, IndexError) as exc:
        return SignatureCheck(None, None, DkimResult.FAIL, f"malformed signature: {exc}")
    domain = _text(tags.get(b"d"))
    selector = _text(tags.get(b"s"))
    domain = domain.rstrip(".").lower() if domain else None
    if b"l" in tags:
        return SignatureCheck(domain, selector, DkimResult.FAIL, "l= used (RFC 8460 §3)")
    missing: list[str] = []

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
        record = lookup(text)  # DnsTempError passes through dkimpy untouched
        if record is None:
            missing.append(text.rstrip("."))
        return record

    try:
        ok = signer.verify(idx=idx, dnsfunc=dnsfunc)
    except DnsTempError as exc:
        return SignatureCheck(domain, selector, DkimResult.TEMPERROR, str(exc))
    except dkimpy.DKIMException as exc:
        return SignatureCheck(domain, selector, DkimResult.FAIL, _clean(str(exc)))
    except Exception as exc:  # dkimpy on input it did not expect: a fail, never a crash
        return SignatureCheck(domain, selector, DkimResult.FAIL, f"verification error: {exc!r}")
    if ok:
        return SignatureCheck(domain, selector, DkimResult.PASS)
    if missing:
        reason = f"no key record at {missing[0]}"
    elif capture.errors:
        reason = _clean(capture.errors[-1])
    else:
        reason = "signature does not verify"
    return SignatureCheck(domain, selector, DkimResult.FAIL, reason)


def _text(value: bytes | None) -> str | None:
    return value.decode("ascii", "replace").strip() if value else None


def _clean(message: str) -> str:
    """dkimpy's messages embed bytes reprs (b'...'); keep them short and readable."""
    text = re.sub(r"b'([^']*)'", r"\1", message)
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------------------------
# DNS: dnspython with configurable nameservers and a TTL'd key cache
# --------------------------------------------------------------------------------------------


class KeyCache:
    """Key records by name, each until its TTL (capped) runs out; bounded (LRU); thread-safe."""

    def __init__(
        self,
        size: int = 1000,
        max_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.size = size
        self.max_ttl = max_ttl
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, bytes | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> tuple[bool, bytes | None]:
        """(found, record); found is False when the name is absent or expired."""
        with self._lock:
            item = self._items.get(name)
            if item is None:
                return False, None
            expires, record = item
            if expires <= self._clock():
                del self._items[name]
                return False, None
            self._items.move_to_end(name)
            return True, record

    def put(self, name: str, record: bytes | None, ttl: float) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._items[name] = (self._clock() + min(max(ttl, 0.0), self.max_ttl), record)
            self._items.move_to_end(name)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def make_resolver(nameservers: tuple[str, ...], timeout: float) -> dns.resolver.Resolver:
    """Nameservers as 'IP' or 'IP:PORT' / '[v6]:PORT'; none means /etc/resolv.conf."""
    resolver = dns.resolver.Resolver(configure=not nameservers)
    if nameservers:
        resolver.nameservers = [_nameserver(ns) for ns in nameservers]
    resolver.lifetime = timeout
    resolver.timeout = min(timeout, 2.0)
    return resolver


class DnsKeyLookup:
    """The real KeyLookup: TXT queries through ``resolver``, answers kept in ``cache``."""

    def __init__(self, resolver: dns.resolver.Resolver, cache: KeyCache | None = None) -> None:
        self._resolver = resolver
        self.cache = cache if cache is not None else KeyCache()

    def __call__(self, name: str) -> bytes | None:
        key = name.rstrip(".").lower() + "."
        found, record = self.cache.get(key)
        if found:
            return record
        try:
            answer = self._resolver.resolve(
                key, dns.rdatatype.TXT, raise_on_no_answer=False, search=False
            )
        except dns.resolver.NXDOMAIN:
            self.cache.put(key, None, NEGATIVE_TTL)
            return None
        except dns.exception.DNSException as exc:
            raise DnsTempError(f"DNS lookup of {key.rstrip('.')} failed: {_why(exc)}") from None
        if answer.rrset is None:  # the name exists, but has no TXT record
            self.cache.put(key, None, NEGATIVE_TTL)
            return None
        records = [b"".join(rr.strings) for rr in answer.rrset]
        record = next((r for r in records if b"p=" in r), records[0])
        self.cache.put(key, record, answer.rrset.ttl)
        return record


def _why(exc: dns.exception.DNSException) -> str:
    if isinstance(exc, dns.resolver.LifetimeTimeout | dns.exception.Timeout):
        return "timeout"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "no nameserver answered (SERVFAIL or refused)"
    return type(exc).__name__


# --------------------------------------------------------------------------------------------
# configuration: the [dkim] table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DkimConfig:
    """``[dkim]``: policy, and where and how long to look for keys."""

    policy: DkimPolicy = DkimPolicy.VERIFY
    nameservers: tuple[str, ...] = ()  # empty: /etc/resolv.conf
    timeout: float = 5.0
    strict_service_type: bool = False  # true: only keys with s=tlsrpt count
    min_key_bits: int = 1024
    cache_size: int = 1000
    cache_max_ttl: float = 3600.0


_KINDS = {
    "policy": "str",
    "nameservers": "tuple[str, ...]",
    "timeout": "float",
    "strict_service_type": "bool",
    "min_key_bits": "int",
    "cache_size": "int",
    "cache_max_ttl": "float",
}


def load_dkim_config(path: Path | None, *, policy: str | None = None) -> DkimConfig:
    """The ``[dkim]`` table of the config file (defaults without a file or a table);
    ``policy`` (a command-line flag) wins over the file's."""
    values = read_table(path, "dkim", _KINDS)
    given = values.pop("policy", DkimPolicy.VERIFY.value)
    policy = str(policy if policy is not None else given).lower()
    if policy not in DkimPolicy.__members__.values():
        choices = ", ".join(repr(p.value) for p in DkimPolicy)
        raise ConfigError(f"[dkim] policy must be one of {choices}, not {policy!r}")
    config = DkimConfig(policy=DkimPolicy(policy), **values)
    if config.timeout <= 0 or config.min_key_bits <= 0:
        raise ConfigError("[dkim] timeout and min_key_bits must be positive")
    if config.cache_size < 0 or config.cache_max_ttl < 0:
        raise ConfigError("[dkim] cache_size and cache_max_ttl must not be negative")
    for ns in config.nameservers:
        try:
            ipaddress.ip_address(getattr(_nameserver(ns), "address", ""))
        except ValueError:
            raise ConfigError(f"[dkim] nameservers: invalid address {ns!r}") from None
    return config


class DkimChecker:
    """What the pipeline holds: the policy and a verifier with its key lookup."""

    def __init__(
        self,
        lookup: KeyLookup,
        *,
        policy: DkimPolicy = DkimPolicy.VERIFY,
        strict_service_type: bool = False,
        min_key_bits: int = 1024,
    ) -> None:
        self.lookup = lookup
        self.policy = policy
        self.strict_service_type = strict_service_type
        self.min_key_bits = min_key_bits

    @property
    def enforcing(self) -> bool:
        return self.policy is DkimPolicy.ENFORCE

    def verify(self, raw: bytes) -> MessageVerdict:
        """Never raises: a bug here must not lose the report (it is a fail, never a pass)."""
        try:
            return verify_message(
                raw,
                self.lookup,
                strict_service_type=self.strict_service_type,
                min_key_bits=self.min_key_bits,
            )
        except Exception as exc:
            reason = f"verification error: {exc!r}"
            return MessageVerdict((SignatureCheck(None, None, DkimResult.FAIL, reason),))


def build_checker(config: DkimConfig) -> DkimChecker | None:
    """None when the policy is off (the pipeline then skips DKIM altogether)."""
    if config.policy is DkimPolicy.OFF:
        return None
    cache = KeyCache(config.cache_size, config.cache_max_ttl)
    lookup = DnsKeyLookup(make_resolver(config.nameservers, config.timeout), cache)
    return DkimChecker(
        lookup,
        policy=config.policy,
        strict_service_type=config.strict_service_type,
        min_key_bits=config.min_key_bits,
    )


def checker_from_file(path: Path | None, *, policy: str | None = None) -> DkimChecker | None:
    """The ``[dkim]`` table of ``path`` (or the defaults) → the pipeline's checker (None when
    the policy is off). Raises ConfigError for a bad table."""
    return build_checker(load_dkim_config(path, policy=policy))
