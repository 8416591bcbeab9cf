"""The normalised reports in the SQLite database, with the dedup index.

Everything here is derived from the archive and written inside the caller's transaction
(``Database.transaction(durable=False)``); ``tlsrpt-lmtp reprocess`` can rebuild it.
"""

from __future__ import annotations

import json
import sqlite3

from tlsrpt_lmtp.core.model import MailMeta, Report
from tlsrpt_lmtp.ingest.db import Database


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def finish_message(
        c: sqlite3.Connection, archive_id: str, *, status: str, reason: str | None, meta: MailMeta
    ) -> None:
        c.execute(
            "UPDATE messages SET status=?, reason=?, from_addr=?, subject=?, message_id=?"
            " WHERE archive_id=?",
            (status, reason, meta.from_, meta.subject, meta.message_id, archive_id),
        )

    @staticmethod
    def add_report(
        c: sqlite3.Connection, report: Report, *, meta: MailMeta, archive_id: str, received_at: str
    ) -> bool:
        """Store a report; False if it is a duplicate (same org, id and date range).

        A report stored before by this same message while the message is still pending
        (its processing was interrupted before its events were written) is not a duplicate:
        its events are still owed, and they must be the same as the first time.
        """
        org, rid, start, end = report.dedup_key

        cur = c.execute(
            "INSERT INTO reports (organization_name, report_id, date_range_start,"
            " date_range_end, contact_info, report_domain, submitter, archive_id,"
            " received_at, warnings, total_successful_session_count,"
            " total_failure_session_count) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT DO NOTHING",
            (
                org,
                rid,
                start,
                end,
                report.contact_info,
                meta.report_domain,
                meta.submitter,
                archive_id,
                received_at,
                json.dumps(report.warnings),
                report.total_successful_session_count,
                report.total_failure_session_count,
            ),
        )
        if cur.rowcount == 0:
            owner = c.execute(
                "SELECT r.archive_id, m.status FROM reports r JOIN messages m"
                " ON m.archive_id = r.archive_id WHERE r.organization_name=?"
                " AND r.report_id=? AND r.date_range_start=? AND r.date_range_end=?",
                (org, rid, start, end),
            ).fetchone()
            return owner is not None and tuple(owner) == (archive_id, "pending")
        report_pk = cur.lastrowid
        for p in report.policies:
            pcur = c.execute(
                "INSERT INTO policies (report, policy_type, policy_domain, policy_string,"
                " mx_host, total_successful_session_count, total_failure_session_count)"
                " VALUES (?,?,?,?,?,?,?)",
                (
                    report_pk,
                    p.policy_type,
                    p.policy_domain,
                    json.dumps(p.policy_string),
                    json.dumps(p.mx_host),
                    p.total_successful_session_count,
                    p.total_failure_session_count,
                ),
            )
            c.executemany(
                "INSERT INTO failures (policy, result_type, sending_mta_ip,"
                " receiving_mx_hostname, receiving_mx_helo, receiving_ip,"
                " failed_session_count, additional_information, failure_reason_code)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        pcur.lastrowid,
                        d.result_type,
                        d.sending_mta_ip,
                        d.receiving_mx_hostname,
                        d.receiving_mx_helo,
                        d.receiving_ip,
                        d.failed_session_count,
                        d.additional_information,
                        d.failure_reason_code,
                    )
                    for d in p.failure_details
                ],
            )
        return True
