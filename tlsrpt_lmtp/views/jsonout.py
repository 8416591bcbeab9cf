"""The JSON view: the Summary as one JSON document (pure). Field names are stable.

Domains stay A-labels here (as stored and in the events); the other views show U-labels.
Every domain is listed (the index); the lists bounded by ``--top`` carry a ``*_rest`` object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tlsrpt_lmtp.core.events import iso
from tlsrpt_lmtp.views.model import Count, DomainSeries, Rest, Summary

SCHEMA = 2
# json.dumps escapes C0 but, with ensure_ascii=False, passes C1 and Unicode separators raw
_RAW = re.compile("[\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def _iso(dt: datetime | None) -> str | None:
    return iso(dt) if dt is not None else None


def _counts(counts: Sequence[Count]) -> list[dict[str, Any]]:
    return [
        {"result_type": c.result_type, "failed_sessions": c.sessions, "reports": c.reports}
        for c in counts
    ]


def _rest(rest: Rest) -> dict[str, int]:
    return {"count": rest.count, "failed_sessions": rest.failed}


def _series(series: DomainSeries) -> dict[str, Any]:
    return {
        "policy_domain": None if series.domain in ("", "*") else series.domain,
        "days": [
            {
                "date": p.day.isoformat(),
                "reports": p.reports,
                "sessions": p.sessions,
                "successful_sessions": p.successful,
                "failed_sessions": p.failed,
                "success_rate": p.success_rate,
            }
            for p in series.points
        ],
    }


def _result(s: Summary) -> dict[str, Any]:
    detailed = {series.domain for series in s.daily}
    return {
        "domains": [
            {
                "policy_domain": d.domain or None,
                "policies": list(d.policies),
                "reports": d.reports,
                "organizations": d.organizations,
                "sessions": d.sessions,
                "successful_sessions": d.successful,
                "failed_sessions": d.failed,
                "success_rate": d.success_rate,
                "unattributed_failed_sessions": d.unattributed,
                "detailed_beyond_summary": d.over_detailed,
                "first": _iso(d.first),
                "last": _iso(d.last),
                **({"result_types": _counts(d.result_types)} if d.domain in detailed else {}),
            }
            for d in s.domains
        ],
        "policies": [
            {
                "policy_domain": g.domain or None,
                "policy_type": g.policy_type,
                "policy_mode": g.mode or None,
                "reports": g.reports,
                "sessions": g.sessions,
                "successful_sessions": g.successful,
                "failed_sessions": g.failed,
                "success_rate": g.success_rate,
                "unattributed_failed_sessions": g.unattributed,
                "detailed_beyond_summary": g.over_detailed,
            }
            for g in s.groups
        ],
    }


def _source(s: Summary) -> dict[str, Any]:
    return {
        "organizations": [
            {
                "organization_name": o.organization,
                "policy_domains": o.domains,
                "reports": o.reports,
                "sessions": o.sessions,
                "successful_sessions": o.successful,
                "failed_sessions": o.failed,
                "success_rate": o.success_rate,
                "unattributed_failed_sessions": o.unattributed,
                "detailed_beyond_summary": o.over_detailed,
                "first": _iso(o.first),
                "last": _iso(o.last),
            }
            for o in s.orgs
        ],
        "sources": [
            {
                "organization_name": x.organization,
                "sending_mta_ip": x.sending_ip or None,
                "receiving_mx": x.receiving_mx or None,
                "failed_sessions": x.failed,
                "reports": x.reports,
                "result_types": _counts(x.result_types),
                "first": _iso(x.first),
                "last": _iso(x.last),
            }
            for x in s.sources
        ],
        "sources_rest": _rest(s.sources_rest),
    }


def to_dict(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> dict[str, Any]:
    s, t = summary, summary.totals
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": iso(s.generated_at),
        "period": {"from": _iso(s.period.start), "to": _iso(s.period.end)},
        "policy_domain": s.domain,
        "top": s.top,
        "totals": {
            "reports": t.reports,
            "organizations": t.organizations,
            "policy_domains": t.domains,
            "sessions": t.sessions,
            "successful_sessions": t.successful,
            "failed_sessions": t.failed,
            "success_rate": t.success_rate,
            "first": _iso(t.first),
            "last": _iso(t.last),
        },
        "findings": [
            {
                "kind": f.kind,
                "severity": f.severity,
                "policy_domain": f.domain,
                "organization_name": f.organization,
                "since": f.since.isoformat() if f.since else None,
                "message": f.message,
            }
            for f in s.findings
        ],
    }
    if "result" in views:
        doc |= _result(s)
    if "source" in views:
        doc |= _source(s)
    doc["daily"] = [_series(x) for x in s.daily]
    doc["daily_all"] = _series(s.overall)["days"]
    if s.domain is not None:
        doc["reports"] = [
            {
                "organization_name": r.organization,
                "report_id": r.report_id,
                "start": _iso(r.start),
                "end": _iso(r.end),
                "sessions": r.sessions,
                "successful_sessions": r.successful,
                "failed_sessions": r.failed,
                "archive_id": r.archive_id,
            }
            for r in s.reports
        ]
        doc["reports_rest"] = _rest(s.reports_rest)
    return doc


def render(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> str:
    text = json.dumps(to_dict(summary, views=views), ensure_ascii=False, indent=1)
    return _RAW.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n"
