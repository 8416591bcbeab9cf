"""Domain names, one way everywhere (sans-I/O).

Every place that stores, compares or looks up a domain name (reports, the summary filter, DKIM,
the policy daemon, ``check``) goes through this module, so that a name means the same thing in
each of them:

- ``to_ascii``: UTS 46 processing (non-transitional, STD3 rules) through the ``idna`` library,
  each non-ASCII label checked against IDNA 2008 and encoded as an A-label, lower case, the
  root's trailing dot dropped. ``straße.de`` is ``xn--strae-oqa.de`` (IDNA 2003 and Python's
  ``encodings.idna`` would make it ``strasse.de``, another domain). ASCII labels are LDH labels
  (RFC 1123): a host name like ``r3--sn-abc.example`` stays valid even though IDNA 2008 would
  refuse its hyphens for a U-label; an ``xn--`` label must decode to a valid U-label.
- ``organizational_domain``: the registrable domain by the Public Suffix List (ICANN and private
  sections, as DMARC uses it), from the ``publicsuffixlist`` package, whose copy of the list
  ships inside the package: no download at run time.
- ``aligned``: DMARC's relaxed alignment (RFC 7489 §3.1): the same name, or the same
  organizational domain. ``evil.co.uk`` and ``co.uk`` do not align, nor ``attacker.github.io``
  and ``github.io``.
"""

from __future__ import annotations

import functools
import re

import idna
from publicsuffixlist import PublicSuffixList

MAX_NAME = 253  # octets of a name in text form, without the root's dot (RFC 1035 §2.3.4)
MAX_INPUT = 1024  # longer input is refused before any work (mapping can only delete so much)

_LDH_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_LDH_NAME = re.compile(rf"(?:{_LDH_LABEL}\.)*{_LDH_LABEL}")
_LDH = re.compile(_LDH_LABEL)


def to_ascii(name: str, *, wildcard: bool = False) -> str | None:
    """The name's A-label form in lower case without a trailing dot; None if it is not a valid
    host name. ``wildcard=True`` also accepts a leading ``*.`` label (an MTA-STS mx pattern)
    and keeps it."""
    if not isinstance(name, str) or len(name) > MAX_INPUT:
        return None
    text = name.strip()
    prefix = ""
    if wildcard and text.startswith("*."):
        prefix, text = "*.", text[2:]
    if text.isascii():
        lowered = text.lower()
        lowered = lowered[:-1] if lowered.endswith(".") else lowered
        if (
            len(lowered) <= MAX_NAME
            and _LDH_NAME.fullmatch(lowered)
            and not lowered.startswith("xn--")
            and ".xn--" not in lowered
        ):
            return prefix + lowered
    result = _uts46(text)
    return prefix + result if result is not None else None


@functools.lru_cache(maxsize=1024)  # only the slow path: at most ~1 MiB of keys (MAX_INPUT)
def _uts46(text: str) -> str | None:
    try:
        mapped = idna.uts46_remap(text, std3_rules=True, transitional=False)
    except idna.IDNAError:
        return None
    mapped = mapped[:-1] if mapped.endswith(".") else mapped
    labels: list[str] = []
    for label in mapped.split("."):
        if label.isascii():
            if not _LDH.fullmatch(label):
                return None
            if label.startswith("xn--"):
                try:
                    idna.ulabel(label)
                except idna.IDNAError:
                    return None
            labels.append(label)
            continue
        try:
            labels.append(idna.alabel(label).decode("ascii"))
        except (idna.IDNAError, UnicodeError):
            return None
    result = ".".join(labels)
    return result if len(result) <= MAX_NAME else None


def canonical(name: str) -> str:
    """The form to store and compare a name that may not be valid: ``to_ascii`` when it is,
    else the text stripped, lower-cased and without a trailing dot (so it still equals
    itself)."""
    # A report names the same few MX hosts thousands of times: short names are cached (only
    # short ones, so that the cache stays small whatever a sender writes).
    return _canonical_cached(name) if len(name) <= _CACHED_LENGTH else _canonical(name)


_CACHED_LENGTH = 128


@functools.lru_cache(maxsize=2048)
def _canonical_cached(name: str) -> str:
    return _canonical(name)


def _canonical(name: str) -> str:
    result = to_ascii(name, wildcard=True)
    if result is not None:
        return result
    # Tidying an invalid name can make it valid ('Bücher.Example..'): take that form then,
    # so that canonical(canonical(x)) == canonical(x) and one domain is one key.
    tidy = _tidy(name)
    return to_ascii(tidy, wildcard=True) or tidy


def _tidy(name: str) -> str:
    """Lower case, without leading blanks nor any run of trailing dots and blanks."""
    text = name.lstrip()
    end = len(text)
    while end and (text[end - 1] == "." or text[end - 1].isspace()):
        end -= 1
    return text[:end].lower()


def mail_domain(text: str | None) -> str | None:
    """The domain a mail header or a report's contact-info names, one rule for all of them:
    the part after the last "@" (the whole value when there is none), without blanks and
    angle brackets, in ``canonical`` form. A value with no "@" that is not a host name (a
    URL, free text) names no domain."""
    if not text:
        return None
    # The same few reporters send the same headers: short values are cached like canonical's.
    return _mail_domain_cached(text) if len(text) <= _CACHED_LENGTH else _mail_domain(text)


@functools.lru_cache(maxsize=2048)
def _mail_domain_cached(text: str) -> str | None:
    return _mail_domain(text)


def _mail_domain(text: str) -> str | None:
    _, at, domain = text.rpartition("@")
    domain = domain.strip(" <>")
    if not at:  # only a valid host name counts, and then canonical(domain) is its A-label form
        return to_ascii(_tidy(domain))
    return canonical(domain) or None


def to_unicode(name: str) -> str:
    """The name for display, A-labels shown as Unicode; the input as given when it cannot be
    decoded (an invalid name is shown as it is, never guessed at)."""
    ascii_name = to_ascii(name, wildcard=True)
    if ascii_name is None:
        return name
    if "xn--" not in ascii_name:
        return ascii_name
    prefix, rest = ("*.", ascii_name[2:]) if ascii_name.startswith("*.") else ("", ascii_name)
    try:
        return prefix + ".".join(
            idna.ulabel(label) if label.startswith("xn--") else label for label in rest.split(".")
        )
    except idna.IDNAError:
        return name


@functools.cache
def _psl() -> PublicSuffixList:
    # The list shipped with the package (read once, on first use). Unknown TLDs count as public
    # suffixes (the list's "*" rule), so "a.b.example" has the organizational domain "b.example".
    return PublicSuffixList()


def organizational_domain(name: str) -> str | None:
    """The public suffix plus one label (``mail.google.com`` → ``google.com``); None for an
    invalid name and for a public suffix itself (``co.uk``, ``github.io``, ``com``)."""
    ascii_name = to_ascii(name)
    return _registrable(ascii_name) if ascii_name is not None else None


@functools.lru_cache(maxsize=4096)
def _registrable(ascii_name: str) -> str | None:
    return _psl().privatesuffix(ascii_name)


def aligned(a: str | None, b: str | None) -> bool:
    """Relaxed alignment: both valid names, and equal or with the same organizational domain.
    A public suffix aligns only with itself (only its operator can sign as it)."""
    if not a or not b:
        return False
    x, y = to_ascii(a), to_ascii(b)
    if x is None or y is None:
        return False
    if x == y:
        return True
    org = organizational_domain(x)
    return org is not None and org == organizational_domain(y)
