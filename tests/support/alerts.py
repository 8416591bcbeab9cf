"""Alert delivery rigs: a webhook ``Server`` on 127.0.0.1 answering from a plan, a pipeline with
the alert hook (``rig_factory``), and a fake ``sendmail`` that records its argv and standard
input (``fake_sendmail``, ``sent``). The fixtures are registered in tests/conftest.py."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.events import Recorder
from tests.support.views import detail, raw, report, sts
from tlsrpt_lmtp.alerts.hook import AlertHook, build_hook
from tlsrpt_lmtp.ingest.pipeline import Pipeline


class Server:
    """An HTTP server on 127.0.0.1 answering from a plan: (delay seconds, status) per request.

    A delay is a wait on a gate that `release()` opens, so a test can hold every answer back
    until it has checked that ingestion returned without waiting for one."""

    def __init__(self, plan: list[tuple[float, int]]) -> None:
        self.plan = plan
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.answered = 0
        self.gate = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(body)
                outer.headers.append(dict(self.headers))
                delay, status = outer.plan.pop(0) if outer.plan else (0.0, 200)
                if delay:
                    outer.gate.wait(delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
                outer.answered += 1

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = Server(list(getattr(request, "param", [])))
    yield s
    s.close()


class Rig:
    def __init__(self, tmp_path: Path, alerts: str) -> None:
        tmp_path.mkdir(parents=True)
        config = tmp_path / "c.toml"
        config.write_text(f"[alerts]\n{alerts}\n")
        self.rec = Recorder()
        self.pipeline = Pipeline.open(tmp_path / "data", self.rec)
        self.hook: AlertHook = build_hook(config, tmp_path / "data", self.rec)
        self.pipeline.hooks.append(self.hook)

    def ingest(self, *domains: str, org: str = "Google Inc.", mode: str = "enforce") -> None:
        """One report with a failing policy per domain."""
        policies = [
            sts(
                d,
                mode=mode,
                ok=1000,
                failed=2,
                details=[detail("certificate-expired", 2, mx=f"mx.{d}")],
            )
            for d in domains
        ]
        self.pipeline.ingest(raw(report(*policies, org=org)), source="test")

    def undelivered(self) -> list[dict[str, Any]]:
        return self.rec.named("tlsrpt.alert_undelivered")

    def close(self) -> None:
        self.hook.close(timeout=5)
        self.pipeline.close()


@pytest.fixture
def rig_factory(tmp_path: Path) -> Iterator[Any]:
    rigs: list[Rig] = []

    def make(alerts: str) -> Rig:
        rigs.append(Rig(tmp_path / str(len(rigs)), alerts))
        return rigs[-1]

    yield make
    for r in rigs:
        r.close()


def fake_sendmail(folder: Path, *, exit_code: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "sendmail"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{folder}/argv.$$"\n'
        f'cat > "{folder}/msg.$$"\n'
        'echo "queue file write error" >&2\n'
        f"exit {exit_code}\n"
    )
    script.chmod(0o755)
    return script


def sent(folder: Path) -> list[tuple[str, EmailMessage]]:
    out = []
    for msg in sorted(folder.glob("msg.*")):
        argv = (folder / msg.name.replace("msg", "argv")).read_text()
        parsed = email.message_from_bytes(msg.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        out.append((argv, parsed))
    return out
