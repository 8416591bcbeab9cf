"""The JSON view: the Summary as one JSON document (pure). Field names are stable."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from tlsrpt_lmtp.events import iso
from tlsrpt_lmtp.views.model import Count, OrgSummary, ResultGroup, Summary

SCHEMA = 1


def _iso(dt: datetime | None) -> str | None:
    return iso(dt) if dt is not None else None


def _counts(counts: Sequence[Count]) -> list[dict[str, Any]]:
    return [
        {"result_type": c.result_type, "failed_sessions": c.sessions, "reports": c.reports}
        for c in counts
    ]


def _group(g: ResultGroup) -> dict[str, Any]:
    return {
        "policy_domain": g.domain or None,
        "policy_type": g.policy_type,
        "policy_mode": g.mode or None,
        "reports": g.reports,
        "sessions": g.sessions,
        "successful_sessions": g.successful,
        "failed_sessions": g.failed,
        "success_rate": g.success_rate,
        "result_types": _counts(g.result_types),
        "unattributed_failed_sessions": g.unattributed,
        "detailed_beyond_summary": g.over_detailed,
    }


def _org(o: OrgSummary) -> dict[str, Any]:
    return {
        "organization_name": o.organization,
        "reports": o.reports,
        "sessions": o.sessions,
        "successful_sessions": o.successful,
        "failed_sessions": o.failed,
        "success_rate": o.success_rate,
        "unattributed_failed_sessions": o.unattributed,
        "detailed_beyond_summary": o.over_detailed,
        "first": _iso(o.first),
        "last": _iso(o.last),
        "sources": [
            {
                "sending_mta_ip": s.sending_ip or None,
                "receiving_mx": s.receiving_mx or None,
                "failed_sessions": s.failed,
                "result_types": _counts(s.result_types),
                "first": _iso(s.first),
                "last": _iso(s.last),
            }
            for s in o.sources
        ],
    }


def to_dict(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> dict[str, Any]:
    t = summary.totals
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": iso(summary.generated_at),
        "period": {"from": _iso(summary.period.start), "to": _iso(summary.period.end)},
        "policy_domain": summary.domain,
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
    }
    if "result" in views:
        doc["by_result"] = [_group(g) for g in summary.by_result]
    if "source" in views:
        doc["by_source"] = [_org(o) for o in summary.by_source]
    doc["daily"] = [
        {
            "policy_domain": series.domain or None,
            "days": [
                {
                    "date": p.day.isoformat(),
                    "reports": p.reports,
                    "successful_sessions": p.successful,
                    "failed_sessions": p.failed,
                    "success_rate": p.success_rate,
                }
                for p in series.points
            ],
        }
        for series in summary.daily
    ]
    return doc


def render(summary: Summary, *, views: Sequence[str] = ("result", "source")) -> str:
    return json.dumps(to_dict(summary, views=views), ensure_ascii=False, indent=2) + "\n"
