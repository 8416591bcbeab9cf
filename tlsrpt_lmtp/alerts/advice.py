"""What an administrator should do about each result type (RFC 8460 §4.3), as one sentence.

Every argument comes from a report, so it is cleaned (``safe``) before it is put in a text
that goes into mail, a webhook and the event log. The sender's free text (its
failure-reason-code, organization name) is never part of a sentence: it stays in the event's
own fields, and where mail shows it, it is quoted as data (``quoted``). A domain or MX name
appears as is only when it looks like a host name (``name``), else quoted.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence

_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]{2,45}")


def safe(text: str, limit: int = 200) -> str:
    """One line of printable text, at most ``limit`` characters."""
    out = "".join(
        " " if unicodedata.category(ch)[0] in ("C", "Z") and ch != " " else ch for ch in text
    )
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def quoted(text: str, limit: int = 100) -> str:
    """Text from a report as a quoted, escaped, bounded string: data, not part of a sentence."""
    return json.dumps(safe(text, limit), ensure_ascii=False)


def name(text: str) -> str:
    """A domain or host name as is when it looks like one (letters, digits, '-', '_', '.'),
    else quoted: a report can put any text in these fields."""
    return text if _HOST.fullmatch(text) else quoted(text, 60)


def mx_names(names: Sequence[str]) -> str:
    cleaned = sorted({name(n) for n in names if n})
    if not cleaned:
        return "(the sender did not name it)"
    shown = ", ".join(cleaned[:5])
    return shown + (f" and {len(cleaned) - 5} more" if len(cleaned) > 5 else "")


def advice(result_type: str | None, domain: str, mx: Sequence[str]) -> str:
    d, m = name(domain), mx_names(mx)
    policy_url = f"https://mta-sts.{d}/.well-known/mta-sts.txt"
    texts = {
        None: "The sender gave no failure details: read its report in the archive.",
        "sts-policy-fetch-error": "Senders could not fetch the MTA-STS policy: check that"
        f" {policy_url} resolves, answers 200 over HTTPS without a redirect, and serves"
        " text/plain.",
        "sts-policy-invalid": f"The MTA-STS policy at {policy_url} does not parse: check"
        " its version, mode, mx and max_age lines.",
        "sts-webpki-invalid": f"The certificate of the policy host mta-sts.{d} did not validate"
        ": it is expired, lacks that name or misses its intermediate; renew it and serve"
        " the full chain.",
        "certificate-expired": f"The certificate of MX {m} has expired: renew it, reload the MTA"
        " and check why the renewal job did not run.",
        "certificate-host-mismatch": f"The certificate of MX {m} does not carry that host name:"
        " add it to the certificate's subject alternative names, or make the MX records and the"
        " policy's mx: lines match the certificate.",
        "certificate-not-trusted": f"The certificate of MX {m} is not trusted by senders"
        ": self-signed, a private CA or a missing intermediate; install a publicly"
        " trusted certificate with its full chain.",
        "validation-failure": f"Senders could not validate the certificate of MX {m}:"
        " check its chain, names and dates.",
        "starttls-not-supported": f"MX {m} did not offer STARTTLS: enable TLS with a valid"
        " certificate (Postfix: smtpd_tls_security_level = may and smtpd_tls_chain_files), and"
        " check that no firewall or proxy strips STARTTLS.",
        "tlsa-invalid": f"The TLSA records of MX {m} do not match the certificate it presents:"
        " publish a TLSA record for the current key (for a roll-over: the new key's record"
        " first, then the certificate) and remove stale records.",
        "dnssec-invalid": f"DNSSEC validation failed for {d} or its MX {m}: check the DS and"
        " DNSKEY chain and the RRSIG expiry of the zones holding the MX and TLSA records.",
        "dane-required": "The sender requires DANE but found no DNSSEC-validated TLSA records"
        f" for MX {m}: publish TLSA records at _25._tcp.<mx> in a signed zone.",
    }
    if result_type in texts:
        return texts[result_type]
    return f"Senders reported {name(result_type or '')} for MX {m}."
