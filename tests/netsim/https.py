"""The MTA-STS policy web server of the loopback test internet.

One HTTPS server (TLS >= 1.2) on ``127.x.y.z:443`` serves ``/.well-known/mta-sts.txt`` for every
policy domain in ``PolicyServer.sites``. The certificate is chosen per connection from the SNI
(``mta-sts.<domain>`` → that site's certificate of the site's ``cert`` kind); a ClientHello
without SNI, or with an unknown name, gets a default certificate for ``netsim-default.invalid``.
The site is chosen from the ``Host`` header, like a real virtual host. Every request is recorded
(``requests``), so tests can assert whether, how often and with which SNI a policy was fetched.

What a site can do (``PolicySite`` fields, changeable at any time):
``body``, ``status``, ``content_type`` (``None``: no header), ``location`` (a redirect),
``delay`` (seconds before the status line), ``body_delay`` (seconds between headers and body),
``oversize`` (pad the body with valid extension lines up to that many octets), ``chunked``
(``Transfer-Encoding: chunked``), ``headers`` (extra ones), ``cert``/``cert_names``.

"Down" and "hanging" hosts are not a site setting: point ``mta-sts.<domain>`` at an address where
nothing listens (connection refused) or at a ``Blackhole`` (accepts, never answers) — ``NetSim``
does that with ``set_sts_host``. ``pause()``/``resume()`` close and reopen the whole listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any

from .pki import CertKind, IssuedCert, TestPKI

log = logging.getLogger(__name__)

WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"
DEFAULT_HOST = "netsim-default.invalid"


@dataclass
class PolicySite:
    """What ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` returns."""

    domain: str
    body: bytes | str = b""
    status: int = 200
    content_type: str | None = "text/plain"
    location: str | None = None
    delay: float = 0.0
    body_delay: float = 0.0
    oversize: int = 0
    chunked: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    cert: CertKind = "good"
    cert_names: tuple[str, ...] | None = None  # default: ("mta-sts.<domain>",)

    @property
    def host(self) -> str:
        return f"mta-sts.{self.domain}"

    def body_bytes(self) -> bytes:
        body = self.body.encode() if isinstance(self.body, str) else self.body
        if self.oversize and len(body) < self.oversize:
            if body and not body.endswith(b"\n"):
                body += b"\n"
            i = 0
            while len(body) < self.oversize:
                body += f"pad{i}: {'x' * 64}\n".encode()
                i += 1
        return body


@dataclass(frozen=True)
class HttpRequest:
    """One request the server received (after a completed TLS handshake)."""

    time: float
    peer: tuple[str, int]
    sni: str | None
    method: str
    path: str
    host: str | None
    version: str
    headers: tuple[tuple[str, str], ...]
    tls_version: str | None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def _server_context(cert: IssuedCert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert.chain_file, cert.key_file)
    return ctx


class PolicyServer:
    """HTTPS server for MTA-STS policies on ``host:port``; see the module docstring."""

    def __init__(self, host: str, port: int, pki: TestPKI) -> None:
        self.host = host
        self.port = port
        self.pki = pki
        self.sites: dict[str, PolicySite] = {}
        self._lock = threading.Lock()
        self._requests: list[HttpRequest] = []
        self._handshakes: list[str | None] = []
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._sni_by_conn: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
        self._default_ctx = self._context_for(pki.issue(DEFAULT_HOST))
        self._default_ctx.sni_callback = self._on_sni
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # ---- sites -----------------------------------------------------------------------------

    def set_site(self, domain: str, **options: Any) -> PolicySite:
        """Create or replace the site for ``domain`` (options: the ``PolicySite`` fields)."""
        site = PolicySite(domain.lower().rstrip("."), **options)
        with self._lock:
            self.sites[site.domain] = site
        self._cert_for(site)  # issue the certificate now, not in the handshake
        return site

    def site(self, domain: str) -> PolicySite:
        return self.sites[domain.lower().rstrip(".")]

    def remove_site(self, domain: str) -> None:
        with self._lock:
            self.sites.pop(domain.lower().rstrip("."), None)

    def snapshot(self) -> dict[str, PolicySite]:
        with self._lock:
            return {d: replace(s, headers=dict(s.headers)) for d, s in self.sites.items()}

    def restore(self, sites: dict[str, PolicySite]) -> None:
        with self._lock:
            self.sites = {d: replace(s, headers=dict(s.headers)) for d, s in sites.items()}

    def _site_for_host(self, host: str | None) -> PolicySite | None:
        if not host:
            return None
        name = host.strip().lower().rstrip(".")
        if name.startswith("["):
            return None
        name = name.rsplit(":", 1)[0] if ":" in name else name
        if not name.startswith("mta-sts."):
            return None
        return self.sites.get(name[len("mta-sts.") :])

    def _cert_for(self, site: PolicySite) -> IssuedCert:
        return self.pki.issue(site.cert_names or (site.host,), site.cert)

    def _context_for(self, cert: IssuedCert) -> ssl.SSLContext:
        key = str(cert.chain_file)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = _server_context(cert)
            self._contexts[key] = ctx
        return ctx

    def _on_sni(self, conn: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        with self._lock:
            self._handshakes.append(server_name)
        with contextlib.suppress(TypeError):
            self._sni_by_conn[conn] = server_name
        if server_name is None:
            return
        site = self._site_for_host(server_name)
        if site is None:
            return
        try:
            conn.context = self._context_for(self._cert_for(site))
        except Exception:  # never let an exception escape into OpenSSL
            log.exception("netsim HTTPS: cannot switch certificate for %s", server_name)

    # ---- what was seen ---------------------------------------------------------------------

    @property
    def requests(self) -> list[HttpRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def sni_seen(self) -> list[str | None]:
        """SNI of every ClientHello (incl. handshakes the client then aborted)."""
        with self._lock:
            return list(self._handshakes)

    def requests_for(self, domain: str) -> list[HttpRequest]:
        host = f"mta-sts.{domain.lower().rstrip('.')}"
        return [r for r in self.requests if (r.host or "").lower().split(":")[0] == host]

    def clear_log(self) -> None:
        with self._lock:
            self._requests.clear()
            self._handshakes.clear()

    # ---- HTTP ------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._serve_one(reader, writer)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.LimitOverrunError:
            with contextlib.suppress(Exception):
                writer.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
        except Exception:
            log.exception("netsim HTTPS: error serving a request")
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
            return
        headers = tuple(
            (k.strip(), v.strip())
            for k, sep, v in (line.partition(":") for line in lines[1:] if line)
            if sep
        )
        host = next((v for k, v in headers if k.lower() == "host"), None)
        sslobj = writer.get_extra_info("ssl_object")
        peer = writer.get_extra_info("peername") or ("?", 0)
        request = HttpRequest(
            time.time(),
            (str(peer[0]), int(peer[1])),
            self._sni_by_conn.get(sslobj) if sslobj is not None else None,
            method,
            target,
            host,
            version,
            headers,
            sslobj.version() if sslobj is not None else None,
        )
        with self._lock:
            self._requests.append(request)
            site = self._site_for_host(host)
            site = replace(site, headers=dict(site.headers)) if site is not None else None
        path = target.split("?", 1)[0]
        if site is None or path != WELL_KNOWN_PATH:
            await self._respond(writer, method, 404, b"not found\n", "text/plain", {})
            return
        if site.delay > 0:
            await asyncio.sleep(site.delay)
        extra = dict(site.headers)
        if site.location is not None:
            extra.setdefault("Location", site.location)
        await self._respond(
            writer,
            method,
            site.status,
            site.body_bytes(),
            site.content_type,
            extra,
            chunked=site.chunked,
            body_delay=site.body_delay,
        )

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        status: int,
        body: bytes,
        content_type: str | None,
        extra: dict[str, str],
        *,
        chunked: bool = False,
        body_delay: float = 0.0,
    ) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        head = [f"HTTP/1.1 {status} {reason}", "Server: netsim", "Connection: close"]
        if content_type is not None:
            head.append(f"Content-Type: {content_type}")
        if chunked:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append(f"Content-Length: {len(body)}")
        head.extend(f"{k}: {v}" for k, v in extra.items())
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        if method == "HEAD":
            return
        if body_delay > 0:
            await asyncio.sleep(body_delay)
        if chunked:
            for i in range(0, len(body), 4096):
                chunk = body[i : i + 4096]
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(body)
        await writer.drain()

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client,
            self.host,
            self.port,
            ssl=self._default_ctx,
            ssl_handshake_timeout=10,
            reuse_address=True,
            limit=64 * 1024,
        )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)

    @property
    def running(self) -> bool:
        return self._server is not None

    # ``pause``/``resume`` are ``stop``/``start`` under names that say what a test means.
    pause = stop
    resume = start


class Blackhole:
    """Accepts TCP connections on ``host`` at each of ``ports`` and never says a word.

    For "the server hangs" tests (TLS handshake / SMTP greeting timeouts). Connections are
    closed after ``hold`` seconds or when the harness stops, whichever comes first.
    """

    def __init__(self, host: str, ports: tuple[int, ...], hold: float = 120.0) -> None:
        self.host = host
        self.ports = ports
        self.hold = hold
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            deadline = time.monotonic() + self.hold
            while (remaining := deadline - time.monotonic()) > 0:
                data = await asyncio.wait_for(reader.read(65536), timeout=remaining)
                if not data:
                    break
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def start(self) -> None:
        for port in self.ports:
            server = await asyncio.start_server(self._client, self.host, port, reuse_address=True)
            self._servers.append(server)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        self._servers.clear()
