"""Deterministic corpus of RFC 8460 section 5.3 report emails, plus a decompression bomb.

Layout written under OUT (``python -m bench.corpus --out OUT``)::

    small/*.eml    one policy, no failure details
    medium/*.eml   one policy with 50 failure details
    large/*.eml    one policy with 10,000 failure details
    bomb/bomb.eml  a report whose gzip attachment inflates to exactly 1 GiB
    manifest.json  seed, counts, generator version (a matching manifest skips regeneration)

Every report has its own report-id, policy domain and date range, so nothing dedups.
The same seed always yields byte-identical files (gzip mtime 0, fixed boundaries).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import random
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

GENERATOR_VERSION = 1
DEFAULT_SEED = 8460
SIZES: dict[str, tuple[int, int]] = {
    # size name: (number of emails, failure details per report)
    "small": (2000, 0),
    "medium": (200, 50),
    "large": (10, 10_000),
}
BOMB_BYTES = 1 << 30
CRLF = b"\r\n"
BASE_DAY = datetime(2025, 1, 1, tzinfo=UTC)
RESULT_TYPES = (
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
)
SUBMITTERS = ("mail-provider-a.example", "mail-provider-b.example", "relay.example.net")


@dataclass(frozen=True)
class Envelope:
    """Everything a report email's headers and attachment name need."""

    seq: int
    size: str
    submitter: str
    domain: str
    report_id: str
    start: datetime
    compact_json: bool

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=1, seconds=-1)

    @property
    def filename(self) -> str:
        start, end = int(self.start.timestamp()), int(self.end.timestamp())
        return f"{self.submitter}!{self.domain}!{start}!{end}!{self.seq:06d}.json.gz"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64_token(rng: random.Random, nbytes: int) -> str:
    return base64.b64encode(rng.randbytes(nbytes)).decode("ascii")


def _fold(text: str, width: int = 70) -> str:
    return "\r\n\t".join(text[i : i + width] for i in range(0, len(text), width))


def make_envelope(rng: random.Random, size: str, seq: int) -> Envelope:
    submitter = rng.choice(SUBMITTERS)
    domain = f"d{seq:05d}-{size}.example"
    start = BASE_DAY + timedelta(days=seq % 365)
    compact = rng.random() < 0.5
    if compact:  # one reporter style: "<date>+<domain>" ids and compact JSON
        report_id = f"{start:%Y.%m.%dT%H.%M.%SZ}+{domain}"
    else:  # the other: a long decimal id, pretty-printed JSON
        report_id = f"{rng.randrange(10**17, 10**18)}+{domain}"
    return Envelope(seq, size, submitter, domain, report_id, start, compact)


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return f"2001:db8:{rng.randrange(1 << 16):x}::{rng.randrange(1, 1 << 16):x}"
    net = rng.choice(("192.0.2", "198.51.100", "203.0.113"))
    return f"{net}.{rng.randrange(1, 255)}"


def _failure_detail(rng: random.Random, domain: str) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "result-type": rng.choice(RESULT_TYPES),
        "sending-mta-ip": _ip(rng),
        "receiving-mx-hostname": f"mx{rng.randrange(1, 5)}.{domain}",
        "receiving-ip": _ip(rng),
        "failed-session-count": rng.randrange(1, 60),
    }
    roll = rng.random()
    if roll < 0.3:
        detail["failure-reason-code"] = rng.choice(
            ("X509_V_ERR_CERT_HAS_EXPIRED", "bad https response code: 404", "TLSA mismatch")
        )
    elif roll < 0.4:
        detail["additional-information"] = (
            f"https://reports.{domain}/info?id={rng.getrandbits(32):08x}"
        )
    return detail


def _policy(rng: random.Random, domain: str, n_failures: int) -> dict[str, Any]:
    kind = "sts" if n_failures else rng.choice(("sts", "sts", "no-policy-found", "tlsa"))
    policy: dict[str, Any] = {"policy-type": kind, "policy-domain": domain}
    if kind == "sts":
        mode = rng.choice(("enforce", "testing"))
        policy["policy-string"] = [
            "version: STSv1",
            f"mode: {mode}",
            f"mx: *.{domain}",
            f"max_age: {rng.choice((86400, 604800, 2592000))}",
        ]
        policy["mx-host"] = [f"*.{domain}"]
    elif kind == "tlsa":
        policy["policy-string"] = [f"3 1 1 {rng.getrandbits(256):064X}"]
    details = [_failure_detail(rng, domain) for _ in range(n_failures)]
    entry: dict[str, Any] = {
        "policy": policy,
        "summary": {
            "total-successful-session-count": rng.randrange(1, 20_000),
            "total-failure-session-count": sum(d["failed-session-count"] for d in details),
        },
    }
    if details:
        entry["failure-details"] = details
    return entry


def report_json(rng: random.Random, env: Envelope, n_failures: int) -> bytes:
    report = {
        "organization-name": env.submitter.split(".")[0].replace("-", " ").title(),
        "date-range": {"start-datetime": _iso(env.start), "end-datetime": _iso(env.end)},
        "contact-info": f"smtp-tls-reporting@{env.submitter}",
        "report-id": env.report_id,
        "policies": [_policy(rng, env.domain, n_failures)],
    }
    if env.compact_json:
        return json.dumps(report, separators=(",", ":")).encode()
    return json.dumps(report, indent=4).encode()


def email_head(rng: random.Random, env: Envelope) -> bytes:
    """Headers, the text/plain part and the attachment's part headers (CRLF line ends)."""
    sent = env.end + timedelta(hours=rng.randrange(1, 12), seconds=rng.randrange(3600))
    date = format_datetime(sent)
    boundary = f"=_tlsrpt_{env.size}_{env.seq:06d}"
    mx = f"mx.{env.domain}"
    lines = [
        f"Return-Path: <noreply-smtp-tls-reporting@{env.submitter}>",
        f"Received: from mail-{rng.randrange(100, 999)}.{env.submitter} "
        f"(mail.{env.submitter} [{_ip(rng)}])",
        f"\tby {mx} (Postfix) with ESMTPS id {rng.getrandbits(40):010X}",
        f"\tfor <tlsrpt@{env.domain}>; {date}",
        f"Authentication-Results: {mx}; dkim=pass header.d={env.submitter};",
        f"\tspf=pass smtp.mailfrom={env.submitter}; dmarc=pass header.from={env.submitter}",
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={env.submitter}; s=s1;",
        f"\tt={int(sent.timestamp())}; h=to:from:subject:message-id:tls-report-submitter"
        ":tls-report-domain:date:mime-version;",
        f"\tbh={_b64_token(rng, 32)};",
        f"\tb={_fold(_b64_token(rng, 256))}",
        f"Date: {date}",
        f"TLS-Report-Domain: {env.domain}",
        f"TLS-Report-Submitter: {env.submitter}",
        f"Message-ID: <{rng.getrandbits(64):016x}.{env.seq}@{env.submitter}>",
        f"Subject: Report Domain: {env.domain} Submitter: {env.submitter} "
        f"Report-ID: <{env.report_id}>",
        f"From: noreply-smtp-tls-reporting@{env.submitter}",
        f"To: tlsrpt@{env.domain}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; boundary="{boundary}"; report-type="tlsrpt"',
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="us-ascii"',
        "Content-Transfer-Encoding: 7bit",
        "",
        f"This is an aggregate TLS report from {env.submitter}",
        "",
        f"--{boundary}",
        f'Content-Type: application/tlsrpt+gzip; name="{env.filename}"',
        f'Content-Disposition: attachment; filename="{env.filename}"',
        "Content-Transfer-Encoding: base64",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("ascii")


def email_tail(env: Envelope) -> bytes:
    return f"\r\n--=_tlsrpt_{env.size}_{env.seq:06d}--\r\n".encode("ascii")


def base64_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Stream base64 in 76-character CRLF lines (57 input bytes per line)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        whole = len(pending) - len(pending) % 57
        if whole:
            yield base64.encodebytes(pending[:whole]).replace(b"\n", CRLF)
            pending = pending[whole:]
    if pending:
        yield base64.encodebytes(pending).replace(b"\n", CRLF)


def write_report_email(path: Path, rng: random.Random, env: Envelope, n_failures: int) -> None:
    head = email_head(rng, env)
    gz = gzip.compress(report_json(rng, env, n_failures), compresslevel=6, mtime=0)
    path.write_bytes(head + b"".join(base64_lines([gz])) + email_tail(env))


def _bomb_stream(prefix: bytes, suffix: bytes, total: int) -> Iterator[bytes]:
    """Gzip a JSON text padded with spaces to exactly ``total`` bytes, 1 MiB at a time."""
    pad = total - len(prefix) - len(suffix)
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip header, mtime 0
    yield comp.compress(prefix)
    block = b" " * (1 << 20)
    for _ in range(pad // len(block)):
        yield comp.compress(block)
    yield comp.compress(block[: pad % len(block)] + suffix)
    yield comp.flush()


def write_bomb_email(path: Path, rng: random.Random, total: int = BOMB_BYTES) -> None:
    env = make_envelope(rng, "bomb", 0)
    full = report_json(rng, env, 0)
    cut = full.rindex(b"]")  # pad inside the policies array, before "]}"
    with path.open("wb") as out:
        out.write(email_head(rng, env))
        for line in base64_lines(_bomb_stream(full[:cut], full[cut:], total)):
            out.write(line)
        out.write(email_tail(env))


def generate(out: Path, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Write the corpus under ``out`` unless a matching manifest says it is already there."""
    manifest = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "sizes": SIZES,
        "bomb_bytes": BOMB_BYTES,
    }
    manifest_path = out / "manifest.json"
    wanted: dict[str, Any] = json.loads(json.dumps(manifest))  # tuples as JSON lists
    if manifest_path.exists() and json.loads(manifest_path.read_text()) == wanted:
        return wanted
    manifest_path.unlink(missing_ok=True)
    rng = random.Random(seed)
    for size, (count, n_failures) in SIZES.items():
        folder = out / size
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.eml"):
            old.unlink()
        for seq in range(count):
            env = make_envelope(rng, size, seq)
            write_report_email(folder / f"{size}-{seq:05d}.eml", rng, env, n_failures)
    (out / "bomb").mkdir(parents=True, exist_ok=True)
    write_bomb_email(out / "bomb" / "bomb.eml", rng)
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return wanted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    print(json.dumps(generate(args.out, args.seed)))


if __name__ == "__main__":
    main()
