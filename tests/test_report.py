"""parse_report: JSON bytes in, a normalised Report with warning codes out.

Each ``test_quirk_NN_*`` builds the input described by item NN of shared/samples/QUIRKS.md.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.factories import (
    detail,
    first_policy,
    no_policy,
    report_dict,
    sts_policy,
    tlsa_policy,
    to_json,
)
from tlsrpt_lmtp.core.model import FailureDetail, Report
from tlsrpt_lmtp.core.report import KNOWN_RESULT_TYPES, ReportError, parse_report


def parse(doc: Any, *, header_domain: str | None = None) -> Report:
    return parse_report(to_json(doc), header_domain=header_domain)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# the RFC's own shape
# --------------------------------------------------------------------------------------------


def test_rfc_conformant_report_is_read_field_by_field_without_warnings() -> None:
    doc = report_dict(
        sts_policy(
            "company-y.example",
            success=5326,
            failure=303,
            mx=("*.mail.company-y.example",),
            details=[
                detail(
                    "certificate-expired",
                    100,
                    sending_ip="2001:db8:abcd:0012::1",
                    mx="mx1.mail.company-y.example",
                    receiving_ip="203.0.113.55",
                ),
                detail(
                    "starttls-not-supported",
                    200,
                    sending_ip="2001:db8:abcd:0013::1",
                    mx="mx2.mail.company-y.example",
                    receiving_ip="203.0.113.56",
                    **{"additional-information": "https://reports.company-x.example/x"},
                ),
                detail(
                    "validation-failure",
                    3,
                    sending_ip="198.51.100.62",
                    mx="mx-backup.mail.company-y.example",
                    receiving_ip="203.0.113.58",
                    **{
                        "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
                        "receiving-mx-helo": "mx-backup.example",
                    },
                ),
            ],
        ),
        org="Company-X",
        report_id="5065427c-23d3-47ca-b6e0-946ea0e8c4be",
        start="2016-04-01T00:00:00Z",
        end="2016-04-01T23:59:59Z",
        contact="sts-reporting@company-x.example",
    )
    report = parse(doc)

    assert report.warnings == ()
    assert report.organization_name == "Company-X"
    assert report.report_id == "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    assert report.contact_info == "sts-reporting@company-x.example"
    assert report.date_range_start == datetime(2016, 4, 1, 0, 0, 0, tzinfo=UTC)
    assert report.date_range_end == datetime(2016, 4, 1, 23, 59, 59, tzinfo=UTC)
    assert len(report.policies) == 1
    policy = report.policies[0]
    assert policy.policy_type == "sts"
    assert policy.policy_domain == "company-y.example"
    assert policy.policy_string == (
        "version: STSv1",
        "mode: enforce",
        "mx: *.mail.company-y.example",
        "max_age: 86400",
    )
    assert policy.mx_host == ("*.mail.company-y.example",)
    assert policy.total_successful_session_count == 5326
    assert policy.total_failure_session_count == 303
    assert report.total_successful_session_count == 5326
    assert report.total_failure_session_count == 303
    assert [d.failed_session_count for d in policy.failure_details] == [100, 200, 3]
    assert policy.failure_details[1] == FailureDetail(
        result_type="starttls-not-supported",
        sending_mta_ip="2001:db8:abcd:0013::1",
        receiving_mx_hostname="mx2.mail.company-y.example",
        receiving_mx_helo=None,
        receiving_ip="203.0.113.56",
        failed_session_count=200,
        additional_information="https://reports.company-x.example/x",
        failure_reason_code=None,
    )
    last = policy.failure_details[2]
    assert last.receiving_mx_helo == "mx-backup.example"
    assert last.failure_reason_code == "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"


def test_totals_sum_over_policies() -> None:
    report = parse(
        report_dict(
            sts_policy(success=7, failure=2, details=[detail(count=2)]),
            tlsa_policy(success=5, failure=0),
            no_policy("other.example", success=11),
        )
    )
    assert report.total_successful_session_count == 23
    assert report.total_failure_session_count == 2
    assert [p.policy_type for p in report.policies] == ["sts", "tlsa", "no-policy-found"]
    assert report.warnings == ()


# --------------------------------------------------------------------------------------------
# QUIRKS.md items 1-12 (the JSON body)
# --------------------------------------------------------------------------------------------


def test_quirk_01_mx_host_as_list_is_kept_and_normalised() -> None:
    doc = report_dict()
    first_policy(doc)["mx-host"] = ["*.Example.COM.", "mx2.example.com", " "]
    report = parse(doc)
    assert report.policies[0].mx_host == ("*.example.com", "mx2.example.com")
    assert report.warnings == ()


def test_quirk_01_mx_host_as_single_string_is_wrapped_and_flagged() -> None:
    doc = report_dict()
    first_policy(doc)["mx-host"] = "*.mail.company-y.example"
    report = parse(doc)
    assert report.policies[0].mx_host == ("*.mail.company-y.example",)
    assert report.warnings == ("mx-host-not-array",)


def test_quirk_01_mx_host_absent_or_empty_list_gives_no_hosts_and_no_warning() -> None:
    absent = report_dict()
    del first_policy(absent)["mx-host"]
    empty = report_dict()
    first_policy(empty)["mx-host"] = []
    for doc in (absent, empty):
        report = parse(doc)
        assert report.policies[0].mx_host == ()
        assert report.warnings == ()


def test_quirk_01_mx_host_empty_string_gives_no_hosts_and_is_flagged() -> None:
    doc = report_dict(no_policy("fastmaildmarc.com", success=343))
    first_policy(doc)["mx-host"] = ""  # Mail::TLSRPT re-serialisation
    report = parse(doc)
    assert report.policies[0].mx_host == ()
    assert report.policies[0].total_successful_session_count == 343
    assert report.warnings == ("mx-host-not-array",)


def test_quirk_01_mx_host_pattern_key_is_an_alias() -> None:
    doc = report_dict()
    policy = first_policy(doc)
    del policy["mx-host"]
    policy["mx-host-pattern"] = ["*.mail.example.com"]
    report = parse(doc)
    assert report.policies[0].mx_host == ("*.mail.example.com",)
    assert report.warnings == ("mx-host-pattern-key",)


def test_quirk_01_mx_host_of_wrong_type_is_dropped_and_flagged() -> None:
    doc = report_dict()
    first_policy(doc)["mx-host"] = {"pattern": "mx.example.com"}
    report = parse(doc)
    assert report.policies[0].mx_host == ()
    assert report.warnings == ("mx-host-invalid",)


def test_quirk_02_policy_string_absent_for_no_policy_found_is_fine() -> None:
    report = parse(report_dict(no_policy("foo-bar.io", success=1)))
    assert report.policies[0].policy_string == ()
    assert report.policies[0].policy_type == "no-policy-found"
    assert report.warnings == ()


def test_quirk_02_policy_string_absent_for_sts_fetch_error_is_flagged() -> None:
    doc = report_dict(
        sts_policy(
            "xxxxxxxx.xx",
            success=0,
            failure=3,
            details=[{"result-type": "sts-policy-fetch-error", "failed-session-count": 3}],
        )
    )
    policy = first_policy(doc)
    del policy["policy-string"]
    del policy["mx-host"]
    report = parse(doc)
    assert report.policies[0].policy_string == ()
    assert report.policies[0].total_failure_session_count == 3
    assert report.warnings == ("policy-string-missing",)


def test_quirk_02_microsoft_tlsa_json_encoded_policy_string_is_expanded() -> None:
    records = [
        "3 1 1 6007EEE553E85D8DF007A845D19EC343283D4E416E9A33F9EF3040C8B7C285BC",
        "3 1 1 837C773D54C2E2BD71871A3FC352BE8214D5646CBAE5E3091401A7274717998B",
    ]
    doc = report_dict(
        sts_policy("random.net", success=2),
        tlsa_policy("random.net", [json.dumps(records, separators=(",", ":"))], success=2),
    )
    report = parse(doc)
    assert report.policies[1].policy_type == "tlsa"
    assert report.policies[1].policy_string == tuple(records)
    assert report.warnings == ("policy-string-json-encoded",)


def test_quirk_02_sts_lines_without_space_after_colon_are_normalised() -> None:
    doc = report_dict()
    first_policy(doc)["policy-string"] = [
        "version:STSv1",
        "mode:testing",
        "mx:  mx1.example.com",
        "max_age: 86400",
    ]
    report = parse(doc)
    assert report.policies[0].policy_string == (
        "version: STSv1",
        "mode: testing",
        "mx: mx1.example.com",
        "max_age: 86400",
    )
    assert report.warnings == ("policy-string-spacing",)


def test_quirk_02_policy_string_as_bare_string_or_wrong_type() -> None:
    as_string = report_dict(tlsa_policy())
    first_policy(as_string)["policy-string"] = "3 1 1 ABCDEF"
    report = parse(as_string)
    assert report.policies[0].policy_string == ("3 1 1 ABCDEF",)
    assert report.warnings == ("policy-string-not-array",)

    wrong = report_dict(tlsa_policy())
    first_policy(wrong)["policy-string"] = 42
    report = parse(wrong)
    assert report.policies[0].policy_string == ()
    assert report.warnings == ("policy-string-invalid",)


def test_quirk_03_missing_policy_domain_falls_back_to_the_header_and_says_so() -> None:
    # sys4/tlsrpt-reporter#51, as Postfix sends it
    doc = report_dict(
        {
            "summary": {"total-failure-session-count": 0, "total-successful-session-count": 1},
            "policy": {"policy-type": "no-policy-found"},
            "failure-details": [],
        },
        org="sonne.floppy.org",
        contact="smtp-tls-reporting@sonne.floppy.org",
    )
    report = parse(doc, header_domain="mpi-klsb.mpg.de")
    assert report.policies[0].policy_domain == "mpi-klsb.mpg.de"
    assert report.policies[0].failure_details == ()
    assert report.warnings == ("policy-domain-missing", "policy-domain-from-header")


def test_quirk_03_missing_policy_domain_without_header_stays_unknown() -> None:
    doc = report_dict(no_policy())
    del first_policy(doc)["policy-domain"]
    report = parse(doc)
    assert report.policies[0].policy_domain is None
    assert report.policies[0].total_successful_session_count == 5
    assert report.warnings == ("policy-domain-missing",)


def test_quirk_03_dane_policy_domain_may_be_an_mx_host_name() -> None:
    report = parse(report_dict(tlsa_policy("MX1.Mail.Example.COM.")))
    assert report.policies[0].policy_domain == "mx1.mail.example.com"
    assert report.warnings == ()


def test_quirk_03_policy_domain_as_u_label_becomes_an_a_label() -> None:
    report = parse(report_dict(no_policy("göpher.test")))
    assert report.policies[0].policy_domain == "xn--gpher-jua.test"
    assert report.warnings == ("policy-domain-not-a-label",)


def test_quirk_03_unconvertible_policy_domain_is_kept_and_flagged() -> None:
    label = "ä" * 70  # longer than 63 octets as an A-label
    report = parse(report_dict(no_policy(f"{label}.test")))
    assert report.policies[0].policy_domain == f"{label}.test"
    assert report.warnings == ("policy-domain-invalid",)


def test_quirk_04_sts_and_tlsa_for_one_domain_and_two_sts_entries_are_all_kept() -> None:
    doc = report_dict(
        sts_policy("random.net", success=2),
        tlsa_policy("random.net", success=2),
        sts_policy("random.net", success=1, failure=1, details=[detail(count=1)]),
    )
    report = parse(doc)
    assert [(p.policy_type, p.policy_domain) for p in report.policies] == [
        ("sts", "random.net"),
        ("tlsa", "random.net"),
        ("sts", "random.net"),
    ]
    assert report.total_successful_session_count == 5
    assert report.total_failure_session_count == 1
    assert report.warnings == ()


def test_quirk_04_unknown_policy_type_is_data_and_flagged() -> None:
    doc = report_dict(no_policy())
    first_policy(doc)["policy-type"] = "Invalid-Policy-Type"
    report = parse(doc)
    assert report.policies[0].policy_type == "invalid-policy-type"
    assert report.policies[0].total_successful_session_count == 5
    assert report.warnings == ("policy-type-unknown",)


def test_quirk_04_missing_policy_type_or_policy_block() -> None:
    no_type = report_dict(no_policy())
    del first_policy(no_type)["policy-type"]
    report = parse(no_type)
    assert report.policies[0].policy_type == "unknown"
    assert report.warnings == ("policy-type-missing", "policy-type-unknown")

    no_block = report_dict(no_policy(success=9))
    del no_block["policies"][0]["policy"]
    report = parse(no_block)
    assert report.policies[0].policy_type == "unknown"
    assert report.policies[0].policy_domain is None
    assert report.policies[0].total_successful_session_count == 9
    assert report.warnings[0] == "policy-missing"
    assert "policy-domain-missing" in report.warnings


def test_quirk_05_datetime_without_zone_is_utc_and_flagged() -> None:
    doc = report_dict(start="2024-03-26T00:00:00", end="2024-03-26T23:59:59")
    report = parse(doc)
    assert report.date_range_start == datetime(2024, 3, 26, 0, 0, 0, tzinfo=UTC)
    assert report.date_range_end == datetime(2024, 3, 26, 23, 59, 59, tzinfo=UTC)
    assert report.date_range_start.utcoffset() is not None
    assert report.warnings == ("datetime-without-timezone",)


def test_quirk_05_inclusive_and_exclusive_ends_are_both_accepted_as_sent() -> None:
    inclusive = parse(report_dict(end="2024-01-09T23:59:59Z"))
    exclusive = parse(report_dict(end="2024-01-10T00:00:00Z"))
    assert inclusive.date_range_end == utc("2024-01-09T23:59:59")
    assert exclusive.date_range_end == utc("2024-01-10T00:00:00")
    assert inclusive.warnings == exclusive.warnings == ()
    assert inclusive.dedup_key != exclusive.dedup_key


def test_quirk_05_end_before_start_is_kept_and_flagged() -> None:
    report = parse(report_dict(start="2024-01-10T00:00:00Z", end="2024-01-09T00:00:00Z"))
    assert report.date_range_start == utc("2024-01-10T00:00:00")
    assert report.date_range_end == utc("2024-01-09T00:00:00")
    assert report.warnings == ("date-range-reversed",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-09T02:00:00+02:00", "2024-01-09T00:00:00"),
        ("2024-01-08T19:00:00-05:00", "2024-01-09T00:00:00"),
        ("2024-01-09t00:00:00z", "2024-01-09T00:00:00"),
        ("2024-01-09 00:00:00Z", "2024-01-09T00:00:00"),
        ("2024-01-09T00:00:00.000Z", "2024-01-09T00:00:00"),
        (" 2024-01-09T00:00:00Z ", "2024-01-09T00:00:00"),
    ],
)
def test_rfc3339_spellings_and_offsets_normalise_to_utc(text: str, expected: str) -> None:
    report = parse(report_dict(start=text))
    assert report.date_range_start == utc(expected)
    assert report.date_range_start.tzinfo is UTC
    assert report.warnings == ()


def test_quirk_06_null_contact_info_is_kept_as_none_and_flagged() -> None:
    # Stalwart, cry-inc/dmarc-report-viewer#71: organization-name is the customer's domain
    report = parse(report_dict(org="refluxstop.de", contact=None))
    assert report.contact_info is None
    assert report.organization_name == "refluxstop.de"
    assert report.warnings == ("contact-info-missing",)


def test_quirk_06_host_name_as_organization_is_kept_verbatim() -> None:
    report = parse(report_dict(org="sonne.floppy.org"))
    assert report.organization_name == "sonne.floppy.org"
    assert report.warnings == ()


def test_quirk_06_missing_organization_falls_back_to_the_contact_domain() -> None:
    doc = report_dict(contact="TLS Reports <tls_support@Corp.Mail.RU>")
    del doc["organization-name"]
    report = parse(doc)
    assert report.organization_name == "corp.mail.ru"
    assert report.warnings == ("organization-name-missing",)

    neither = report_dict(org="", contact=None)
    report = parse(neither)
    assert report.organization_name == "unknown"
    assert report.warnings == ("contact-info-missing", "organization-name-missing")


def test_quirk_07_report_ids_reused_across_days_stay_distinct_in_the_dedup_key() -> None:
    day1 = parse(report_dict(report_id="same-id", start="2024-01-09T00:00:00Z"))
    day2 = parse(
        report_dict(report_id="same-id", start="2024-01-10T00:00:00Z", end="2024-01-10T23:59:59Z")
    )
    other_org = parse(report_dict(report_id="same-id", org="Other Org"))
    again = parse(report_dict(report_id="same-id", start="2024-01-09T00:00:00Z"))
    assert day1.report_id == day2.report_id == "same-id"
    assert day1.dedup_key == (
        "Example Reporter Inc.",
        "same-id",
        "2024-01-09T00:00:00+00:00",
        "2024-01-09T23:59:59+00:00",
    )
    assert len({day1.dedup_key, day2.dedup_key, other_org.dedup_key}) == 3
    assert again.dedup_key == day1.dedup_key


@pytest.mark.parametrize(
    "report_id",
    [
        "2024-09-03T00:00:00Z_cardinalhealth.ca",  # Google
        "133925885310113267+random.net",  # Microsoft
        "1234567890+",  # Microsoft, anonymised
        "b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru",  # Mail.ru
        "1768089600_5665667737528564296",  # Stalwart
    ],
)
def test_quirk_07_report_id_formats_are_kept_verbatim(report_id: str) -> None:
    report = parse(report_dict(report_id=report_id))
    assert report.report_id == report_id
    assert report.warnings == ()


def test_quirk_08_detail_counts_disagreeing_with_summary_keep_the_summary_and_flag() -> None:
    # Mail.ru: two fetch-error details of 1 each, total-failure-session-count 1
    entry = {
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
    report = parse(report_dict(entry, org="Mail.ru", contact="tls_support@corp.mail.ru"))
    policy = report.policies[0]
    assert policy.total_failure_session_count == 1
    assert sum(d.failed_session_count for d in policy.failure_details) == 2
    assert report.total_failure_session_count == 1
    assert "failure-count-mismatch" in report.warnings
    assert report.warnings == ("policy-string-missing", "failure-count-mismatch")


def test_quirk_08_failures_without_any_details_are_counted() -> None:
    # tlsrpt-be report.json / Microsoft fetch errors: failures, no failure-details
    doc = report_dict(no_policy("xn--gpher-jua.test", success=99))
    doc["policies"][0]["summary"]["total-failure-session-count"] = 102
    report = parse(doc)
    assert report.total_successful_session_count == 99
    assert report.total_failure_session_count == 102
    assert report.policies[0].failure_details == ()
    assert report.warnings == ()


def test_quirk_08_missing_summary_failure_count_is_taken_from_the_details() -> None:
    doc = report_dict(sts_policy(failure=0, details=[detail(count=4), detail(count=3)]))
    del doc["policies"][0]["summary"]["total-failure-session-count"]
    report = parse(doc)
    assert report.total_failure_session_count == 7
    assert report.warnings == ("summary-count-missing",)


def test_quirk_08_missing_summary_counts_without_details_are_zero() -> None:
    # stalwartlabs/mail-auth rpt03: only total-successful-session-count
    doc = report_dict(no_policy(success=1))
    del doc["policies"][0]["summary"]["total-failure-session-count"]
    no_summary = report_dict(no_policy())
    del no_summary["policies"][0]["summary"]
    report = parse(doc)
    assert (report.total_successful_session_count, report.total_failure_session_count) == (1, 0)
    assert report.warnings == ("summary-count-missing",)
    report = parse(no_summary)
    assert (report.total_successful_session_count, report.total_failure_session_count) == (0, 0)
    assert report.warnings == ("summary-missing", "summary-count-missing")


def test_quirk_09_failure_details_absent_or_empty() -> None:
    absent = parse(report_dict(sts_policy()))
    empty = parse(report_dict(sts_policy(details=[])))
    assert absent.policies[0].failure_details == empty.policies[0].failure_details == ()
    assert absent.warnings == empty.warnings == ()


def test_quirk_09_fetch_error_detail_without_ips_or_hosts() -> None:
    doc = report_dict(
        sts_policy(
            success=0,
            failure=3,
            details=[{"result-type": "sts-policy-fetch-error", "failed-session-count": 3}],
        )
    )
    report = parse(doc)
    assert report.policies[0].failure_details == (
        FailureDetail(
            result_type="sts-policy-fetch-error",
            sending_mta_ip=None,
            receiving_mx_hostname=None,
            receiving_mx_helo=None,
            receiving_ip=None,
            failed_session_count=3,
            additional_information=None,
            failure_reason_code=None,
        ),
    )
    assert report.warnings == ()


def test_quirk_09_empty_string_ips_become_none_and_are_flagged() -> None:
    doc = report_dict(
        sts_policy(failure=2, details=[detail(count=2, sending_ip="", receiving_ip="", mx="")])
    )
    found = parse(doc).policies[0].failure_details[0]
    assert found.sending_mta_ip is None
    assert found.receiving_ip is None
    assert found.receiving_mx_hostname is None
    assert found.failed_session_count == 2
    assert parse(doc).warnings == ("empty-ip",)


def test_quirk_09_explicit_nulls_are_none_without_warning() -> None:
    null_detail = {
        "result-type": "validation-failure",
        "sending-mta-ip": None,
        "receiving-mx-hostname": None,
        "receiving-mx-helo": None,
        "receiving-ip": None,
        "failed-session-count": 1,
        "additional-information": None,
        "failure-reason-code": None,
    }
    report = parse(report_dict(sts_policy(failure=1, details=[null_detail])))
    found = report.policies[0].failure_details[0]
    assert (found.sending_mta_ip, found.receiving_mx_hostname, found.receiving_ip) == (
        None,
        None,
        None,
    )
    assert (found.additional_information, found.failure_reason_code) == (None, None)
    assert found.result_type == "validation-failure"
    assert report.warnings == ()


def test_quirk_09_misspelled_keys_are_read_as_the_rfc_keys() -> None:
    raw = {
        "result-type": "starttls-not-supported",
        "sending-mta-ip": "2001:db8::1",
        "receiving-mx-host-name": "MX2.Example.COM.",
        "failed-session-count": 5,
        "additional-info-uri": "https://reports.example/info",
    }
    report = parse(report_dict(sts_policy(failure=5, details=[raw])))
    found = report.policies[0].failure_details[0]
    assert found.receiving_mx_hostname == "mx2.example.com"
    assert found.additional_information == "https://reports.example/info"
    assert report.warnings == (
        "misspelled-key:receiving-mx-host-name",
        "misspelled-key:additional-info-uri",
    )


def test_quirk_09_rfc_key_wins_over_its_misspelling() -> None:
    raw = detail(count=1, mx="right.example.com", **{"receiving-mx-host-name": "wrong.example"})
    report = parse(report_dict(sts_policy(failure=1, details=[raw])))
    assert report.policies[0].failure_details[0].receiving_mx_hostname == "right.example.com"
    assert report.warnings == ("misspelled-key:receiving-mx-host-name",)


def test_quirk_09_malformed_failure_details() -> None:
    as_object = report_dict(sts_policy(failure=2))
    as_object["policies"][0]["failure-details"] = detail(count=2)
    report = parse(as_object)
    assert [d.failed_session_count for d in report.policies[0].failure_details] == [2]
    assert report.warnings == ("failure-details-not-array",)

    as_string = report_dict(sts_policy(failure=2))
    as_string["policies"][0]["failure-details"] = "none"
    report = parse(as_string)
    assert report.policies[0].failure_details == ()
    assert report.policies[0].total_failure_session_count == 2
    assert report.warnings == ("failure-details-invalid",)

    junk_entry = report_dict(sts_policy(failure=2, details=[detail(count=2)]))
    junk_entry["policies"][0]["failure-details"].append("junk")
    report = parse(junk_entry)
    assert len(report.policies[0].failure_details) == 1
    assert report.warnings == ("failure-detail-invalid",)


def test_quirk_09_detail_without_count_or_result_type() -> None:
    raw = {"sending-mta-ip": "192.0.2.1"}
    report = parse(report_dict(sts_policy(failure=1, details=[raw])))
    found = report.policies[0].failure_details[0]
    assert found.result_type == "unknown"
    assert found.failed_session_count == 0
    assert report.policies[0].total_failure_session_count == 1
    assert report.warnings == (
        "result-type-missing",
        "result-type-unknown",
        "failed-session-count-missing",
        "failure-count-mismatch",
    )


@pytest.mark.parametrize(
    "code",
    [
        "x509: certificate signed by unknown authority",  # Go
        "X509_V_ERR_CERT_HAS_EXPIRED",  # OpenSSL name
        "alert-42-bad-certificate",
        "bad https response code: 404",  # Mail.ru
    ],
)
def test_quirk_10_failure_reason_code_is_free_text_kept_verbatim(code: str) -> None:
    raw = detail("validation-failure", 1, **{"failure-reason-code": code})
    report = parse(report_dict(sts_policy(failure=1, details=[raw])))
    assert report.policies[0].failure_details[0].failure_reason_code == code
    assert report.warnings == ()


@pytest.mark.parametrize(
    "result_type",
    [
        "certificate-expired",
        "certificate-host-mismatch",
        "starttls-not-supported",
        "validation-failure",
        "sts-policy-fetch-error",
    ],
)
def test_quirk_11_result_types_seen_in_the_wild_are_known(result_type: str) -> None:
    report = parse(report_dict(sts_policy(failure=1, details=[detail(result_type, 1)])))
    assert report.policies[0].failure_details[0].result_type == result_type
    assert report.warnings == ()


def test_quirk_11_iana_registry_has_eleven_result_types() -> None:
    assert len(KNOWN_RESULT_TYPES) == 11
    assert {"dane-required", "dnssec-invalid", "tlsa-invalid", "sts-webpki-invalid"} <= (
        KNOWN_RESULT_TYPES
    )


def test_quirk_11_unknown_result_type_is_data_and_flagged() -> None:
    raw = detail("Certificate-Revoked", 4)
    report = parse(report_dict(sts_policy(failure=4, details=[raw])))
    found = report.policies[0].failure_details[0]
    assert found.result_type == "certificate-revoked"
    assert found.failed_session_count == 4
    assert report.total_failure_session_count == 4
    assert report.warnings == ("result-type-unknown",)


def test_quirk_12_utf8_bom_before_the_json_is_skipped_and_flagged() -> None:
    report = parse_report(b"\xef\xbb\xbf" + to_json(report_dict(report_id="bom-1")))
    assert report.report_id == "bom-1"
    assert report.total_successful_session_count == 100
    assert report.warnings == ("utf8-bom",)


@pytest.mark.parametrize(
    ("raw", "expected", "code"),
    [
        ("5326", 5326, "count-not-integer"),
        (" 12 ", 12, "count-not-integer"),
        (7.0, 7, "count-not-integer"),
        (True, 1, "count-not-integer"),
        (-3, 0, "count-negative"),
        ("-3", 0, "count-invalid"),
        ("lots", 0, "count-invalid"),
        (2.5, 0, "count-invalid"),
        ([1], 0, "count-invalid"),
    ],
)
def test_quirk_12_non_integer_counts_do_not_crash(raw: object, expected: int, code: str) -> None:
    doc = report_dict()
    doc["policies"][0]["summary"]["total-successful-session-count"] = raw
    report = parse(doc)
    assert report.policies[0].total_successful_session_count == expected
    assert report.warnings == (code,)


def test_quirk_12_string_counts_in_failure_details() -> None:
    doc = report_dict(sts_policy(failure=3, details=[detail(count=3)]))
    doc["policies"][0]["summary"]["total-failure-session-count"] = "3"
    doc["policies"][0]["failure-details"][0]["failed-session-count"] = "3"
    report = parse(doc)
    assert report.total_failure_session_count == 3
    assert report.policies[0].failure_details[0].failed_session_count == 3
    assert report.warnings == ("count-not-integer",)


# --------------------------------------------------------------------------------------------
# other deviations and refusals
# --------------------------------------------------------------------------------------------


def test_policies_as_a_single_object_is_wrapped_and_flagged() -> None:
    doc = report_dict()
    doc["policies"] = sts_policy(success=4)
    report = parse(doc)
    assert len(report.policies) == 1
    assert report.total_successful_session_count == 4
    assert report.warnings == ("policies-not-array",)


def test_empty_policies_array_is_an_empty_report() -> None:
    doc = report_dict()
    doc["policies"] = []
    report = parse(doc)
    assert report.policies == ()
    assert report.total_successful_session_count == 0
    assert report.warnings == ()


def test_warnings_are_unique_and_in_first_seen_order() -> None:
    doc = report_dict(
        tlsa_policy("a.example"),
        tlsa_policy("b.example"),
        start="2024-01-09T00:00:00",
        end="2024-01-09T23:59:59",
    )
    doc["policies"][0]["policy"]["policy-string"] = "3 1 1 AA"
    doc["policies"][1]["policy"]["policy-string"] = "3 1 1 BB"
    report = parse(doc)
    assert report.warnings == ("datetime-without-timezone", "policy-string-not-array")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not JSON"),
        (b"<html>not json</html>", "not JSON"),
        (b'{"report-id": "x", ', "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b"[]", "JSON list, not an object"),
        (b'"report"', "JSON str, not an object"),
    ],
)
def test_body_that_is_not_a_report_object_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(ReportError, match=reason):
        parse_report(body)


def _without(path: tuple[str, ...]) -> dict[str, Any]:
    doc = report_dict()
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return doc


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (_without(("report-id",)), "no report-id"),
        ({**report_dict(), "report-id": ""}, "no report-id"),
        ({**report_dict(), "report-id": {"id": 1}}, "no report-id"),
        (_without(("date-range",)), "no date-range"),
        (_without(("date-range", "start-datetime")), "no start-datetime"),
        (_without(("date-range", "end-datetime")), "no end-datetime"),
        (report_dict(start="yesterday"), "start-datetime is not an RFC 3339 date-time"),
        (report_dict(end="2024-13-45T00:00:00Z"), "end-datetime is not an RFC 3339"),
        (_without(("policies",)), "no policies array"),
        ({**report_dict(), "policies": "sts"}, "no policies array"),
        ({**report_dict(), "policies": ["sts"]}, "policies entry is not an object"),
    ],
)
def test_report_that_cannot_be_identified_is_refused(doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(ReportError, match=reason):
        parse(doc)


def test_report_error_is_a_value_error_with_a_readable_message() -> None:
    with pytest.raises(ValueError, match=r"^report has no report-id$"):
        parse(_without(("report-id",)))
