"""The report JSON and the report mail that the pipeline, LMTP and command tests send."""

from __future__ import annotations

import json


def report_json(
    org: str = "Example Inc.", rid: str = "r1", day: str = "2026-11-20", **kw: object
) -> bytes:
    doc = {
        "organization-name": org,
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "contact-info": "tlsrpt@example.net",
        "report-id": rid,
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.example.org"],
                    "policy-domain": "example.org",
                    "mx-host": ["mx.example.org"],
                },
                "summary": {"total-successful-session-count": 10, "total-failure-session-count": 3},
                "failure-details": [
                    {
                        "result-type": "certificate-expired",
                        "sending-mta-ip": "192.0.2.1",
                        "receiving-mx-hostname": "mx.example.org",
                        "receiving-ip": "198.51.100.7",
                        "failed-session-count": 3,
                    }
                ],
            }
        ],
    }
    doc.update(kw)
    return json.dumps(doc).encode()


RCPT = "tlsrpt@reports.example.test"


def report_mail(rid: str = "r1", extra_line: bytes = b"") -> bytes:
    return (
        b"From: reporter@example.net\r\nTo: " + RCPT.encode() + b"\r\n"
        b"Subject: Report Domain: example.org Submitter: example.net Report-ID: <"
        + rid.encode()
        + b">\r\nTLS-Report-Domain: example.org\r\nTLS-Report-Submitter: example.net\r\n"
        b"Content-Type: application/tlsrpt+json\r\n\r\n"
        + report_json(rid=rid)
        + b"\r\n"
        + extra_line
    )
