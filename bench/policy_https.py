"""The policy benchmark's HTTPS policy server, in processes of its own.

    python -m bench.policy_https --listen 127.0.N.x:443 --sites SITES.json [--processes 2]

The netsim's policy server (tests/netsim/https.py) runs on asyncio in the benchmark runner's
process, in the same thread as the netsim's authoritative DNS. For the tests that is right
(one loop, every request recorded, sites changeable at any time); under the benchmark's
uncached row it used as much CPU as the daemon being measured, and each DNS answer waited
behind TLS handshakes in that one loop, so the row measured the harness as much as the
daemons. This server serves the same sites, the same certificates and the same bytes, but
does little in Python: `--processes` forked processes accept on one listening socket, each
with `--threads` threads doing blocking accept, handshake (OpenSSL, without the GIL), one
request, one pre-built response, close.

What it checks, like the netsim's: the certificate is chosen by SNI (`mta-sts.<domain>`),
the site by the Host header; only GET/HEAD of /.well-known/mta-sts.txt on a known host is
answered 200, anything else 404 (or 400). SITES.json: a list of {"host", "chain", "key",
"body"} (body as text). Stopped by SIGTERM to its process group.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.netsim.fixtures import NetSim
    from tests.netsim.https import PolicySite

WELL_KNOWN = b"/.well-known/mta-sts.txt"
MAX_HEAD = 16 * 1024
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def response(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\nServer: bench-policy-https\r\nConnection: close\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def server_context(chain: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(chain, key)
    return ctx


class Sites:
    def __init__(self, sites: list[dict[str, str]], default: dict[str, str]) -> None:
        self.contexts = {s["host"]: server_context(s["chain"], s["key"]) for s in sites}
        self.responses = {s["host"].encode(): response(s["body"].encode()) for s in sites}
        self.default = server_context(default["chain"], default["key"])
        self.default.sni_callback = self._on_sni

    def _on_sni(self, conn: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        ctx = self.contexts.get(name or "")
        if ctx is not None:
            conn.context = ctx

    def answer(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or parts[0] not in (b"GET", b"HEAD"):
            return BAD_REQUEST
        host = b""
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep and name.strip().lower() == b"host":
                host = value.strip().lower().rstrip(b".")
        found = self.responses.get(host)
        if found is None or parts[1].split(b"?", 1)[0] != WELL_KNOWN:
            return NOT_FOUND
        if parts[0] == b"HEAD":
            return found[: found.index(b"\r\n\r\n") + 4]
        return found


def serve_one(sites: Sites, conn: socket.socket) -> None:
    conn.settimeout(10.0)
    try:
        with sites.default.wrap_socket(conn, server_side=True) as tls:
            head = b""
            while b"\r\n\r\n" not in head:
                data = tls.recv(4096)
                if not data or len(head) > MAX_HEAD:
                    return
                head += data
            tls.sendall(sites.answer(head.partition(b"\r\n\r\n")[0]))
    except (OSError, ValueError):
        pass  # ssl.SSLError is an OSError: a client that gave up
    finally:
        conn.close()


def worker(sites: Sites, listener: socket.socket, threads: int) -> None:
    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            serve_one(sites, conn)

    pool = [threading.Thread(target=accept_loop, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--sites", type=Path, required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="per process")
    args = parser.parse_args(argv)
    spec = json.loads(args.sites.read_text())
    sites = Sites(spec["sites"], spec["default"])
    host, _, port = args.listen.rpartition(":")
    listener = socket.create_server((host, int(port)), backlog=1024)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    children = []
    for _ in range(max(1, args.processes) - 1):
        pid = os.fork()
        if pid == 0:
            worker(sites, listener, args.threads)
            os._exit(0)
        children.append(pid)
    print(f"bench.policy_https: {len(sites.contexts)} sites on {args.listen}", file=sys.stderr)
    try:
        worker(sites, listener, args.threads)
    finally:
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)


class PolicyHttps:
    """The runner's side: collects the netsim's sites, points their policy hosts at a spare
    loopback address of the netsim, and runs this module there (port 443) until stop()."""

    def __init__(self, sim: NetSim, directory: Path, processes: int = 2) -> None:
        self.sim = sim
        self.directory = directory
        self.processes = processes
        self.address = sim.alloc_address()
        self.sites: list[dict[str, str]] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def add(self, site: PolicySite) -> None:
        cert = self.sim.pki.issue(site.cert_names or (site.host,), site.cert)
        body = site.body_bytes().decode("latin-1")
        self.sites.append(
            {"host": site.host, "chain": str(cert.chain_file), "key": str(cert.key_file)}
            | {"body": body}
        )
        self.sim.dns.set(site.host, "A", self.address)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        default = self.sim.pki.issue("netsim-default.invalid")
        spec = {
            "sites": self.sites,
            "default": {"chain": str(default.chain_file), "key": str(default.key_file)},
        }
        (self.directory / "sites.json").write_text(json.dumps(spec))
        argv = [sys.executable, "-m", "bench.policy_https", "--listen", f"{self.address}:443"]
        argv += ["--sites", str(self.directory / "sites.json")]
        argv += ["--processes", str(self.processes)]
        log = (self.directory / "server.log").open("wb")
        repo = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            argv, cwd=repo, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection((self.address, 443), timeout=1.0).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"bench.policy_https did not start; see {self.directory}/server.log")

    def pids(self) -> list[int]:
        """The server and its forked workers."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        pids = [self.proc.pid]
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            pids += [int(p) for p in children.read_text().split()]
        return pids

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it stops its workers itself
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                for pid in self.pids()[1:]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.kill()
                self.proc.wait()
        self.proc = None


if __name__ == "__main__":
    main()
