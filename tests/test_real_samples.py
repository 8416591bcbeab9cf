"""Every real sample in ../shared/samples/real parses to the numbers the file itself holds.

The expected values were read off the files by hand and with jq (the .eml attachments were
taken out with the stdlib email and gzip modules), not produced by this project's parser.
The samples are read in place; they are never copied into the project.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from tests.support.samples import real_sample, shared_dir
from tlsrpt_lmtp.core.mime import extract
from tlsrpt_lmtp.core.model import Report
from tlsrpt_lmtp.core.report import parse_report


class Expected(NamedTuple):
    organization_name: str
    report_id: str
    policies: int
    successful: int
    failure: int


RFC_EXAMPLE = Expected("Company-X", "5065427c-23d3-47ca-b6e0-946ea0e8c4be", 1, 5326, 303)

JSON_SAMPLES: dict[str, Expected] = {
    "dmarc-report-viewer__google.json": Expected(
        "Google Inc.", "2025-05-22T00:00:00Z_foo-bar.io", 1, 1, 0
    ),
    "dmarc-report-viewer__microsoft.json": Expected(
        "Microsoft Corporation", "133925885310113267+random.net", 2, 4, 0
    ),
    "dmarc-report-viewer__no-contact.json": Expected("server.com", "123_456", 1, 1, 0),
    "dmarc-report-viewer__no-policy.json": Expected(
        "Google Inc.", "2025-03-27T00:00:00Z_foo-bar.io", 1, 1, 0
    ),
    "dmarc-report-viewer__no_ip_and_mx.json": Expected(
        "Microsoft Corporation", "1234567890+", 1, 0, 3
    ),
    "dmarc-report-viewer__rfc-example.json": RFC_EXAMPLE,
    "issue__cry-inc-dmarc-report-viewer-57__microsoft_no_sending_ip.json": Expected(
        "Microsoft Corporation", "133944884956529435+", 1, 0, 3
    ),
    "issue__cry-inc-dmarc-report-viewer-71__stalwart_contact_null.json": Expected(
        "refluxstop.de", "1768089600_5665667737528564296", 1, 1, 0
    ),
    "issue__sys4-tlsrpt-reporter-51__postfix_no_policy_domain.json": Expected(
        "sonne.floppy.org", "2025-09-20T00:00:00Z_idx1_mpi-klsb.mpg.de", 1, 1, 0
    ),
    "mail-auth__rpt01.json": RFC_EXAMPLE,
    "mail-auth__rpt02.json": Expected("Google Inc.", "2020-01-01T00:00:00Z_example.com", 1, 23, 1),
    "mail-auth__rpt03.json": Expected("Google Inc.", "2019-04-14T00:00:00Z_example.org", 2, 2, 0),
    "mail-tls-rpt__expected.json": Expected(
        "Google Inc.", "2020-03-02T00:00:00Z_fastmaildmarc.com", 1, 343, 0
    ),
    "mail-tls-rpt__report.json": Expected(
        "Google Inc.", "2020-03-02T00:00:00Z_fastmaildmarc.com", 1, 343, 0
    ),
    "mta-sts-exporter__google.json": Expected(
        "Google Inc.", "2024-02-17T00:00:00Z_example.com", 1, 53, 0
    ),
    "mta-sts-exporter__microsoft-2.json": Expected(
        "Microsoft Corporation", "133561180919336230+example.com", 1, 7, 0
    ),
    "mta-sts-exporter__microsoft.json": Expected(
        "Microsoft Corporation", "133526718584528772+example.com", 1, 18, 0
    ),
    "mta-sts-exporter__rfc-errata-6241.json": RFC_EXAMPLE,
    "mta-sts-exporter__rfc.json": RFC_EXAMPLE,
    "nixis-tls-rpt-monitor__tls-rpt.json": RFC_EXAMPLE,
    "parsedmarc__mail.ru.json": Expected(
        "Mail.ru", "b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru", 1, 0, 1
    ),
    "parsedmarc__rfc8460.json": RFC_EXAMPLE,
    "parsedmarc__smtp_tls.json": Expected(
        "Example Inc.", "2024-01-09T00:00:00Z_example.com", 1, 0, 3
    ),
    "tlsrpt-be__report-2.json": Expected(
        "Example LLC.", "2025-08-04T00:00:00Z_example.org", 1, 13, 0
    ),
    "tlsrpt-be__report.json": Expected("Example Inc.", "report-id-from-report.json", 1, 99, 102),
    "tlsrpt-be__testing.json": Expected(
        "Company-X", "report-id-of-report-over-email-1234", 1, 5326, 303
    ),
}


class ExpectedMail(NamedTuple):
    report: Expected
    report_domain: str
    submitter: str


EML_SAMPLES: dict[str, ExpectedMail] = {
    "mail-auth__rpt01.eml": ExpectedMail(RFC_EXAMPLE, "example.net", "mail.sender.example.com"),
    "mail-auth__rpt02.eml": ExpectedMail(
        Expected("Google Inc.", "2020-01-01T00:00:00Z_example.com", 1, 23, 1),
        "example.net",
        "mail.sender.example.com",
    ),
    "mail-tls-rpt__email.eml": ExpectedMail(
        Expected("Google Inc.", "2020-03-02T00:00:00Z_fastmaildmarc.com", 1, 343, 0),
        "fastmaildmarc.com",
        "google.com",
    ),
    "parsedmarc__google.com_smtp_tls_report.eml": ExpectedMail(
        Expected("Google Inc.", "2024-09-03T00:00:00Z_cardinalhealth.ca", 1, 48, 0),
        "cardinalhealth.ca",
        "google.com",
    ),
    "tlsrpt-be__test.eml": ExpectedMail(RFC_EXAMPLE, "example.net", "mail.sender.example.com"),
    "tlsrpt-digest__tlsrpt_failure.eml": ExpectedMail(
        Expected("Google Inc.", "2026-02-08T00:00:00Z_example.com", 1, 4523, 2),
        "example.com",
        "google.com",
    ),
    "tlsrpt-digest__tlsrpt_success_google_1.eml": ExpectedMail(
        Expected("Google Inc.", "2026-05-11T00:00:00Z_example.com", 1, 1, 0),
        "example.com",
        "google.com",
    ),
    "tlsrpt-digest__tlsrpt_success_google_2.eml": ExpectedMail(
        Expected("Google Inc.", "2026-05-12T00:00:00Z_example.com", 1, 4, 0),
        "example.com",
        "google.com",
    ),
    "tlsrpt-digest__tlsrpt_success_microsoft.eml": ExpectedMail(
        Expected("Microsoft Corporation", "134232617934286362+example.com", 1, 2, 0),
        "example.com",
        "microsoft.com",
    ),
}

NOT_REPORTS = ("PROVENANCE.md",)


def observed(report: Report) -> Expected:
    return Expected(
        report.organization_name,
        report.report_id,
        len(report.policies),
        report.total_successful_session_count,
        report.total_failure_session_count,
    )


def test_the_tables_cover_every_file_in_the_samples_directory() -> None:
    real = shared_dir() / "samples" / "real"
    if not real.is_dir():
        pytest.skip(f"shared samples not found at {real}")
    on_disk = {p.name for p in real.iterdir() if p.is_file()}
    listed = set(JSON_SAMPLES) | set(EML_SAMPLES) | set(NOT_REPORTS)
    assert on_disk == listed


@pytest.mark.parametrize("name", sorted(JSON_SAMPLES))
def test_json_sample_parses_with_the_right_totals(name: str) -> None:
    body = real_sample(name).read_bytes()
    assert observed(parse_report(body)) == JSON_SAMPLES[name]


@pytest.mark.parametrize("name", sorted(JSON_SAMPLES))
def test_json_sample_as_a_bare_file_is_found_by_extract(name: str) -> None:
    result = extract(real_sample(name).read_bytes())
    assert result.errors == ()
    assert [observed(r) for r in result.reports] == [JSON_SAMPLES[name]]


@pytest.mark.parametrize("name", sorted(EML_SAMPLES))
def test_eml_sample_is_found_as_a_report(name: str) -> None:
    result = extract(real_sample(name).read_bytes())
    expected = EML_SAMPLES[name]
    assert result.errors == ()
    assert [observed(r) for r in result.reports] == [expected.report]
    assert result.meta.report_domain == expected.report_domain
    assert result.meta.submitter == expected.submitter
    assert result.meta.subject is not None
    assert result.meta.subject.startswith("Report Domain: ")
    assert "\n" not in result.meta.subject


def _load(name: str) -> bytes:
    return real_sample(name).read_bytes()


def test_sample_quirks_carry_their_warnings() -> None:
    warnings = {name: parse_report(_load(name)).warnings for name in JSON_SAMPLES}
    assert warnings["mta-sts-exporter__microsoft-2.json"] == ("datetime-without-timezone",)
    assert warnings["parsedmarc__mail.ru.json"] == (
        "policy-string-missing",
        "failure-count-mismatch",
    )
    assert warnings["issue__sys4-tlsrpt-reporter-51__postfix_no_policy_domain.json"] == (
        "policy-domain-missing",
    )
    assert warnings["issue__cry-inc-dmarc-report-viewer-71__stalwart_contact_null.json"] == (
        "contact-info-missing",
    )
    assert warnings["dmarc-report-viewer__microsoft.json"] == ("policy-string-json-encoded",)
    assert warnings["mta-sts-exporter__rfc.json"] == ("mx-host-not-array",)
    assert warnings["mail-tls-rpt__expected.json"] == ("mx-host-not-array",)
    assert warnings["mail-auth__rpt03.json"] == (
        "policy-domain-missing",
        "summary-count-missing",
        "policy-type-unknown",
    )
    assert warnings["dmarc-report-viewer__rfc-example.json"] == ()
    assert warnings["tlsrpt-be__report.json"] == ()


def test_sample_details_are_read_exactly() -> None:
    microsoft = parse_report(_load("dmarc-report-viewer__microsoft.json"))
    assert microsoft.policies[1].policy_type == "tlsa"
    assert microsoft.policies[1].policy_string == (
        "3 1 1 6007EEE553E85D8DF007A845D19EC343283D4E416E9A33F9EF3040C8B7C285BC",
        "3 1 1 837C773D54C2E2BD71871A3FC352BE8214D5646CBAE5E3091401A7274717998B",
    )
    mail_ru = parse_report(_load("parsedmarc__mail.ru.json"))
    assert [d.failure_reason_code for d in mail_ru.policies[0].failure_details] == [
        "bad https response code: 404",
        "bad https response code: 500",
    ]
    idn = parse_report(_load("tlsrpt-be__testing.json"))
    assert idn.policies[0].policy_domain == "xn--gpher-jua.test"
    assert idn.policies[0].mx_host == ("*.mail.company-y.example",)


def test_postfix_sample_takes_its_policy_domain_from_the_header() -> None:
    name = "issue__sys4-tlsrpt-reporter-51__postfix_no_policy_domain.json"
    report = parse_report(_load(name), header_domain="mpi-klsb.mpg.de")
    assert report.policies[0].policy_domain == "mpi-klsb.mpg.de"
    assert report.warnings == ("policy-domain-missing", "policy-domain-from-header")


def test_eml_samples_structure_warnings() -> None:
    crlf_unclosed = extract(_load("tlsrpt-be__test.eml"))
    assert crlf_unclosed.warnings == ("mime-close-boundary-missing",)
    microsoft = extract(_load("tlsrpt-digest__tlsrpt_success_microsoft.eml"))
    assert microsoft.warnings == ()
    assert microsoft.meta.subject == (
        "Report Domain: example.com Submitter: microsoft.com "
        "Report-ID: 134232617934286362+example.com"
    )
    folded = extract(_load("mail-auth__rpt01.eml"))
    assert folded.meta.subject == (
        "Report Domain: example.net Submitter: mail.sender.example.com "
        "Report-ID: <735ff.e317+bf22029@example.net>"
    )


def test_provenance_file_is_turned_away_with_a_reason() -> None:
    result = extract(_load("PROVENANCE.md"))
    assert result.reports == ()
    assert result.errors == ("not an email message and not a report file",)


def test_plain_non_report_email_is_turned_away_with_a_reason() -> None:
    raw = (
        b"From: Alice <alice@example.org>\r\n"
        b"To: tlsrpt@example.com\r\n"
        b"Subject: Re: our TLS reports\r\n"
        b"Message-ID: <plain-1@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"\r\n"
        b"Hi, do you get our reports? They should arrive daily.\r\n"
    )
    result = extract(raw)
    assert result.reports == ()
    assert result.errors == ("no report attachment found",)
    assert result.meta.message_id == "<plain-1@example.org>"
