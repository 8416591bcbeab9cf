"""One domain-name rule everywhere (tlsrpt_lmtp.core.names): UTS 46 through ``idna`` and relaxed
alignment by the Public Suffix List; then the same name through every place that takes one."""

from __future__ import annotations

import pytest

from tests.support.factories import no_policy, report_dict, sts_policy, to_json
from tlsrpt_lmtp.alerts.config import parse_alerts
from tlsrpt_lmtp.check.cli import main as check_main
from tlsrpt_lmtp.core import names
from tlsrpt_lmtp.core.events import submitter_of
from tlsrpt_lmtp.core.mime import extract
from tlsrpt_lmtp.core.model import MailMeta
from tlsrpt_lmtp.core.report import parse_report
from tlsrpt_lmtp.ingest.dkim import aligned as dkim_aligned
from tlsrpt_lmtp.sts.domain import policy_domain
from tlsrpt_lmtp.sts.policy import mx_matches, parse_policy
from tlsrpt_lmtp.views.period import normalise_domain

STRASSE = "xn--strae-oqa.de"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("straße.de", STRASSE),  # IDNA 2008: ß is kept (IDNA 2003 made it strasse.de)
        ("Straße.DE.", STRASSE),  # upper case, the root's dot
        ("  STRASSE.de ", "strasse.de"),  # another domain, not the same one
        (STRASSE, STRASSE),
        ("XN--STRAE-OQA.DE", STRASSE),
        ("Example.COM.", "example.com"),
        (
            "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0e\uff43\uff4f\uff4d",
            "example.com",
        ),  # full-width letters and dot (UTS 46 mapping)
        ("münchen.de。", "xn--mnchen-3ya.de"),  # ideographic full stop as the root
        ("foo.рф", "foo.xn--p1ai"),  # IDN TLD
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("r3--sn-abc.googlevideo.com", "r3--sn-abc.googlevideo.com"),  # LDH, though not IDNA
        ("localhost", "localhost"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
        # not host names
        ("", None),
        (".", None),
        ("example.com..", None),
        ("a..example", None),
        ("a_b.example.com", None),
        ("-a.example", None),
        ("a-.example", None),
        ("exa mple.com", None),
        ("a" * 64 + ".example", None),  # label over 63 octets
        (".".join(["abcdefghi"] * 26), None),  # 259 octets
        ("xn--zz.example", None),  # not Punycode of a valid U-label
        ("xn--ab--cd.example", None),
        ("ex\u200dample.com", None),  # ZWJ outside its context (CONTEXTJ)
        ("\u0661\u06f1.example", None),  # Arabic-Indic digits of both kinds mixed (CONTEXTO)
        ("ä" * 70 + ".test", None),  # the A-label would be over 63 octets
        ("*.example.com", None),  # a wildcard only where asked for
        ("example.com\x00", None),
        ("a." * 600 + "com", None),  # over MAX_INPUT: refused before any work
    ],
)
def test_to_ascii(name: str, expected: str | None) -> None:
    assert names.to_ascii(name) == expected


def test_to_ascii_wildcard_patterns() -> None:
    assert names.to_ascii("*.Mail.Straße.de.", wildcard=True) == f"*.mail.{STRASSE}"
    assert names.to_ascii("*.example.com", wildcard=True) == "*.example.com"
    assert names.to_ascii("a.*.example.com", wildcard=True) is None
    assert names.to_ascii("*", wildcard=True) is None


def test_canonical_keeps_invalid_names_comparable() -> None:
    assert names.canonical("Straße.DE.") == STRASSE
    assert names.canonical(" A_B.Example.COM. ") == "a_b.example.com"
    assert names.canonical("ÄÄ" * 40 + ".TEST") == "ää" * 40 + ".test"
    assert names.canonical(".") == ""


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        (STRASSE, "straße.de"),
        ("XN--STRAE-OQA.DE.", "straße.de"),
        ("foo.xn--p1ai", "foo.рф"),
        ("*.mail.xn--strae-oqa.de", "*.mail.straße.de"),
        ("example.com", "example.com"),
        ("xn--zz.example", "xn--zz.example"),  # not decodable: shown as given
        ("a_b.example", "a_b.example"),
    ],
)
def test_to_unicode(name: str, shown: str) -> None:
    assert names.to_unicode(name) == shown


@pytest.mark.parametrize(
    ("name", "org"),
    [
        ("mail.google.com", "google.com"),
        ("google.com", "google.com"),
        ("a.b.evil.co.uk", "evil.co.uk"),
        ("co.uk", None),  # a public suffix has no organizational domain
        ("attacker.github.io", "attacker.github.io"),  # private section of the list
        ("github.io", None),
        ("com", None),
        ("mx.straße.de", STRASSE),
        ("www.例え.テスト", "xn--r8jz45g.xn--zckzah"),
        ("x.foo.рф", "foo.xn--p1ai"),
        ("MAIL.Google.COM.", "google.com"),
        ("a.b.unlisted-tld-zz", "b.unlisted-tld-zz"),  # unknown TLD: the "*" rule
        ("a_b.example.com", None),
    ],
)
def test_organizational_domain(name: str, org: str | None) -> None:
    assert names.organizational_domain(name) == org


ALIGNMENT = [
    ("google.com", "google.com", True),
    ("mail.google.com", "google.com", True),
    ("Google.COM.", "google.com", True),
    ("corp.mail.ru", "mail.ru", True),
    ("a.example.com", "b.example.com", True),  # relaxed: same organizational domain
    ("straße.de", STRASSE, True),
    ("mx.Straße.DE.", "xn--strae-oqa.de", True),
    ("straße.de", "strasse.de", False),  # IDNA 2003 would have made these one name
    ("evil.co.uk", "co.uk", False),
    ("co.uk", "evil.co.uk", False),
    ("evil.co.uk", "victim.co.uk", False),
    ("attacker.github.io", "github.io", False),
    ("attacker.github.io", "victim.github.io", False),
    ("co.uk", "co.uk", True),  # only the suffix's operator can sign as it
    ("ru", "mail.ru", False),
    ("notmail.ru", "mail.ru", False),
    ("example.net", "example.com", False),
    ("a_b.example.com", "example.com", False),  # an invalid name aligns with nothing
    ("", "example.com", False),
    ("example.com", None, False),
    (None, "example.com", False),
]


@pytest.mark.parametrize(("a", "b", "expected"), ALIGNMENT)
def test_aligned(a: str | None, b: str | None, expected: bool) -> None:
    assert names.aligned(a, b) is expected
    assert names.aligned(b, a) is expected


@pytest.mark.parametrize(("a", "b", "expected"), ALIGNMENT)
def test_dkim_alignment_is_the_names_rule(a: str | None, b: str | None, expected: bool) -> None:
    assert dkim_aligned(a, b) is expected


def test_dkim_alignment_takes_the_submitter_header_in_brackets() -> None:
    assert dkim_aligned("mail.google.com", " <google.com> ")
    assert not dkim_aligned("evil.co.uk", "<co.uk>")


def test_overlong_input_is_refused_before_mapping() -> None:
    # UTS 46 deletes soft hyphens, so without the input bound this would be a valid name
    assert names.to_ascii("\u00ad" * 900 + "example.com") == "example.com"
    assert names.to_ascii("\u00ad" * (names.MAX_INPUT + 1) + "example.com") is None
    assert names.organizational_domain("a." * 5000 + "com") is None
    assert not names.aligned("a." * 5000 + "example.com", "example.com")


# --- the same name through every place that takes one ---------------------------------------


def test_report_policy_domains_mx_hosts_and_details() -> None:
    doc = report_dict(
        sts_policy("Straße.DE.", mx=["MX1.straße.de.", "*.Mail.Straße.de"]),
        no_policy("foo.рф"),
    )
    doc["policies"][0]["failure-details"] = [
        {
            "result-type": "certificate-expired",
            "receiving-mx-hostname": "MX1.Straße.de.",
            "failed-session-count": 1,
        }
    ]
    report = parse_report(to_json(doc))
    sts, other = report.policies
    assert sts.policy_domain == STRASSE
    assert sts.mx_host == (f"mx1.{STRASSE}", f"*.mail.{STRASSE}")
    assert sts.failure_details[0].receiving_mx_hostname == f"mx1.{STRASSE}"
    assert other.policy_domain == "foo.xn--p1ai"
    assert "policy-domain-not-a-label" in report.warnings


def test_report_from_header_domain_and_invalid_policy_domain() -> None:
    doc = report_dict(no_policy(""))
    report = parse_report(to_json(doc), header_domain="straße.de")
    assert report.policies[0].policy_domain == STRASSE
    bad = parse_report(to_json(report_dict(no_policy("Bad_Name.Example."))))
    assert bad.policies[0].policy_domain == "bad_name.example"
    assert bad.warnings == ("policy-domain-invalid",)


def test_summary_domain_filter_matches_what_reports_store() -> None:
    stored = parse_report(to_json(report_dict(no_policy("straße.de")))).policies[0]
    for typed in (
        "straße.de",
        "Straße.DE.",
        STRASSE,
        "\uff33\uff34\uff32\uff21ß\uff25\uff0e\uff24\uff25",
    ):
        assert normalise_domain(typed) == stored.policy_domain == STRASSE
    assert normalise_domain("strasse.de") != STRASSE
    invalid = parse_report(to_json(report_dict(no_policy("A_B.example")))).policies[0]
    assert normalise_domain("a_b.Example.") == invalid.policy_domain


def test_policy_daemon_lookup_keys() -> None:
    assert policy_domain("straße.de") == STRASSE
    assert policy_domain("Straße.DE.") == STRASSE
    assert policy_domain("[mx.straße.de]:25") == f"mx.{STRASSE}"
    assert policy_domain("strasse.de") == "strasse.de"
    assert policy_domain("a_b.de") is None
    policy = parse_policy(
        "version: STSv1\nmode: enforce\nmx: *.Straße.de\nmax_age: 86400\n".encode()
    )
    assert policy.mx == (f"*.{STRASSE}",)
    assert mx_matches(policy.mx[0], "MX1.straße.de.")
    assert mx_matches(policy.mx[0], f"mx1.{STRASSE}")
    assert not mx_matches(policy.mx[0], "mx1.strasse.de")


def test_submitter_domains_in_events() -> None:
    report = parse_report(to_json(report_dict(contact="tls@Straße.DE")))
    assert submitter_of(report, MailMeta()) == STRASSE


def test_check_prints_records_for_the_a_label(capsys: pytest.CaptureFixture[str]) -> None:
    rc = check_main(
        [
            "Straße.DE.",
            "--print-records",
            "--rua",
            "mailto:tlsrpt@example.net",
            "--mx",
            "MX.straße.de",
            "--mx",
            "*.mail.straße.de",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert f"_smtp._tls.{STRASSE}. 3600 IN TXT" in out
    assert f"\nmx: mx.{STRASSE}\nmx: *.mail.{STRASSE}\n" in out
    assert "strasse" not in out


def test_check_refuses_an_invalid_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_main(["a_b.de"]) == 2
    assert capsys.readouterr().err == (
        "tlsrpt-lmtp check: invalid domain: 'a_b.de' is not a valid host name\n"
    )


def test_alerts_ignore_domains_in_the_stored_form() -> None:
    config = parse_alerts({"ignore_domains": ["Straße.DE.", "*.Mail.straße.de"]})
    assert config.ignore_domains == (STRASSE, f"*.mail.{STRASSE}")


def test_mail_headers_and_contact_info_compare_as_a_labels() -> None:
    body = to_json(report_dict(contact="tlsrpt@Reports.Straße.de"))
    raw = (
        "TLS-Report-Domain: Example.COM.\r\nTLS-Report-Submitter: <straße.de>\r\n"
        "Content-Type: application/tlsrpt+json\r\n\r\n"
    ).encode() + body
    result = extract(raw)
    assert result.meta.submitter == STRASSE and result.meta.report_domain == "example.com"
    [report] = result.reports
    assert "submitter-contact-mismatch" not in report.warnings


@pytest.mark.parametrize(
    ("text", "domain"),
    [
        ("smtp-tls-reporting@google.com", "google.com"),
        ("<sts-reporting@Company-X.Example>", "company-x.example"),
        ("Mail.RU", "mail.ru"),  # a header holding a bare domain
        (" <tlsrpt.example.> ", "tlsrpt.example"),
        ("reports@straße.de", "xn--strae-oqa.de"),
        ('odd"local@part@example.net', "example.net"),  # the last "@" counts
        ("https://reports.example/tlsrpt", None),  # no "@" and not a host name
        ("please mail us", None),
        ("", None),
        (None, None),
    ],
)
def test_mail_domain_is_the_one_rule_for_headers_and_contact_info(
    text: str | None, domain: str | None
) -> None:
    assert names.mail_domain(text) == domain
