"""A private rsyslogd for the syslog sink's tests: loopback TCP and UDP ports and a unix socket
in a temporary directory (never /dev/log), every message through mmjsonparse. The UDP input
has a 4 MiB receive buffer, as a busy collector should: the default (212 KB) overflows under
the tests' burst of 300 events and the kernel drops datagrams, which UDP cannot prevent.

Parsed events land one per line in ``events.jsonl``; a message that is not JSON lands in
``unparsed.log``. The test skips when Debian's rsyslog is not installed
(scripts/install-rsyslog-deps.sh installs it).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"

_CONF = """\
global(workDirectory="{dir}" {extra})
module(load="imtcp")
module(load="imudp")
module(load="imuxsock" SysSock.Use="off")
module(load="mmjsonparse")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="r")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="r" rcvbufSize="4m")
input(type="imuxsock" Socket="{dir}/log.sock" ruleset="r")
template(name="json" type="list") {{ property(name="$!all-json") constant(value="\\n") }}
template(name="raw" type="list") {{ property(name="rawmsg") constant(value="\\n") }}
ruleset(name="r") {{
  action(type="mmjsonparse" cookie="")
  if $parsesuccess == "OK" then {{
    action(type="omfile" file="{dir}/events.jsonl" template="json")
  }} else {{
    action(type="omfile" file="{dir}/unparsed.log" template="raw")
  }}
}}
"""


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Rsyslog:
    def __init__(self, folder: Path, *, max_message_size: str = "") -> None:
        if not Path(RSYSLOGD).is_file():
            pytest.skip("rsyslogd not installed (run scripts/install-rsyslog-deps.sh as root)")
        self.dir = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.tcp = free_port(socket.SOCK_STREAM)
        self.udp = free_port(socket.SOCK_DGRAM)
        extra = f'maxMessageSize="{max_message_size}"' if max_message_size else ""
        self.conf = folder / "rsyslog.conf"
        self.conf.write_text(_CONF.format(dir=folder, tcp=self.tcp, udp=self.udp, extra=extra))
        self.proc: subprocess.Popen[bytes] | None = None
        self.probes = 0

    @property
    def addresses(self) -> dict[str, str]:
        return {
            "udp": f"udp:127.0.0.1:{self.udp}",
            "tcp": f"tcp:127.0.0.1:{self.tcp}",
            "unix": str(self.dir / "log.sock"),
        }

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "rsyslogd.err").open("ab"),
        )
        # Ready when a probe sent over each input has been written out.
        for transport in ("tcp", "udp", "unix"):
            self._probe(transport)

    def _probe(self, transport: str) -> None:
        self.probes += 1
        want = f'{{"probe": {self.probes}}}'
        message = f"<22>Nov 30 07:00:00 probe[1]: {want}".encode()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.stderr()
            try:
                if transport == "tcp":
                    with socket.create_connection(("127.0.0.1", self.tcp), timeout=1) as s:
                        s.sendall(b"%d %s" % (len(message), message))
                elif transport == "udp":
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.sendto(message, ("127.0.0.1", self.udp))
                else:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                        s.sendto(message, str(self.dir / "log.sock"))
            except OSError:
                time.sleep(0.1)
                continue
            for _ in range(10):
                if any(e.get("probe") == self.probes for e in self.all_records()):
                    return
                time.sleep(0.05)
        raise AssertionError(f"rsyslogd did not receive a probe over {transport}: {self.stderr()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def stderr(self) -> str:
        path = self.dir / "rsyslogd.err"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def all_records(self) -> list[dict[str, Any]]:
        path = self.dir / "events.jsonl"
        if not path.exists():
            return []
        # rsyslog may be writing a record right now: only complete lines count
        complete = path.read_bytes().split(b"\n")[:-1]
        return [json.loads(line) for line in complete if line]

    def unparsed(self) -> list[str]:
        path = self.dir / "unparsed.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The parsed records other than probes, once ``count`` arrived (or at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            records = [e for e in self.all_records() if "probe" not in e]
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.05)
