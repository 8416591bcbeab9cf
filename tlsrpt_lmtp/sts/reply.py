"""What Postfix and Exim are told, sans-I/O.

Postfix (socketmap, smtp_tls_policy_maps): `enforce` → `OK secure match=... servername=hostname`;
anything else → `NOTFOUND ` so Postfix applies its own default level (and its own DANE). The
TLSRPT attributes are only for Postfix ≥ 3.10: older versions defer mail on seeing them.
Exim (${readsocket}): one line of key=value fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from tlsrpt_lmtp.sts.policy import Mode, StsPolicy

MAX_REPLY = 100_000  # Postfix socketmap_max_reply_size


class Kind(StrEnum):
    POLICY = "policy"  # an applicable MTA-STS policy (any mode)
    NO_POLICY = "no-policy"  # no MTA-STS, or not applicable to this key
    DANE = "dane"  # DNSSEC-validated TLSA: leave it to the MTA's DANE (§2)
    TEMP = "temp"  # cannot answer safely now


@dataclass(frozen=True, slots=True)
class Answer:
    kind: Kind
    domain: str | None = None
    policy: StsPolicy | None = None
    policy_id: str | None = None
    reason: str | None = None
    # Postfix replies framed for it, by (tlsrpt attributes, enforce_testing): sts.server
    # keeps small ones here, so they live as long as the answer (a cache entry's, for hits).
    framed: dict[tuple[bool, bool], bytes] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def enforced(self, *, enforce_testing: bool) -> bool:
        if self.kind is not Kind.POLICY or self.policy is None:
            return False
        return self.policy.mode is Mode.ENFORCE or (
            enforce_testing and self.policy.mode is Mode.TESTING
        )


def postfix_reply(answer: Answer, *, tlsrpt: bool, enforce_testing: bool) -> str:
    if answer.kind is Kind.TEMP:
        return f"TEMP {answer.reason or 'MTA-STS policy lookup failed'}"
    if not answer.enforced(enforce_testing=enforce_testing):
        return "NOTFOUND "
    assert answer.policy is not None and answer.domain is not None
    match = ":".join(p[1:] if p.startswith("*.") else p for p in answer.policy.mx)
    reply = f"OK secure match={match} servername=hostname"
    if not tlsrpt:
        return reply
    attrs = [f"policy_type=sts policy_domain={answer.domain}"]
    attrs += [f"mx_host_pattern={p}" for p in answer.policy.mx]
    full = " ".join([reply, *attrs, *(f"{{ policy_string = {s} }}" for s in answer.policy.lines)])
    # A policy can be 64 KiB; the reply may not exceed Postfix's limit.
    return full if len(full.encode()) <= MAX_REPLY else " ".join([reply, *attrs])


def exim_line(answer: Answer, *, enforce_testing: bool) -> str:
    """`mode=enforce domain=example.com mx="mx1.example.com:*.example.net" id=...`."""
    if answer.kind is Kind.TEMP:
        return f'mode=temp reason="{_quote(answer.reason or "lookup failed")}"'
    if answer.kind is Kind.DANE:
        return f"mode=dane domain={answer.domain}"
    if answer.kind is not Kind.POLICY or answer.policy is None:
        return "mode=none"
    mode = "enforce" if answer.enforced(enforce_testing=enforce_testing) else answer.policy.mode
    mx = ":".join(answer.policy.mx)
    return (
        f'mode={mode} domain={answer.domain} mx="{mx}" '
        f"max_age={answer.policy.max_age} id={answer.policy_id}"
    )


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
