"""Metrics of the three daemons, scraped by a real Prometheus (Debian's), equal to the events
of the same run: reports through the real `serve` (LMTP server and its stage 2 process, one
of them killed on the way), lookups through the real `policy serve` on the loopback test
internet, messages through the real milter."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import hostile
from tests.support.lmtp import Server, children, events
from tests.support.lmtp_client import free_port, wait_for
from tests.support.mail import RCPT, report_mail
from tests.support.prometheus import prometheus, require, vector

pytest_plugins = ["tests.netsim.fixtures"]


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def _sum(events: list[dict[str, Any]], kind: str, field: str) -> float:
    return float(sum(e[field] for e in events if e["event"] == kind and isinstance(e[field], int)))


def _expected_from_events(ev: list[dict[str, Any]], job: str) -> dict[str, Any]:
    reports = [e for e in ev if e["event"] == "tlsrpt.report"]
    outcomes = Counter("duplicate" if e["duplicate"] else "stored" for e in reports)
    return {
        f'sum by (event) (tlsrpt_events_total{{job="{job}"}})': vector(
            Counter(e["event"] for e in ev), "event"
        ),
        f'sum by (outcome) (tlsrpt_reports_total{{job="{job}"}})': vector(outcomes, "outcome"),
        f'sum(tlsrpt_sessions_total{{job="{job}",result="success"}})': _sum(
            ev, "tlsrpt.policy", "total_successful_session_count"
        ),
        f'sum(tlsrpt_sessions_total{{job="{job}",result="failure"}})': _sum(
            ev, "tlsrpt.policy", "total_failure_session_count"
        ),
        f'sum(tlsrpt_failed_sessions_total{{job="{job}"}})': _sum(
            ev, "tlsrpt.failure", "failed_session_count"
        ),
        f'sum(tlsrpt_quarantined_total{{job="{job}"}})': float(
            sum(1 for e in ev if e["event"] == "tlsrpt.invalid")
        ),
    }


def test_serve_metrics_in_prometheus_equal_the_events(tmp_path: Path) -> None:
    require("prometheus")
    mport = free_port()
    server = Server(tmp_path / "serve", f"--metrics-listen=127.0.0.1:{mport}")
    mails = [report_mail(f"m{i}") for i in range(4)]
    mails.append(b"X-Resent: yes\r\n" + report_mail("m1"))  # the same report: a duplicate
    mails.append(b"From: a@b.example\r\nSubject: no report\r\n\r\nhello\r\n")
    mails += [hostile.surrogate_in_json(), hostile.big_int_count(), hostile.bomb()]
    late = [report_mail("m5"), report_mail("m6")]
    replies: list[int] = []
    try:
        with prometheus(tmp_path / "prom", {"serve": f"127.0.0.1:{mport}"}) as prom:
            client = server.client()
            for raw in mails:
                replies += [code for code, _ in client.deliver("r@example.net", [RCPT], raw)]
            first = events(server.data_dir, at_least=1)
            wait_for(lambda: _backlog(mport) == 0, timeout=60)
            # The stage 2 process dies (kill -9) between deliveries and is restarted: its
            # counts so far must stay in the sums.
            [stage2] = children(server.proc.pid)
            os.kill(stage2, signal.SIGKILL)
            for raw in late:
                replies += [code for code, _ in client.deliver("r@example.net", [RCPT], raw)]
            client.close()
            wait_for(lambda: _backlog(mport) == 0 and children(server.proc.pid) != [stage2], 60)
            ev = events(server.data_dir, at_least=len(first) + 1)
            assert {e["report_id"] for e in ev if e["event"] == "tlsrpt.report"} >= {"m5", "m6"}

            def expected() -> dict[str, Any]:
                ev[:] = events(server.data_dir)
                want = _expected_from_events(ev, "serve")
                want['tlsrpt_intake_messages_received_total{intake="lmtp"}'] = float(len(replies))
                want['tlsrpt_intake_messages_archived_total{intake="lmtp"}'] = float(
                    replies.count(250)
                )
                want["sum(tlsrpt_stage2_messages_total)"] = float(len(mails) + len(late))
                want["tlsrpt_stage2_backlog_messages"] = 0.0
                return want

            prom.settle(expected)
            assert replies == [250] * (len(mails) + len(late))
            outcomes = prom.query("sum by (outcome) (tlsrpt_reports_total)")
            assert outcomes[(("outcome", "duplicate"),)] == 1.0
            assert prom.scalar("sum(tlsrpt_stage2_latency_seconds_count)") == float(
                len(mails) + len(late)
            )
            orgs = prom.query("tlsrpt_last_report_timestamp_seconds")
            assert any(dict(k).get("organization") == "Example Inc." for k in orgs)
            assert (prom.scalar("tlsrpt_stage2_process_resident_memory_bytes") or 0) > 0
            assert (prom.scalar('process_resident_memory_bytes{job="serve"}') or 0) > 0
    finally:
        assert server.stop() == 0


def _backlog(port: int) -> float:
    for line in _scrape(port).splitlines():
        if line.startswith("tlsrpt_stage2_backlog_messages "):
            return float(line.split()[1])
    raise AssertionError("no backlog gauge")


# --- policy serve on the loopback test internet ------------------------------------------------


@pytest.fixture
def policy_daemon(netsim: Any, tmp_path: Path) -> Iterator[tuple[Any, int]]:
    from tests.mta.policy_daemon import PolicyDaemon

    mport = free_port()
    daemon = PolicyDaemon(
        tmp_path,
        nameserver=netsim.nameserver,
        ca_file=netsim.ca_file,
        extra_args=["--metrics-listen", f"127.0.0.1:{mport}"],
    )
    daemon.start()
    try:
        yield daemon, mport
    finally:
        daemon.stop()


def test_policy_daemon_metrics_in_prometheus_equal_lookups_and_events(
    netsim: Any, policy_daemon: tuple[Any, int], tmp_path: Path
) -> None:
    require("prometheus")
    daemon, mport = policy_daemon
    netsim.publish_sts("enforced.test")
    netsim.publish_sts("testing.test", mode="testing")
    netsim.publish_sts("hostdown.test", host_state="down")
    netsim.publish_sts("garbage.test", policy="this is not a policy")
    netsim.dns.set("_mta-sts.plain.test", "TXT", "v=spf1 -all")
    asked: Counter[tuple[str, str]] = Counter()

    def ask(domain: str, name: str = "sts") -> str:
        reply = daemon.socketmap_query(domain, name)
        answer = "secure" if reply.startswith("OK secure") else reply.split()[0].lower()
        asked[(name, answer)] += 1
        return reply

    with prometheus(tmp_path / "prom", {"policy": f"127.0.0.1:{mport}"}) as prom:
        for _ in range(3):
            assert ask("enforced.test").startswith("OK secure")
        assert ask("enforced.test", "sts-tlsrpt").startswith("OK secure")
        for domain in ("testing.test", "testing.test", "hostdown.test", "garbage.test"):
            assert ask(domain).startswith("NOTFOUND")
        assert ask("plain.test") == "NOTFOUND "
        assert ask("plain.test") == "NOTFOUND "
        exim = daemon.exim_query("enforced.test")
        assert "mode=enforce" in exim
        asked[("exim", "secure")] += 1

        def expected() -> dict[str, Any]:
            fetched = len(daemon.events("sts.policy_fetched"))
            errors = Counter(e["result_type"] for e in daemon.events("sts.fetch_error"))
            fetches = {(("outcome", "success"),): float(fetched)} | {
                (("outcome", "failure"), ("result_type", rt)): float(n) for rt, n in errors.items()
            }
            total = float(sum(asked.values()))
            return {
                "tlsrpt_policy_requests_total": {
                    (
                        ("answer", a),
                        ("instance", f"127.0.0.1:{mport}"),
                        ("job", "policy"),
                        ("map", m),
                    ): float(n)
                    for (m, a), n in asked.items()
                },
                "sum by (outcome, result_type) (tlsrpt_policy_fetches_total)": fetches,
                "tlsrpt_policy_cache_hits_total + tlsrpt_policy_cache_misses_total": total,
                "tlsrpt_policy_fetch_duration_seconds_count": float(sum(fetches.values())),
            }

        prom.settle(expected)
        errors = Counter(e["result_type"] for e in daemon.events("sts.fetch_error"))
        assert errors == {"sts-policy-fetch-error": 1, "sts-policy-invalid": 1}
        assert len(daemon.events("sts.policy_fetched")) == 2  # enforced.test, testing.test
        # enforced.test: one miss, then hits (socketmap and Exim); plain.test: negative cache
        assert (prom.scalar("tlsrpt_policy_cache_hits_total") or 0) >= 5
        assert prom.scalar("tlsrpt_policy_cache_entries") == 2.0
        dns = prom.query("sum by (query) (tlsrpt_policy_dns_duration_seconds_count)")
        assert dns[(("query", "txt"),)] >= 5


# --- the milter ---------------------------------------------------------------------------------


def test_milter_metrics_in_prometheus_equal_the_events(tmp_path: Path) -> None:
    require("prometheus")
    mp = pytest.importorskip("tests.support.milter")
    from tests.support.dkim import report_mail as milter_mail

    mport = free_port()
    config = (
        f'[lmtp]\nrecipients = ["{mp.REPORT_RCPT}"]\n[milter]\nmode = "tap"\ntimeout = 30\n'
        f'{mp.DKIM_OFF}[metrics]\nlisten = "127.0.0.1:{mport}"\n'
    )
    milter = mp.MilterProcess(tmp_path / "milter", config)
    milter.start()
    try:
        with prometheus(tmp_path / "prom", {"milter": f"127.0.0.1:{mport}"}) as prom:
            sent = [
                milter_mail(report_id="milter-1", failures=2),
                milter_mail(report_id="milter-2", failures=0),
                milter_mail(report_id="milter-1", failures=2),  # the same mail: archived once
                b"From: a@b.example\r\nSubject: nothing\r\n\r\nhello\r\n",
            ]
            for raw in sent:
                milter.send(raw)
            assert milter.send(milter_mail(report_id="x"), [mp.OTHER_RCPT])  # not ours

            def expected() -> dict[str, Any]:
                lines = milter.events_file.read_text().splitlines()
                ev = [json.loads(line) for line in lines if line]
                want = _expected_from_events(ev, "milter")
                want['tlsrpt_intake_messages_received_total{intake="milter"}'] = float(len(sent))
                want['tlsrpt_intake_messages_archived_total{intake="milter"}'] = float(len(sent))
                return want

            prom.settle(expected)
            assert prom.scalar('sum(tlsrpt_failed_sessions_total{job="milter"})') == 2.0
    finally:
        with contextlib.suppress(AssertionError):
            milter.stop()
