"""The HTTPS policy fetch (RFC 8461 §3.3): strict TLS, no redirects, text/plain, 64 KiB.

A thin adapter: the policy host is resolved through the same DNS as discovery, addresses that
are not globally reachable are refused (sts.addresses; unless allowed), the TLS connection is
opened to that address with SNI and certificate checks for
`mta-sts.<domain>`, and one HTTP/1.1 GET goes over it (sts.tlsget: a lean protocol, not
asyncio's streams; sts.httpreply reads the reply).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tlsrpt_lmtp import __version__
from tlsrpt_lmtp.sts.addresses import non_global
from tlsrpt_lmtp.sts.httpreply import Head, request
from tlsrpt_lmtp.sts.policy import MAX_POLICY_SIZE
from tlsrpt_lmtp.sts.tlsget import TlsGet, TlsGetError

WELL_KNOWN = "/.well-known/mta-sts.txt"
USER_AGENT = f"tlsrpt-lmtp/{__version__}"


class FetchError(Exception):
    """The policy could not be fetched; result_type is the TLSRPT result type."""

    def __init__(self, reason: str, result_type: str = "sts-policy-fetch-error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.result_type = result_type


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    # RFC 8461 §3.3 / RFC 6125: the name must be a SAN dNSName; never fall back to the CN.
    ctx.hostname_checks_common_name = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


@dataclass(frozen=True, slots=True)
class Fetcher:
    resolve: Callable[[str], Awaitable[list[str]]]
    context: ssl.SSLContext
    timeout: float = 10.0
    port: int = 443
    allow_private: bool = False  # connect to loopback/private/... addresses too (labs, tests)

    async def fetch(self, domain: str) -> bytes:
        host = f"mta-sts.{domain}"
        try:
            async with asyncio.timeout(self.timeout):  # no task of its own, unlike wait_for
                return await self._fetch(host)
        except TimeoutError:
            raise FetchError(f"fetching https://{host}{WELL_KNOWN} timed out") from None

    async def _fetch(self, host: str) -> bytes:
        try:
            addresses = await self.resolve(host)
        except OSError as exc:
            raise FetchError(str(exc)) from None
        if not addresses:
            raise FetchError(f"{host} has no address")
        if not self.allow_private:
            refused = [(a, why) for a in addresses if (why := non_global(a)) is not None]
            addresses = [a for a in addresses if non_global(a) is None]
            if not addresses:
                listed = ", ".join(f"{a} ({why})" for a, why in refused)
                raise FetchError(
                    f"{host} has no globally reachable address, refused: {listed}"
                    " (allow_private_policy_hosts)"
                )
        last: FetchError | None = None
        for address in addresses:
            try:
                return await self._get(address, host)
            except FetchError as exc:
                if exc.result_type != "sts-policy-fetch-error" or "connect" not in exc.reason:
                    raise
                last = exc
        assert last is not None
        raise last

    async def _get(self, address: str, host: str) -> bytes:
        get = TlsGet(
            self.context,
            host,
            request(host, WELL_KNOWN, USER_AGENT),
            MAX_POLICY_SIZE,
            lambda head: _check_response(head, host),
        )
        try:
            try:
                await get.connect(address, self.port)
            except OSError as exc:
                raise FetchError(f"cannot connect to {host} [{address}]: {exc.strerror}") from None
            return await get.result
        except TlsGetError as exc:
            raise _fetch_error(exc, host, address) from None
        finally:
            get.close()


def _fetch_error(exc: TlsGetError, host: str, address: str) -> FetchError:
    if exc.kind == "cut":
        return FetchError(f"cannot connect to {host} [{address}]: {exc.detail}")
    if exc.kind == "verify":
        return FetchError(f"certificate of {host} is not valid: {exc.detail}", "sts-webpki-invalid")
    if exc.kind == "tls":
        return FetchError(f"TLS with {host} failed: {exc.detail}", "sts-webpki-invalid")
    if exc.kind == "size":
        return FetchError(f"policy at {host} is larger than {MAX_POLICY_SIZE} bytes")
    return FetchError(f"fetching https://{host}{WELL_KNOWN} failed: {exc.detail}")


def _check_response(head: Head, host: str) -> None:
    if head.status != 200:
        # §3.3: only 200 is valid, and redirects MUST NOT be followed.
        raise FetchError(f"https://{host}{WELL_KNOWN} answered HTTP {head.status}")
    media = length = ""
    for name, value in head.headers:  # lower-cased names
        if name == b"content-type":
            media = value.decode("latin-1").partition(";")[0].strip().lower()
        elif name == b"content-length":
            length = value.decode("latin-1")
    if media != "text/plain":
        raise FetchError(f"policy at {host} is {media or 'untyped'}, not text/plain")
    if length.isdigit() and int(length) > MAX_POLICY_SIZE:
        raise FetchError(f"policy at {host} is larger than {MAX_POLICY_SIZE} bytes")
