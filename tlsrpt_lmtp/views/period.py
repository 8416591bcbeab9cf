"""The summary's period and domain filter, from the command line's words (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from tlsrpt_lmtp.core import durations
from tlsrpt_lmtp.core.names import canonical


class PeriodError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Period:
    """Reports whose date range *starts* in [start, end); None is open-ended."""

    start: datetime | None = None
    end: datetime | None = None

    def contains(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (
            self.end is None or moment < self.end
        )


def parse_duration(text: str) -> timedelta:
    """'90m', '24h', '7d', '2w' → a timedelta (``core.durations``), or PeriodError."""
    try:
        return durations.parse_duration(text)
    except durations.DurationError as exc:
        raise PeriodError(str(exc)) from None


def parse_moment(text: str, *, end: bool) -> datetime:
    """A date (whole day, UTC; as an end bound: through that day) or an ISO date-time."""
    text = text.strip()
    try:
        if "T" not in text.upper() and len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), UTC)
            return moment + timedelta(days=1) if end else moment
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except OverflowError:
        raise PeriodError(f"date out of range: {text[:40]!r}") from None
    except ValueError:
        raise PeriodError(
            f"expected YYYY-MM-DD or an ISO 8601 date-time, not {text[:40]!r}"
        ) from None


def make_period(
    *, since: str | None, date_from: str | None, date_to: str | None, now: datetime
) -> Period:
    if since is not None and date_from is not None:
        raise PeriodError("--since and --from both give the start: use one")
    try:
        start = now - parse_duration(since) if since is not None else None
    except OverflowError:
        raise PeriodError(f"--since {str(since)[:40]!r} reaches before the year 1") from None
    if date_from is not None:
        start = parse_moment(date_from, end=False)
    end = parse_moment(date_to, end=True) if date_to is not None else None
    if start is not None and end is not None and end <= start:
        raise PeriodError("the period ends before it starts")
    return Period(start, end)


def normalise_domain(text: str) -> str:
    """As the parser stores policy domains: lower case, no final dot, A-labels."""
    domain = canonical(text)
    if not domain:
        raise PeriodError("--domain needs a domain name")
    return domain
