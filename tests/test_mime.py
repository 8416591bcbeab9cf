"""extract: the report(s), errors, warnings and envelope metadata of one raw message.

Each ``test_quirk_NN_*`` builds the mail described by item NN of shared/samples/QUIRKS.md.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from tests.support.factories import (
    MiB,
    Part,
    attachment_part,
    b64_lines,
    gzip_bomb,
    gzip_member,
    no_policy,
    raw_email,
    report_dict,
    text_part,
    tlsrpt_email,
    to_json,
    zip_archive,
)
from tlsrpt_lmtp.core.decompress import DEFAULT_LIMIT
from tlsrpt_lmtp.core.mime import extract, find_attachments, mail_meta
from tlsrpt_lmtp.core.mimeparts import parts
from tlsrpt_lmtp.core.model import Extracted, MailMeta, Report

REPORT = to_json(report_dict(report_id="mime-1"))
GZ = gzip.compress(REPORT, mtime=0)


def only_report(result: Extracted) -> Report:
    assert result.errors == ()
    assert len(result.reports) == 1
    return result.reports[0]


# --------------------------------------------------------------------------------------------
# the RFC 8460 §5.3 shape
# --------------------------------------------------------------------------------------------


def test_rfc_shaped_mail_gives_its_report_and_metadata_without_warnings() -> None:
    result = extract(tlsrpt_email(GZ))
    report = only_report(result)
    assert report.report_id == "mime-1"
    assert report.total_successful_session_count == 100
    assert report.warnings == ()
    assert result.warnings == ()
    assert result.meta == MailMeta(
        from_="noreply-smtp-tls-reporting@reporter.example",
        subject="Report Domain: example.com Submitter: reporter.example "
        "Report-ID: <2024.01.09@r.example>",
        message_id="<tlsrpt-1@reporter.example>",
        report_domain="example.com",
        submitter="reporter.example",
    )


def test_two_report_attachments_give_two_reports() -> None:
    second = to_json(report_dict(no_policy("other.example", success=7), report_id="mime-2"))
    result = extract(tlsrpt_email(GZ, gzip.compress(second)))
    assert result.errors == ()
    assert [r.report_id for r in result.reports] == ["mime-1", "mime-2"]
    assert [r.total_successful_session_count for r in result.reports] == [100, 7]


def test_one_good_and_one_broken_attachment_give_one_report_and_one_error() -> None:
    broken = GZ[: len(GZ) // 2]
    result = extract(tlsrpt_email(GZ, broken, filenames=["good.json.gz", "broken.json.gz"]))
    assert [r.report_id for r in result.reports] == ["mime-1"]
    assert result.errors == ("attachment broken.json.gz: gzip data is truncated",)


def test_attachment_that_is_not_a_report_gives_a_readable_error() -> None:
    not_a_report = gzip.compress(json.dumps({"hello": "world"}).encode())
    result = extract(tlsrpt_email(not_a_report, filenames=["x.json.gz"]))
    assert result.reports == ()
    assert result.errors == ("attachment x.json.gz: report has no report-id",)


def test_bomb_attachment_is_refused_with_the_limit_in_the_reason() -> None:
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    spaces = b" " * MiB
    bomb = z.compress(b"{") + b"".join(z.compress(spaces) for _ in range(80)) + z.flush()
    result = extract(tlsrpt_email(bomb, filenames=["bomb.json.gz"]))
    assert result.reports == ()
    assert result.errors == (
        f"attachment bomb.json.gz: gzip data decompresses to more than the "
        f"{DEFAULT_LIMIT}-byte limit (bomb refused)",
    )


def test_bomb_that_is_not_json_is_refused_at_its_first_chunk() -> None:
    result = extract(tlsrpt_email(gzip_bomb(256 * MiB), filenames=["bomb.json.gz"]))
    assert result.reports == ()
    assert result.errors == ("attachment bomb.json.gz: decompressed attachment is not JSON",)


def test_limit_is_passed_through() -> None:
    result = extract(tlsrpt_email(GZ), limit=len(REPORT) - 1)
    assert result.reports == ()
    assert f"{len(REPORT) - 1}-byte limit" in result.errors[0]


def test_plain_email_without_a_report_is_turned_away() -> None:
    raw = (
        b"From: alice@example.org\nTo: tlsrpt@example.com\nSubject: Lunch?\n"
        b"Content-Type: text/plain; charset=utf-8\n\nShall we meet at noon?\n"
    )
    result = extract(raw)
    assert result.reports == ()
    assert result.errors == ("no report attachment found",)
    assert result.meta.subject == "Lunch?"
    assert result.warnings == (
        "tls-report-domain-header-missing",
        "tls-report-submitter-header-missing",
        "not-multipart-report",
    )


def test_multipart_mail_with_only_text_and_an_image_is_turned_away() -> None:
    msg = MIMEMultipart("mixed")
    msg["From"] = "alice@example.org"
    msg.attach(MIMEText("see attached"))
    msg.attach(MIMEApplication(b"\x89PNG\r\n\x1a\n....", "octet-stream", Name="logo.png"))
    result = extract(msg.as_bytes())
    assert result.reports == ()
    assert result.errors == ("no report attachment found",)


@pytest.mark.parametrize("raw", [b"", b"\x00\x01\x02 binary junk", b"# Provenance\n\n| a | b |\n"])
def test_bytes_that_are_neither_mail_nor_report_are_turned_away(raw: bytes) -> None:
    result = extract(raw)
    assert result.reports == ()
    assert result.errors == ("not an email message and not a report file",)
    assert result.meta == MailMeta()


@pytest.mark.parametrize(
    "make",
    [lambda r: r, gzip.compress, lambda r: zip_archive([("r.json", r)])],
    ids=["json", "gzip", "zip"],
)
def test_bare_report_file_is_its_own_report(make: Callable[[bytes], bytes]) -> None:
    result = extract(make(REPORT))
    report = only_report(result)
    assert report.report_id == "mime-1"
    assert report.warnings == ()
    assert result.meta == MailMeta()
    assert result.warnings == ()


def test_forwarded_report_inside_message_rfc822_is_found() -> None:
    inner = MIMEMultipart("report", report_type="tlsrpt")
    inner.attach(MIMEText("This is an aggregate TLS report"))
    inner.attach(MIMEApplication(GZ, "tlsrpt+gzip"))
    outer = MIMEMultipart("mixed")
    outer["From"] = "postmaster@example.com"
    outer["TLS-Report-Domain"] = "example.com"
    outer["TLS-Report-Submitter"] = "reporter.example"
    outer.attach(MIMEText("forwarded"))
    outer.attach(MIMEMessage(inner))
    report = only_report(extract(outer.as_bytes()))
    assert report.report_id == "mime-1"
    assert report.warnings == ("not-multipart-report",)


def test_find_attachments_prefers_claimed_parts_over_sniffing() -> None:
    msg = MIMEMultipart("report", report_type="tlsrpt")
    msg.attach(MIMEText('{"looks": "like json"}'))
    msg.attach(MIMEApplication(GZ, "tlsrpt+gzip"))
    found = find_attachments(parts(msg.as_bytes()))
    assert [(a.content_type, a.data) for a in found] == [("application/tlsrpt+gzip", GZ)]


# --------------------------------------------------------------------------------------------
# QUIRKS.md items 13-20 (the email)
# --------------------------------------------------------------------------------------------

BOUNDARY = "----=_Part_42_0123456789"


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/report; report-type="tlsrpt"; boundary="{BOUNDARY}"',
        f'multipart/report; report-type=tlsrpt; boundary="{BOUNDARY}"',
        f'multipart/report; boundary="{BOUNDARY}"; report-type=tlsrpt',
        f'multipart/report; boundary="{BOUNDARY}"; report-type="tlsrpt"',
        f'Multipart/Report; Boundary="{BOUNDARY}"; Report-Type="TLSRPT"',
        f'multipart/report;\n\tboundary="{BOUNDARY}"; report-type=tlsrpt',
        f'multipart/report; report-type="tlsrpt";\n    boundary="{BOUNDARY}"',
    ],
    ids=["quoted", "unquoted", "boundary-first", "boundary-first-quoted", "case", "ms", "rfc"],
)
def test_quirk_13_report_type_quoted_or_not_in_any_order(content_type: str) -> None:
    raw = raw_email(text_part(), attachment_part(GZ), content_type=content_type)
    result = extract(raw)
    report = only_report(result)
    assert report.report_id == "mime-1"
    assert result.warnings == ()
    assert report.warnings == ()


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/report; boundary="{BOUNDARY}"',
        f'multipart/report; report-type=dmarc; boundary="{BOUNDARY}"',
    ],
    ids=["absent", "other"],
)
def test_quirk_13_wrong_or_missing_report_type_is_flagged(content_type: str) -> None:
    result = extract(raw_email(text_part(), attachment_part(GZ), content_type=content_type))
    report = only_report(result)
    assert report.report_id == "mime-1"
    assert result.warnings == ("report-type-not-tlsrpt",)
    assert report.warnings == ("report-type-not-tlsrpt",)


def test_quirk_13_single_part_message_that_is_the_report() -> None:
    raw = raw_email(
        content_type="application/tlsrpt+gzip\nContent-Transfer-Encoding: base64",
        body=b64_lines(GZ),
    )
    result = extract(raw)
    report = only_report(result)
    assert report.report_id == "mime-1"
    assert result.meta.report_domain == "example.com"
    assert result.warnings == ("not-multipart-report",)
    assert report.warnings == ("not-multipart-report",)


def test_quirk_13_single_part_json_message() -> None:
    raw = raw_email(content_type="application/tlsrpt+json", body=REPORT.decode())
    report = only_report(extract(raw))
    assert report.report_id == "mime-1"
    assert report.warnings == ("not-multipart-report",)


def _zip(data: bytes) -> bytes:
    return zip_archive([("report.json", data)])


def _plain(data: bytes) -> bytes:
    return data


@pytest.mark.parametrize(
    ("content_type", "filename", "encode"),
    [
        ("application/tlsrpt+gzip", "r!example.com!1!2.json.gz", gzip.compress),
        ("application/tlsrpt+json", "r!example.com!1!2.json", _plain),
        ("application/tlsrpt", "r!example.com!1!2.json", _plain),
        ("application/json", "report.json", _plain),
        ("application/tlsrpt+zip", "report.zip", _zip),
        ("application/octet-stream", "report.json", _plain),
        ("application/octet-stream", "report.json.gz", gzip.compress),
        ("application/octet-stream", "report.zip", _zip),
        ("application/gzip", "report.json.gz", gzip.compress),
        ("application/x-zip-compressed", "report.zip", _zip),
        ("application/tlsrpt+gzip", None, gzip.compress),
    ],
)
def test_quirk_14_attachment_types_seen_in_the_wild(
    content_type: str, filename: str | None, encode: Callable[[bytes], bytes]
) -> None:
    part = attachment_part(encode(REPORT), content_type=content_type, filename=filename)
    result = extract(raw_email(text_part(), part))
    report = only_report(result)
    assert report.report_id == "mime-1"
    assert report.total_successful_session_count == 100
    assert report.warnings == ()


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/tlsrpt+gzip", REPORT),  # says gzip, is JSON
        ("application/tlsrpt+json", GZ),  # says JSON, is gzip
        ("application/tlsrpt+zip", GZ),  # says zip, is gzip
        ("application/octet-stream", GZ),  # no file name at all: found by sniffing
        ("application/x-unknown", _zip(REPORT)),  # unknown type, no name: sniffed
    ],
)
def test_quirk_14_bytes_are_sniffed_rather_than_the_type_trusted(
    content_type: str, data: bytes
) -> None:
    part = attachment_part(data, content_type=content_type, filename=None)
    report = only_report(extract(raw_email(text_part(), part)))
    assert report.report_id == "mime-1"
    assert report.warnings == ()


def test_quirk_14_octet_stream_name_param_in_content_type_only() -> None:
    part = attachment_part(
        GZ, content_type='application/octet-stream; name="report.json.gz"', filename=None
    )
    report = only_report(extract(raw_email(text_part(), part)))
    assert report.report_id == "mime-1"


MICROSOFT_HTML = """<html>
<head>
<meta http-equiv=3D"Content-Type" content=3D"text/html; charset=3Dus-ascii"=
>
</head>
<body>
<div>This is an aggregate TLS report from microsoft.com</div>
<p><em>Microsoft respects your privacy. Review our online </em><a href=3D"h=
ttps://privacy.microsoft.com/en-us/privacystatement"><em>Privacy Statement<=
/em></a></p>
</body>
</html>"""


def microsoft_mail(attachment_type: str = "application/tlsrpt+gzip") -> bytes:
    report = report_dict(
        org="Microsoft Corporation",
        report_id="134232617934286362+example.com",
        start="2026-05-13T00:00:00Z",
        end="2026-05-13T23:59:59Z",
        contact="tlsrpt-noreply@microsoft.com",
    )
    del report["policies"][0]["policy"]["mx-host"]
    name = "microsoft.com!example.com!1778630400!1778716799!134232617934286362.json.gz"
    return raw_email(
        Part(
            [
                'Content-Type: text/html; charset="us-ascii"',
                "Content-Transfer-Encoding: quoted-printable",
            ],
            MICROSOFT_HTML,
        ),
        Part(
            [
                f"Content-Type: {attachment_type}",
                f"Content-Description:\n {name}",
                f'Content-Disposition: attachment;\n\tfilename="{name}"',
                "Content-Transfer-Encoding: base64",
            ],
            b64_lines(gzip_member(to_json(report), os_byte=3, xfl=2)),
        ),
        headers=[
            "From: <tlsrpt-noreply@microsoft.com>",
            "Date: Thu, 14 May 2026 21:32:29 +0000",
            "Subject: Report Domain: example.com Submitter: microsoft.com Report-ID:\n"
            " 134232617934286362+example.com",
            "TLS-Report-Domain: example.com",
            "TLS-Report-Submitter: microsoft.com",
            "Message-ID: <134232617934286362+example.com@example.com>",
        ],
        boundary="_ef7ba0ff-fc83-492a-bd16-ed8162e24e7c_",
        content_type='multipart/report;\n\tboundary="_ef7ba0ff-fc83-492a-bd16-ed8162e24e7c_"; '
        "report-type=tlsrpt",
    )


@pytest.mark.parametrize("attachment_type", ["application/tlsrpt+gzip", "application/octet-stream"])
def test_quirk_15_microsoft_shape(attachment_type: str) -> None:
    result = extract(microsoft_mail(attachment_type))
    report = only_report(result)
    assert report.organization_name == "Microsoft Corporation"
    assert report.report_id == "134232617934286362+example.com"
    assert report.policies[0].mx_host == ()
    assert report.total_successful_session_count == 100
    assert report.warnings == ()
    assert result.warnings == ()
    assert result.meta.from_ == "<tlsrpt-noreply@microsoft.com>"
    assert result.meta.submitter == "microsoft.com"


def test_quirk_15_microsoft_attachment_filename_comes_from_content_disposition() -> None:
    found = find_attachments(parts(microsoft_mail("application/octet-stream")))
    assert [a.filename for a in found] == [
        "microsoft.com!example.com!1778630400!1778716799!134232617934286362.json.gz"
    ]
    assert found[0].content_type == "application/octet-stream"


@pytest.mark.parametrize(
    "filename",
    [
        "google.com!example.com!1704758400!1704844799!001.json.gz",
        "google.com!example.com!1704758400!1704844799.json.gz",  # unique part left out
        "google.com!example.com!1704758400!1704844799.json",
    ],
)
def test_quirk_16_report_file_names_with_and_without_unique_part(filename: str) -> None:
    data = GZ if filename.endswith(".gz") else REPORT
    part = attachment_part(data, content_type="application/x-tlsrpt", filename=filename)
    result = extract(raw_email(text_part(), part))
    report = only_report(result)
    assert report.report_id == "mime-1"
    assert report.warnings == ()


def test_quirk_16_file_name_disagreeing_with_the_body_does_not_matter() -> None:
    # §5.6: the body is authoritative; the name says 2017 and another domain
    part = attachment_part(
        GZ, filename="other.example!elsewhere.example!1494345600!1494431999.json.gz"
    )
    report = only_report(extract(raw_email(text_part(), part)))
    assert report.policies[0].policy_domain == "example.com"
    assert report.date_range_start.year == 2024


MAIL_RU_REPORT = {
    "contact-info": "tls_support@corp.mail.ru",
    "date-range": {
        "end-datetime": "2024-02-23T00:00:00Z",
        "start-datetime": "2024-02-22T00:00:00Z",
    },
    "organization-name": "Mail.ru",
    "policies": [
        {
            "failure-details": [
                {
                    "failed-session-count": 1,
                    "failure-reason-code": "bad https response code: 404",
                    "result-type": "sts-policy-fetch-error",
                },
                {
                    "failed-session-count": 1,
                    "failure-reason-code": "bad https response code: 500",
                    "result-type": "sts-policy-fetch-error",
                },
            ],
            "policy": {"policy-domain": "example.com", "policy-type": "sts"},
            "summary": {"total-failure-session-count": 1, "total-successful-session-count": 0},
        }
    ],
    "report-id": "b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru",
}


def mail_ru_mail(*, close_boundary: bool = False) -> bytes:
    return raw_email(
        text_part("This is an aggregate TLS report from mail.ru"),
        attachment_part(
            gzip.compress(to_json(MAIL_RU_REPORT)),
            filename="mail.ru!example.com!1708560000!1708646400!b28254de.json.gz",
        ),
        headers=[
            "DKIM-Signature: v=1; a=rsa-sha256; d=corp.mail.ru; s=mail;\n"
            "\th=From:Subject:Message-ID:To:Date; bh=AAAA; b=BBBB",
            "From: tls_support@corp.mail.ru",
            "To: tlsrpt@example.com",
            "Subject: Report Domain: example.com Submitter: mail.ru\n"
            " Report-ID: <b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru>",
            "TLS-Report-Domain: example.com",
            "TLS-Report-Submitter: mail.ru",
            "Message-ID: <b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru>",
        ],
        content_type=f'multipart/report; report-type="tlsrpt"; boundary="{BOUNDARY}"',
        crlf=True,
        close_boundary=close_boundary,
    )


def test_quirk_17_mail_ru_crlf_without_closing_boundary() -> None:
    raw = mail_ru_mail()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert not raw.rstrip().endswith(b"--")
    result = extract(raw)
    report = only_report(result)
    assert report.organization_name == "Mail.ru"
    assert report.report_id == "b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru"
    assert report.total_failure_session_count == 1
    assert result.warnings == ("mime-close-boundary-missing",)
    assert report.warnings == (
        "policy-string-missing",
        "failure-count-mismatch",
        "mime-close-boundary-missing",
    )
    assert result.meta.subject == (
        "Report Domain: example.com Submitter: mail.ru "
        "Report-ID: <b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru>"
    )


def test_quirk_17_crlf_with_closing_boundary_has_no_structure_warning() -> None:
    result = extract(mail_ru_mail(close_boundary=True))
    report = only_report(result)
    assert result.warnings == ()
    assert "mime-close-boundary-missing" not in report.warnings


def test_quirk_17_missing_closing_boundary_of_a_nested_report_is_flagged() -> None:
    inner = Part(
        ['Content-Type: multipart/report; report-type=tlsrpt; boundary="IN"'],
        "--IN\nContent-Type: text/plain\n\nreport\n"
        "--IN\nContent-Type: application/tlsrpt+gzip\nContent-Transfer-Encoding: base64\n\n"
        f"{b64_lines(GZ)}\n",
    )
    raw = raw_email(inner, content_type='multipart/mixed; boundary="OUT"', boundary="OUT")
    assert raw.rstrip().endswith(b"--OUT--")
    result = extract(raw)
    report = only_report(result)
    assert report.report_id == "mime-1"
    assert result.warnings == ("not-multipart-report", "mime-close-boundary-missing")


def test_quirk_18_trailing_bytes_after_the_gzip_attachment_do_not_lose_the_report() -> None:
    data = gzip_member(REPORT, os_byte=3, xfl=2) + b"\x00\x00\x00\x00trailer"
    report = only_report(extract(raw_email(text_part(), attachment_part(data))))
    assert report.report_id == "mime-1"
    assert report.warnings == ("gzip-trailing-data",)


def test_quirk_19_report_headers_are_read_into_mail_meta() -> None:
    raw = raw_email(
        text_part(),
        attachment_part(GZ),
        headers=[
            "From: TLS Reporting <noreply-smtp-tls-reporting@google.com>",
            "Subject: Report Domain: Example.COM Submitter: google.com Report-ID: <x@google.com>",
            "Message-ID: <abc@google.com>",
            "TLS-Report-Domain: <Example.COM.>",
            "tls-report-submitter:   Google.com  ",
        ],
    )
    result = extract(raw)
    assert result.meta.report_domain == "example.com"
    assert result.meta.submitter == "google.com"
    assert result.meta.from_ == "TLS Reporting <noreply-smtp-tls-reporting@google.com>"
    assert result.meta.message_id == "<abc@google.com>"
    assert result.warnings == ()


def test_quirk_19_mail_ru_submitter_differs_from_the_contact_domain_and_both_are_kept() -> None:
    result = extract(mail_ru_mail(close_boundary=True))
    report = only_report(result)
    assert result.meta.submitter == "mail.ru"
    assert result.meta.report_domain == "example.com"
    assert report.contact_info == "tls_support@corp.mail.ru"


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ("TLS-Report-Domain", ("tls-report-domain-header-missing",)),
        ("TLS-Report-Submitter", ("tls-report-submitter-header-missing",)),
        (
            "TLS-Report-",
            ("tls-report-domain-header-missing", "tls-report-submitter-header-missing"),
        ),
    ],
)
def test_quirk_19_missing_report_headers_are_flagged(drop: str, expected: tuple[str, ...]) -> None:
    headers = [
        "From: noreply@reporter.example",
        "Subject: report",
        "TLS-Report-Domain: example.com",
        "TLS-Report-Submitter: reporter.example",
    ]
    kept = [h for h in headers if not h.startswith(drop)]
    result = extract(raw_email(text_part(), attachment_part(GZ), headers=kept))
    report = only_report(result)
    assert result.warnings == expected
    assert report.warnings == expected


def test_quirk_19_header_domain_fills_a_missing_policy_domain() -> None:
    doc = report_dict(no_policy(success=1))
    del doc["policies"][0]["policy"]["policy-domain"]
    result = extract(tlsrpt_email(gzip.compress(to_json(doc)), report_domain="mpi-klsb.mpg.de"))
    report = only_report(result)
    assert report.policies[0].policy_domain == "mpi-klsb.mpg.de"
    assert report.warnings == ("policy-domain-missing", "policy-domain-from-header")


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_quirk_20_folded_subject_is_unfolded(crlf: bool) -> None:
    raw = raw_email(
        text_part(),
        attachment_part(GZ),
        headers=[
            "From: tlsrpt@mail.sender.example.com",
            "Subject: Report Domain: example.net\n"
            "    Submitter: mail.sender.example.com\n"
            "\tReport-ID: <735ff.e317+bf22029@example.net>",
            "TLS-Report-Domain: example.net",
            "TLS-Report-Submitter: mail.sender.example.com",
        ],
        crlf=crlf,
    )
    result = extract(raw)
    assert result.meta.subject == (
        "Report Domain: example.net Submitter: mail.sender.example.com "
        "Report-ID: <735ff.e317+bf22029@example.net>"
    )
    # §5.6: the Subject's Report-ID is not the report's; the body is authoritative (item 7)
    assert only_report(result).report_id == "mime-1"


def test_quirk_20_microsoft_subject_without_angle_brackets() -> None:
    result = extract(microsoft_mail())
    assert result.meta.subject == (
        "Report Domain: example.com Submitter: microsoft.com "
        "Report-ID: 134232617934286362+example.com"
    )


def test_quirk_07_subject_report_id_may_differ_from_the_json_one() -> None:
    subject = (
        "Report Domain: example.com Submitter: google.com "
        "Report-ID: <2024.01.09T00.00.00Z+example.com@google.com>"
    )
    result = extract(tlsrpt_email(GZ, subject=subject))
    report = only_report(result)
    assert result.meta.subject == subject
    assert report.report_id == "mime-1"
    assert report.dedup_key[1] == "mime-1"


def test_encoded_word_subject_is_decoded() -> None:
    raw = raw_email(
        text_part(),
        attachment_part(GZ),
        headers=[
            "From: =?utf-8?q?Rapports_TLS?= <tls@reporter.example>",
            "Subject: =?utf-8?q?Report_Domain=3A_b=C3=BCcher=2Eexample?=\n"
            " =?utf-8?q?_Submitter=3A_reporter=2Eexample?=",
            "TLS-Report-Domain: xn--bcher-kva.example",
            "TLS-Report-Submitter: reporter.example",
        ],
    )
    result = extract(raw)
    assert result.meta.subject == "Report Domain: bücher.example Submitter: reporter.example"
    assert result.meta.from_ == "Rapports TLS <tls@reporter.example>"
    assert result.meta.report_domain == "xn--bcher-kva.example"


def test_raw_utf8_headers_are_read_as_utf8() -> None:
    # RFC 6532 allows UTF-8 in header fields; they must not turn into U+FFFD
    raw = raw_email(
        text_part(),
        attachment_part(GZ),
        headers=[
            "From: Zoë <tls@reporter.example>",
            "Subject: Report Domain: bücher.example Submitter: reporter.example",
            "TLS-Report-Domain: Bücher.Example",
            "TLS-Report-Submitter: reporter.example",
        ],
    )
    result = extract(raw)
    assert result.meta.from_ == "Zoë <tls@reporter.example>"
    assert result.meta.subject == "Report Domain: bücher.example Submitter: reporter.example"
    assert result.meta.report_domain == "xn--bcher-kva.example"  # one form: names.to_ascii
    assert only_report(result).report_id == "mime-1"


def test_mail_meta_of_parsed_headers() -> None:
    assert mail_meta(parts(b"Subject: hello\r\n\r\nbody\r\n")) == MailMeta(subject="hello")


def test_submitter_unrelated_to_contact_info_is_flagged() -> None:
    body = json.dumps(report_dict(contact="tlsrpt@other.example")).encode()
    raw = (
        b"TLS-Report-Domain: example.com\r\nTLS-Report-Submitter: reporter.example\r\n"
        b"Content-Type: application/tlsrpt+json\r\n\r\n" + body + b"\r\n"
    )
    assert "submitter-contact-mismatch" in only_report(extract(raw)).warnings
    related = raw.replace(b"other.example", b"corp.reporter.example")
    assert "submitter-contact-mismatch" not in only_report(extract(related)).warnings


def test_attachments_of_one_message_share_the_decompression_limit() -> None:
    limit = len(REPORT) + len(REPORT) // 2
    result = extract(tlsrpt_email(GZ, GZ, filenames=["a.json.gz", "b.json.gz"]), limit=limit)
    assert len(result.reports) == 1
    left = limit - len(REPORT)
    assert result.errors == (
        f"attachment b.json.gz: gzip data decompresses to more than the {left}-byte limit"
        " (bomb refused)",
    )


def test_only_the_first_report_attachments_are_read() -> None:
    from tlsrpt_lmtp.core.mime import MAX_REPORT_ATTACHMENTS

    count = MAX_REPORT_ATTACHMENTS + 3
    result = extract(tlsrpt_email(*[GZ] * count))
    assert len(result.reports) == MAX_REPORT_ATTACHMENTS
    assert result.errors == (
        f"{count} report attachments: only the first {MAX_REPORT_ATTACHMENTS} were read",
    )
