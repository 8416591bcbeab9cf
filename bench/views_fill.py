"""A provider-sized report store, generated fast through the store's own API.

Deterministic (seeded): ``fill(path, reports=50_000, domains=5_000, orgs=30, days=365)``
stores that many reports through ``SqliteStore.add_report`` inside ``SqliteStore.transaction``, in
batches. The shape follows what providers see: one report per (organisation, policy
domain, day); most domains in MTA-STS enforce, some testing, a few none; Microsoft-like
organisations report every session under both ``sts`` and ``tlsa``; about one report in
ten has failures, with one to three failure details from a pool of sending IPs.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tlsrpt_lmtp.core.model import FailureDetail, MailMeta, Policy, Report
from tlsrpt_lmtp.store.sqlite import SqliteStore

END = date(2026, 5, 20)  # the day after the last generated day
TYPES = (
    "certificate-expired",
    "starttls-not-supported",
    "validation-failure",
    "sts-policy-fetch-error",
)
META = MailMeta()


def domain_name(i: int) -> str:
    return "xn--bcher-kva.test" if i == 0 else f"d{i:05d}.example"


def org_name(i: int) -> str:
    return "Microsoft Corporation" if i == 0 else f"Reporter {i:02d}"


def mode_of(i: int) -> str:
    return ("none", "testing", "testing", "testing")[i % 4] if i % 5 == 1 else "enforce"


def make_report(rng: random.Random, n: int, org: int, dom: int, day: date) -> Report:
    domain = domain_name(dom)
    mode = mode_of(dom)
    ok = rng.randint(1, 2000)
    details: tuple[FailureDetail, ...] = ()
    if rng.random() < 0.1:
        details = tuple(
            FailureDetail(
                rng.choice(TYPES),
                f"198.51.{org}.{rng.randint(1, 20)}",
                f"mx{rng.randint(1, 2)}.{domain}",
                None,
                None,
                rng.randint(1, 50),
                None,
                None,
            )
            for _ in range(rng.randint(1, 3))
        )
    failed = sum(d.failed_session_count for d in details)
    mx = (f"mx1.{domain}", f"mx2.{domain}")
    policies = [
        Policy(
            "sts",
            domain,
            ("version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx)),
            mx,
            ok,
            failed,
            details,
        )
    ]
    if org == 0:  # the same sessions again under the domain's DANE policy
        policies.append(Policy("tlsa", domain, ("3 1 1 00ff",), mx, ok, failed, details))
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return Report(
        org_name(org),
        f"r{n}",
        start,
        start + timedelta(days=1),
        "tlsrpt@reporter.example",
        tuple(policies),
        (),
    )


def generate(
    reports: int = 50_000,
    *,
    domains: int = 5_000,
    orgs: int = 30,
    days: int = 365,
    seed: int = 1,
    end: date = END,
) -> Iterator[Report]:
    """The reports ``fill`` stores, in order (tests recompute the expected numbers from them);
    the last possible day is the day before ``end``."""
    rng = random.Random(seed)
    for n in range(reports):
        day = end - timedelta(days=1 + rng.randrange(days))
        yield make_report(rng, n, rng.randrange(orgs), rng.randrange(domains), day)


def fill(
    path: Path,
    reports: int = 50_000,
    *,
    domains: int = 5_000,
    orgs: int = 30,
    days: int = 365,
    seed: int = 1,
    batch: int = 5_000,
    end: date = END,
) -> None:
    """Store ``generate(...)``'s reports, ``batch`` per transaction."""
    db = SqliteStore(path)
    made = generate(reports, domains=domains, orgs=orgs, days=days, seed=seed, end=end)
    try:
        n = 0
        while n < reports:
            with db.transaction(durable=False) as c:
                for report in itertools.islice(made, batch):
                    received = report.date_range_end.isoformat()
                    db.add_report(
                        c, report, meta=META, archive_id=f"{n:064x}", received_at=received
                    )
                    n += 1
    finally:
        db.close()
