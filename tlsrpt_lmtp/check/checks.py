"""The evaluation: observations in, findings out. Pure (no I/O, the time is a parameter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tlsrpt_lmtp.check.findings import Check, Finding, error, ok, warn
from tlsrpt_lmtp.check.observed import MxLookup, Observations, PolicyFetch, Probe, ProbeStatus
from tlsrpt_lmtp.check.observed import TxtLookup as Txt
from tlsrpt_lmtp.check.tlsrpt_record import parse_txt as parse_tlsrpt
from tlsrpt_lmtp.sts.policy import (
    MAX_AGE_LIMIT,
    Mode,
    PolicyError,
    StsPolicy,
    mx_matches,
    parse_policy,
)
from tlsrpt_lmtp.sts.record import parse_txt as parse_sts

DAY = 86400
HINT = "tlsrpt-lmtp check {domain} --print-records --rua mailto:... shows what to publish"


@dataclass(frozen=True, slots=True)
class Limits:
    cert_warn_days: float = 14.0
    max_age_min: int = DAY
    max_age_max: int = MAX_AGE_LIMIT


def evaluate(obs: Observations, now: datetime, limits: Limits = Limits()) -> tuple[Finding, ...]:
    findings = [*check_tlsrpt(obs.domain, obs.tlsrpt)]
    policy_findings, policy = check_sts(obs.domain, obs.sts, obs.policy, limits)
    findings += policy_findings
    findings += check_mx(obs.domain, obs.mx, policy)
    findings += check_tls(obs.mx, now, limits)
    return tuple(findings)


def check_tlsrpt(domain: str, lookup: Txt) -> list[Finding]:
    name = f"_smtp._tls.{domain}"
    if lookup.error:
        return [
            error(
                Check.TLSRPT_RECORD,
                name,
                lookup.error,
                "make the domain's authoritative name servers answer TXT queries",
            )
        ]
    result = parse_tlsrpt(list(lookup.records))
    if result.record is None:
        example = f'{name}. TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"'
        why = result.error or "invalid record"
        if why.startswith("no "):
            fix = f"publish one TXT record like {example}"
        elif "exactly one" in why:
            fix = f"keep exactly one record, e.g. {example}"
        else:
            fix = f"correct the record; a valid one looks like {example}"
        message = f"{why}: senders send no TLS reports"
        return [error(Check.TLSRPT_RECORD, name, message, fix)]
    uris = ", ".join(u.uri for u in result.record.rua)
    message = f"reports go to {uris}"
    if result.record.extensions:
        unknown = ", ".join(n for n, _ in result.record.extensions)
        message += f" (unknown fields ignored: {unknown})"
    return [ok(Check.TLSRPT_RECORD, name, message)]


def check_sts(
    domain: str, lookup: Txt, fetch: PolicyFetch, limits: Limits
) -> tuple[list[Finding], StsPolicy | None]:
    name = f"_mta-sts.{domain}"
    found: list[Finding] = []
    if lookup.error:
        fix = "make the domain's authoritative name servers answer TXT queries"
        found.append(error(Check.STS_RECORD, name, lookup.error, fix))
    else:
        txt = parse_sts(list(lookup.records))
        if txt.record is not None:
            found.append(ok(Check.STS_RECORD, name, f"v=STSv1 record, id={txt.record.id}"))
        elif fetch.body is None and not any(r.startswith(b"v=STSv1") for r in lookup.records):
            message = f"MTA-STS is not set up: no TXT record, and {fetch.error}"
            found.append(error(Check.STS_RECORD, name, message, HINT.format(domain=domain)))
            return found, None
        else:
            why = txt.reason or "invalid record"
            fix = 'publish exactly one TXT record "v=STSv1; id=<1-32 letters/digits>"'
            found.append(error(Check.STS_RECORD, name, f"{why}: senders ignore the policy", fix))
    if fetch.body is None:
        fix = _fetch_fix(fetch, f"mta-sts.{domain}")
        found.append(error(Check.STS_POLICY, fetch.url, fetch.error or "", fix, fetch.result_type))
        return found, None
    try:
        policy = parse_policy(fetch.body)
    except PolicyError as exc:
        fix = "fix the policy file (version, mode, mx and max_age lines, 'key: value')"
        found.append(error(Check.STS_POLICY, fetch.url, str(exc), fix, "sts-policy-invalid"))
        return found, None
    summary = f"mode {policy.mode}, max_age {policy.max_age}, mx {', '.join(policy.mx) or '-'}"
    found.append(ok(Check.STS_POLICY, fetch.url, summary))
    found += _mode(fetch.url, policy)
    found += _max_age(fetch.url, policy, limits)
    return found, policy


def _fetch_fix(fetch: PolicyFetch, host: str) -> str:
    if fetch.result_type == "sts-webpki-invalid":
        return (
            f"install a certificate for {host} (a subjectAltName) from a public CA, with its"
            " intermediate chain, and renew it in time"
        )
    if fetch.error and fetch.error.endswith("has no address"):
        return f"publish an A/AAAA record (or a CNAME) for {host} pointing to a web server"
    return (
        f"serve the policy at {fetch.url} with HTTP 200 and Content-Type text/plain,"
        " without a redirect"
    )


def _mode(url: str, policy: StsPolicy) -> list[Finding]:
    if policy.mode is Mode.TESTING:
        message = "mode testing: senders report failures but still deliver without valid TLS"
        fix = "once the reports show no failures, set mode: enforce and change the _mta-sts id"
        return [warn(Check.STS_MODE, url, message, fix)]
    if policy.mode is Mode.NONE:
        message = "mode none: senders stop applying MTA-STS to the domain"
        fix = "use mode testing or enforce, unless MTA-STS is being withdrawn"
        return [warn(Check.STS_MODE, url, message, fix)]
    return []


def _max_age(url: str, policy: StsPolicy, limits: Limits) -> list[Finding]:
    raw = next((line[8:].strip() for line in policy.lines if line.startswith("max_age:")), "0")
    seconds = int(raw)
    fix = "set max_age to a few weeks, e.g. 1209600 (14 days) to 2419200 (28 days)"
    if seconds < limits.max_age_min:
        message = f"max_age {seconds} s is under a day: senders forget the policy too soon"
        return [warn(Check.STS_MAX_AGE, url, message, fix)]
    if seconds > limits.max_age_max:
        message = f"max_age {seconds} s is over a year: senders cap it at {MAX_AGE_LIMIT} s"
        return [warn(Check.STS_MAX_AGE, url, message, fix)]
    return []


def check_mx(domain: str, mx: MxLookup, policy: StsPolicy | None) -> list[Finding]:
    if mx.error:
        fix = "make the domain's authoritative name servers answer MX queries"
        return [error(Check.MX, domain, mx.error, fix)]
    if mx.null_mx:
        message = "null MX (RFC 7505): the domain receives no mail, nothing to protect"
        fix = "remove the _mta-sts and _smtp._tls records, or publish real MX records"
        return [warn(Check.MX, domain, message, fix)]
    found: list[Finding] = []
    if mx.implicit:
        message = "no MX record: senders deliver to the domain's own address (implicit MX)"
        found.append(warn(Check.MX, domain, message, f"publish an MX record for {domain}"))
    else:
        hosts = ", ".join(f"{h.name} ({h.preference})" for h in mx.hosts)
        found.append(ok(Check.MX, domain, f"MX {hosts}"))
    for host in mx.hosts:
        if host.error:
            fix = f"publish an A (and AAAA) record for {host.name}, or remove the MX"
            found.append(error(Check.MX, host.name, host.error, fix))
    if policy is None or policy.mode is Mode.NONE:
        return found
    for host in mx.hosts:
        pattern = next((p for p in policy.mx if mx_matches(p, host.name)), None)
        if pattern is not None:
            found.append(ok(Check.MX_POLICY, host.name, f"matches policy mx {pattern}"))
            continue
        message = "matched by no policy mx line: senders applying the policy refuse this MX"
        fix = f"add 'mx: {host.name}' to the policy file and change the _mta-sts id"
        rt = "certificate-host-mismatch"
        found.append(error(Check.MX_POLICY, host.name, message, fix, rt))
    for pattern in policy.mx:
        if not any(mx_matches(pattern, h.name) for h in mx.hosts):
            message = f"policy mx {pattern} matches no MX host"
            fix = "remove the line from the policy file, or add the MX it was meant for"
            found.append(warn(Check.MX_PATTERN, pattern, message, fix))
    return found


def check_tls(mx: MxLookup, now: datetime, limits: Limits) -> list[Finding]:
    return [_probe(p, now, limits) for host in mx.hosts for p in host.probes]


_FIXES = {
    "starttls-not-supported": "enable STARTTLS on port 25 with a certificate for {host}",
    "certificate-host-mismatch": "install a certificate whose subjectAltName lists {host}",
    "certificate-not-trusted": "use a certificate from a public CA and send the full chain",
    "certificate-expired": "renew the certificate of {host} (and automate the renewal)",
    "validation-failure": "offer TLS 1.2 or later with a valid certificate for {host}",
}


def _probe(probe: Probe, now: datetime, limits: Limits) -> Finding:
    subject = f"{probe.host} [{probe.address}]"
    if probe.status is ProbeStatus.OK:
        assert probe.not_after is not None
        days = (probe.not_after - now).total_seconds() / DAY
        until = probe.not_after.strftime("%Y-%m-%d")
        if days < limits.cert_warn_days:
            message = f"certificate expires in {days:.1f} days ({until})"
            fix = f"renew the certificate of {probe.host} now, and check the renewal job"
            return warn(Check.MX_CERT_EXPIRY, subject, message, fix)
        message = f"STARTTLS ({probe.tls_version}), certificate valid until {until}"
        return ok(Check.MX_TLS, subject, message)
    if probe.status is ProbeStatus.SKIPPED:
        fix = "run the check again from a host with IPv6 connectivity"
        return warn(Check.MX_TLS, subject, probe.detail, fix)
    if probe.status in (ProbeStatus.UNREACHABLE, ProbeStatus.SMTP_ERROR):
        fix = (
            f"make {probe.host} accept SMTP on port 25 from the internet (if every MX fails,"
            " check that this host may connect out to port 25)"
        )
        return error(Check.MX_TLS, subject, probe.detail, fix)
    rt = probe.result_type or "validation-failure"
    fix = _FIXES.get(rt, _FIXES["validation-failure"]).format(host=probe.host)
    return error(Check.MX_TLS, subject, probe.detail, fix, rt)
