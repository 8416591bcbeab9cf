"""Fuzz target: a signed report mail -> DKIM verification (dkimpy under RFC 8460's rules).

The key lookup is offline: the seed's key for ``tlsrpt._domainkey.reporter.example``, a
DnsTempError for a name containing "temp", no record otherwise. Documented: none
(``verify_message`` and ``key_names`` never raise). Checked: every signature gets a verdict
with a reason unless it passed, and the verdict for any submitter is one of the four results.
"""

from __future__ import annotations

import harness

with harness.instrumented():
    from tlsrpt_lmtp.core.dkim import DkimResult, DnsTempError, key_names, verify_message

KEYS: dict[str, bytes] = {}


def lookup(name: str) -> bytes | None:
    if "temp" in name:
        raise DnsTempError(f"SERVFAIL for {name}")
    return KEYS.get(name.lower().rstrip("."))


def check(data: bytes) -> None:
    key_names(data)
    verdict = verify_message(data, lookup)
    for sig in verdict.signatures:
        assert sig.result in DkimResult
        assert sig.result is DkimResult.PASS or sig.reason, sig
    for submitter in (None, "reporter.example", "Example.COM"):
        assert verdict.for_submitter(submitter).result in DkimResult


def seeds() -> list[bytes]:
    from tests.support import dkim as d

    key = d.KeyPair.generate(1024)
    KEYS["tlsrpt._domainkey.reporter.example"] = key.record().encode()
    mail = d.report_mail()
    return [
        d.sign(mail, key),
        d.sign(d.sign(mail, key), key, domain="temp.example"),
        d.sign(mail, key, canonicalize=(b"simple", b"simple")),
        d.sign(mail, key, length=True),
        mail,
    ]


if __name__ == "__main__":
    harness.main("dkim", check, (), seeds)
