"""DKIM with silent key domains (not a test): prints one table to stdout.

    .venv/bin/python -m bench.dkim_batch

Issue 8, case 6: mails naming key domains whose DNS never answers held an honest report for the
sum of their timeouts. A batch of two such mails and one honest report is verified twice with
the default ``[dkim]`` settings (timeout 5 s) against the netsim DNS server on 127.0.0.1:
one message after another (``verify``, as stage 2 did) and as one batch (``verify_many``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.support.dkim import SUBMITTER, key_pair, loopback_dns, report_mail, sign
from tlsrpt_lmtp.ingest.dkim import DkimChecker, DkimConfig, MessageVerdict, build_checker

SILENT = ("slow-one.test", "slow-two.test")


def main() -> None:
    good = key_pair("good")
    with loopback_dns() as dns:
        dns.publish(good)
        for domain in SILENT:
            dns.publish(good, domain)
            dns.server.fail(f"tlsrpt._domainkey.{domain}", "timeout", "TXT")
        batch = [sign(report_mail(), good, d) for d in SILENT] + [sign(report_mail(), good)]

        def one_by_one(check: DkimChecker) -> list[MessageVerdict]:
            return [check.verify(raw) for raw in batch]

        def as_batch(check: DkimChecker) -> list[MessageVerdict]:
            return check.verify_many(batch)

        ways: list[tuple[str, Callable[[DkimChecker], list[MessageVerdict]]]] = [
            ("verify, one by one", one_by_one),
            ("verify_many", as_batch),
        ]
        print(f"{'how':20s} {'batch':>6s} {'seconds':>8s} {'honest':>7s} {'silent queries':>15s}")
        for label, run in ways:
            check = build_checker(DkimConfig(nameservers=(dns.nameserver,)))
            assert check is not None
            for attempt in ("first", "again"):
                before = sum(dns.queries(f"tlsrpt._domainkey.{d}") for d in SILENT)
                start = time.monotonic()
                verdicts = run(check)
                took = time.monotonic() - start
                sent = sum(dns.queries(f"tlsrpt._domainkey.{d}") for d in SILENT) - before
                honest = verdicts[-1].for_submitter(SUBMITTER).result.value
                print(f"{label:20s} {attempt:>6s} {took:8.2f} {honest:>7s} {sent:15d}")


if __name__ == "__main__":
    main()
