"""LMTP server memory and connections under abuse, this checkout beside another (e.g. main).

    python -m bench.lmtp_abuse --before /work/main      # table on stdout, progress on stderr

Each scenario runs against a fresh `tlsrpt-lmtp serve` of each checkout (its own code via
PYTHONPATH, the same Python), on 127.0.0.1, with a fresh data dir and systemd's default soft
limit of 1024 open files. Memory is the server
process's own VmRSS / VmHWM from /proc (stage 2 is a separate process and not counted).
Idle connections come from another local user (nobody, when run as root) than the
delivery that follows them, as an MTA's would. Every loop is bounded in count and every wait
in time.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from bench.procs import LOOPBACK, free_port

HERE = Path(__file__).resolve().parent.parent
RCPT = "tlsrpt@example.org"
MIB = 1024 * 1024
WAIT = 120.0  # seconds: the bound on any single reply


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _systemd_fd_limit() -> None:
    """The server gets systemd's default soft limit on open files (LimitNOFILE=1024:524288)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))


@contextmanager
def server(code: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lmtp-abuse-") as tmp:
        argv = [sys.executable, "-m", "tlsrpt_lmtp", "serve", "--listen", f"{LOOPBACK}:{port}"]
        argv += ["--data-dir", tmp, "--dkim-policy", "off", "--log-file", "/dev/null"]
        env = {**os.environ, "PYTHONPATH": str(code)}
        proc = subprocess.Popen(
            argv, cwd=code, env=env, stderr=subprocess.PIPE, preexec_fn=_systemd_fd_limit
        )
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline().decode()
            if "LMTP on" not in line:
                raise RuntimeError(f"{code}: server did not start: {line}")
            yield proc, port
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.stderr is not None:
                proc.stderr.close()


class Client:
    def __init__(self, port: int, timeout: float = WAIT) -> None:
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> str:
        line = b""
        while True:
            line = self.file.readline()
            if not line:
                return "closed"
            if line[3:4] != b"-":
                return line[:3].decode()

    def cmd(self, text: str) -> str:
        self.sock.sendall(text.encode() + b"\r\n")
        return self.reply()

    def deliver(self, content: bytes) -> str:
        if self.greeting != "220":
            return f"{self.greeting} at connect"
        self.cmd("LHLO bench.example")
        self.cmd("MAIL FROM:<r@example.net>")
        self.cmd(f"RCPT TO:<{RCPT}>")
        if self.cmd("DATA") != "354":
            return "no 354"
        wire = (b"\r\n" + content).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"
        for at in range(0, len(wire), MIB):
            self.sock.sendall(wire[at : at + MIB])
        return self.reply()

    def close(self) -> None:
        with suppress(OSError):
            self.sock.close()


Row = tuple[str, str]


def one_mail(content: bytes) -> Callable[[Path], list[Row]]:
    def run(code: Path) -> list[Row]:
        with server(code) as (proc, port):
            before = kib(proc.pid, "VmRSS")
            c = Client(port)
            started = time.monotonic()
            reply = c.deliver(content)
            took = time.monotonic() - started
            c.close()
            peak = kib(proc.pid, "VmHWM")
            return [
                ("reply", reply),
                ("RSS before (MiB)", f"{before / 1024:.0f}"),
                ("peak RSS VmHWM (MiB)", f"{peak / 1024:.0f}"),
                ("peak growth (MiB)", f"{(peak - before) / 1024:.0f}"),
                ("time to reply (s)", f"{took:.1f}"),
            ]

    return run


FLOOD = """
import encodings.idna, os, socket, sys
count, port = int(sys.argv[1]), int(sys.argv[2])
if os.geteuid() == 0:  # the flood comes from another local user than the MTA's
    os.setgid(65534); os.setuid(65534)
socks, codes, wait = [], [], 10.0
for _ in range(count):
    s = socket.socket(); s.settimeout(wait); s.connect(("127.0.0.1", port))
    try:
        codes.append(s.recv(512)[:3])
    except TimeoutError:  # the server no longer accepts (out of file descriptors)
        codes.append(b"---"); wait = 0.1
    if codes[-1] == b"220":
        s.sendall(b"LHLO idle.example\\r\\n")
    socks.append(s)
print(codes.count(b"220"), codes.count(b"421"), codes.count(b"---"), flush=True)
sys.stdin.read()
"""


def idle(count: int) -> Callable[[Path], list[Row]]:
    def run(code: Path) -> list[Row]:
        with server(code) as (proc, port):
            before = kib(proc.pid, "VmRSS")
            flood = subprocess.Popen(
                [sys.executable, "-c", FLOOD, str(count), str(port)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert flood.stdout is not None
                accepted, refused, silent = (int(n) for n in flood.stdout.readline().split())
                time.sleep(1)
                rss = kib(proc.pid, "VmRSS")
                try:
                    legit = Client(port, timeout=10)
                    delivery = legit.deliver(b"Subject: during the flood\r\n\r\nhello\r\n")
                    legit.close()
                except TimeoutError:
                    delivery = "no reply in 10 s"
            finally:
                assert flood.stdin is not None
                flood.stdin.close()
                flood.wait(timeout=60)
            return [
                ("greeted 220 / 421 / nothing", f"{accepted} / {refused} / {silent}"),
                ("RSS before (MiB)", f"{before / 1024:.0f}"),
                ("RSS with them open (MiB)", f"{rss / 1024:.0f}"),
                ("per connection (KiB)", f"{(rss - before) / max(accepted, 1):.0f}"),
                ("the MTA's delivery meanwhile", delivery),
            ]

    return run


SCENARIOS: list[tuple[str, Callable[[Path], list[Row]]]] = [
    ("10 MB mail of empty lines", one_mail(b"Subject: e\r\n\r\n" + b"\r\n" * 5_000_000)),
    # Every line ends in ".CRLF", so the reader stops at each (its worst case, CPU-wise).
    ("12 MB mail of '.' lines", one_mail(b"Subject: d\r\n\r\n" + b".\r\n" * 3_000_000)),
    ("2 MiB line", one_mail(b"Subject: l\r\n\r\n" + b"y" * (2 * MIB) + b"\r\n")),
    ("100 idle connections (user nobody)", idle(100)),
    ("1,100 idle connections (user nobody)", idle(1100)),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. main)")
    p.add_argument("--after", type=Path, default=HERE, help="default: this checkout")
    args = p.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    table: list[tuple[str, str, str]] = []
    for title, scenario in SCENARIOS:
        print(f"{title} ...", file=sys.stderr, flush=True)
        before = scenario(args.before)
        after = scenario(args.after)
        for (name, old), (_, new) in zip(before, after, strict=True):
            table.append((f"{title}: {name}", old, new))
    head = ("LMTP server (own process)", "before", "after")
    widths = [max(len(row[i]) for row in [head, *table]) for i in range(3)]
    print(f"| {head[0]:<{widths[0]}} | {head[1]:>{widths[1]}} | {head[2]:>{widths[2]}} |")
    print(f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 1)}:|{'-' * (widths[2] + 1)}:|")
    for name, old, new in table:
        print(f"| {name:<{widths[0]}} | {old:>{widths[1]}} | {new:>{widths[2]}} |")
    print(f"\nbefore: {args.before}\nafter:  {args.after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
