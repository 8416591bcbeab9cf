"""Report authenticity: DKIM verification by RFC 8460 §3's rules, with dkimpy.

RFC 8460 §3: a report MUST carry a valid DKIM signature by the reporting domain (receivers
MUST ignore reports without one), ``l=`` MUST NOT be used, and the key record SHOULD have
``s=tlsrpt`` (a receiver MAY ignore signatures whose key lacks it: ``strict_service_type``).

The verification core is sans-I/O: ``verify_message`` takes the raw bytes and a key lookup
function (name → TXT record bytes, ``None`` when there is no record, ``DnsTempError`` when DNS
gave no definitive answer). ``DnsKeyLookup`` is the real lookup (dnspython, configurable
nameservers, a small TTL'd cache); tests inject their own. ``key_names`` tells which records a
message needs, so that ``verify_batch`` (batch.py) can fetch those of a whole batch at once.

Every signature on the message is checked (at most ``MAX_SIGNATURES``); each report then gets
the verdict that matters for it (``MessageVerdict.for_submitter``): an aligned pass wins over
an aligned temperror, over an unaligned pass, over any temperror, over a fail. Alignment: the
signing domain and the submitter (the TLS-Report-Submitter header, else the contact-info
domain) are equal or have the same organizational domain by the Public Suffix List (Mail.ru
signs as corp.mail.ru for mail.ru; evil.co.uk does not align with co.uk). A DNS
failure is ``temperror``: never an exception, never a pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dkim as dkimpy
from dkim.util import InvalidTagValueList, parse_tag_value

from tlsrpt_lmtp.core import names
from tlsrpt_lmtp.core.dkimpolicy import DkimPolicy as DkimPolicy  # with the verdicts

MAX_SIGNATURES = 5  # bounds the DNS work one message can cause


class DkimResult(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"  # no DKIM-Signature at all (or a bare report file)
    TEMPERROR = "temperror"  # the key could not be fetched (DNS timeout, SERVFAIL, ...)


class DnsTempError(Exception):
    """The key lookup had no definitive answer; the signature's verdict is temperror."""


# name (e.g. "sel._domainkey.example.com.") → TXT record bytes, or None if there is none.
KeyLookup = Callable[[str], bytes | None]
# None while there is time left; else why the time is up (the signature's temperror reason).
Budget = Callable[[], str | None]


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
    """Relaxed alignment by organizational domain (``names.aligned``, Public Suffix List)."""
    return names.aligned(domain, names.mail_domain(submitter))


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
    budget: Budget | None = None,
) -> MessageVerdict:
    """Check every DKIM-Signature on ``raw`` (RFC 8460 rules); never raises. ``budget`` is asked
    before each signature is verified: a reason means the time is up, the verdict temperror."""
    count = _signature_count(raw)
    if not count:
        return MessageVerdict(())
    mode: bool | str = "strict" if strict_service_type else True
    checks = tuple(
        _check_signature(raw, idx, lookup, mode, min_key_bits, budget) for idx in range(count)
    )
    return MessageVerdict(checks)


def key_names(raw: bytes) -> tuple[str, ...]:
    """The key records ``verify_message`` will ask ``lookup`` for (dkimpy's
    ``s._domainkey.d.``), without duplicates, so they can be fetched ahead; never raises."""
    count = _signature_count(raw)
    if not count:
        return ()
    try:
        signer = dkimpy.DKIM(raw, logger=_Capture())
    except Exception:
        return ()
    names: dict[str, None] = {}
    for value in [v for k, v in signer.headers if k.lower() == b"dkim-signature"][:count]:
        try:
            tags = parse_tag_value(value)
            if b"l" in tags:
                continue  # refused without a lookup
            dkimpy.validate_signature_fields(tags)
            name = tags[b"s"] + b"._domainkey." + tags[b"d"] + b"."
        except Exception:
            continue  # malformed: dkimpy stops before the lookup too
        names[name.decode("ascii", "replace")] = None
    return tuple(names)


def _signature_count(raw: bytes) -> int:
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    return min(len(_SIG_HEADER.findall(head)), MAX_SIGNATURES)


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
    raw: bytes,
    idx: int,
    lookup: KeyLookup,
    mode: bool | str,
    min_key_bits: int,
    budget: Budget | None,
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
    domain = names.canonical(domain) if domain else None
    if b"l" in tags:
        return SignatureCheck(domain, selector, DkimResult.FAIL, "l= used (RFC 8460 §3)")
    spent = budget() if budget is not None else None
    if spent is not None:
        return SignatureCheck(domain, selector, DkimResult.TEMPERROR, spent)
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
