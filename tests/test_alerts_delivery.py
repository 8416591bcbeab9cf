"""Alert delivery: a webhook on 127.0.0.1 that is down, slow, failing then working; mail
through a fake ``sendmail`` that records its argv and standard input."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.alerts import Server, fake_sendmail, sent
from tests.support.events import Recorder
from tlsrpt_lmtp.alerts.hook import build_hook
from tlsrpt_lmtp.config import ConfigError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --------------------------------------------------------------------------------------------
# webhook
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", [[(0.0, 500), (0.0, 200)]], indirect=True)
def test_webhook_retries_after_500_and_delivers(server: Server, rig_factory: Any) -> None:
    rig = rig_factory(
        f'webhook_url = "{server.url}"\nwebhook_backoff = 0.05\n'
        'webhook_headers = { Authorization = "Bearer t0ken" }'
    )
    rig.ingest("example.com")
    assert rig.hook.join(10)
    assert len(server.bodies) == 2 and server.bodies[0] == server.bodies[1]
    body = json.loads(server.bodies[1])
    [event] = rig.rec.named("tlsrpt.alert")
    assert {k: body[k] for k in event} == event  # event_id included: the same in both
    assert len(body["event_id"]) == 32
    assert body["schema"] == 1 and body["timestamp"].endswith("Z")
    assert body["text"].startswith("[CRITICAL] example.com:")
    assert server.headers[0]["Authorization"] == "Bearer t0ken"
    assert server.headers[0]["Content-Type"] == "application/json"
    assert rig.undelivered() == []


@pytest.mark.parametrize("server", [[(30.0, 200), (30.0, 200)]], indirect=True)
def test_slow_webhook_times_out_without_blocking_ingestion(
    server: Server, rig_factory: Any
) -> None:
    rig = rig_factory(
        f'webhook_url = "{server.url}"\nwebhook_timeout = 0.3\nwebhook_retries = 1\n'
        "webhook_backoff = 0.05"
    )
    rig.ingest("example.com")
    assert server.answered == 0  # ingestion returned while the webhook still holds its answer
    assert rig.hook.join(10)
    [dropped] = rig.undelivered()
    assert dropped["channel"] == "webhook" and "timed out" in dropped["reason"]
    assert "after 2 attempts" in dropped["reason"] and dropped["domain"] == "example.com"
    assert len(server.bodies) == 2


def test_webhook_down(rig_factory: Any) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    rig = rig_factory(f'webhook_url = "{url}"\nwebhook_retries = 2\nwebhook_backoff = 0.01')
    rig.ingest("example.com")
    assert rig.hook.join(10)
    [dropped] = rig.undelivered()
    assert "Connection refused" in dropped["reason"] and "after 3 attempts" in dropped["reason"]
    assert len(rig.rec.named("tlsrpt.alert")) == 1  # the event log has the alert regardless


@pytest.mark.parametrize("server", [[(0.0, 400)]], indirect=True)
def test_webhook_client_error_is_not_retried(server: Server, rig_factory: Any) -> None:
    rig = rig_factory(f'webhook_url = "{server.url}"\nwebhook_backoff = 0.01')
    rig.ingest("example.com")
    assert rig.hook.join(10)
    assert len(server.bodies) == 1
    assert rig.undelivered()[0]["reason"] == "HTTP 400, not retried"


@pytest.mark.parametrize("server", [[(30.0, 200)] * 5], indirect=True)
def test_full_queue_drops_with_a_log(
    server: Server, rig_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rig = rig_factory(f'webhook_url = "{server.url}"\nqueue_size = 1\nwebhook_timeout = 5')
    rig.ingest("a.example", "b.example", "c.example", "d.example")
    assert server.answered == 0  # ingestion did not wait for the webhook
    server.release()
    assert rig.hook.join(15)
    dropped = [e for e in rig.undelivered() if e["reason"].startswith("queue full")]
    assert len(dropped) >= 2 and len(server.bodies) + len(dropped) == 4
    assert "not delivered by webhook: queue full" in caplog.text


class Answering:
    """An HTTP server on 127.0.0.1 that records every request (any method) and answers it with
    ``status``, plus a Location header when ``location`` is given."""

    def __init__(self, status: int, location: str = "") -> None:
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.headers.append(dict(self.headers))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_HEAD = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_webhook_never_follows_a_redirect(rig_factory: Any, status: int) -> None:
    target = Answering(200)  # records whatever reaches it, whatever the method
    redirector = Answering(status, target.url)
    try:
        rig = rig_factory(
            f'webhook_url = "{redirector.url}"\nwebhook_backoff = 0.01\n'
            'webhook_headers = { Authorization = "Bearer t0ken" }'
        )
        rig.ingest("example.com")
        assert rig.hook.join(10)
    finally:
        redirector.close()
        target.close()
    assert len(redirector.headers) == 1  # asked once, not retried
    assert redirector.headers[0]["Authorization"] == "Bearer t0ken"
    assert target.headers == []  # the token never went to the redirect's target
    [dropped] = rig.undelivered()
    assert dropped["reason"].startswith(f"HTTP {status}: redirects are not followed")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.org/x",
        "file:///etc/passwd",
        "https://",
        "hooks.example.org/x",
        "https://hooks.example.org:99999/x",
        "https://hooks.example.org/a b",
        "javascript:alert(1)",
        "data:,x",
    ],
)
def test_webhook_url_must_be_http_or_https(tmp_path: Path, url: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[alerts]\nwebhook_url = {json.dumps(url)}\n")
    with pytest.raises(ConfigError, match="webhook_url must"):
        build_hook(config, tmp_path, Recorder())


# --------------------------------------------------------------------------------------------
# sendmail
# --------------------------------------------------------------------------------------------


def test_mail_through_sendmail(tmp_path: Path, rig_factory: Any) -> None:
    script = fake_sendmail(tmp_path / "bin")
    rig = rig_factory(
        f'sendmail = "{script}"\nmail_to = ["postmaster@example.org", "ops@example.org"]\n'
        'mail_from = "tlsrpt@example.org"'
    )
    rig.ingest("example.com")
    assert rig.hook.join(10)
    [(argv, msg)] = sent(tmp_path / "bin")
    assert argv == "-t\n-i\n"
    assert msg["To"] == "postmaster@example.org, ops@example.org"
    assert msg["From"] == "tlsrpt@example.org" and msg["Auto-Submitted"] == "auto-generated"
    assert msg["Subject"] == "[tlsrpt] CRITICAL example.com: certificate-expired"
    body = msg.get_content()
    assert "certificate of MX mx.example.com has expired" in body
    assert 'Report ID (as the report says): "Google Inc.-2026-05-10"' in body
    assert "Severity: critical" in body
    assert rig.undelivered() == []


def test_mail_headers_cannot_be_injected_from_a_report(tmp_path: Path, rig_factory: Any) -> None:
    script = fake_sendmail(tmp_path / "bin")
    rig = rig_factory(f'sendmail = "{script}"\nmail_to = ["postmaster@example.org"]')
    rig.ingest("evil.example\r\nbcc: victim@elsewhere.example")
    assert rig.hook.join(10)
    [(_, msg)] = sent(tmp_path / "bin")
    assert msg["Bcc"] is None and msg["To"] == "postmaster@example.org"
    assert "\n" not in str(msg["Subject"]) and "evil.example bcc" in str(msg["Subject"])


def test_mail_min_severity(tmp_path: Path, rig_factory: Any) -> None:
    script = fake_sendmail(tmp_path / "bin")
    rig = rig_factory(
        f'sendmail = "{script}"\nmail_to = ["postmaster@example.org"]\n'
        'mail_min_severity = "critical"'
    )
    rig.ingest("example.com", mode="testing")  # a warning (result-type, new-result-type)
    assert rig.hook.join(10)
    assert [e["severity"] for e in rig.rec.named("tlsrpt.alert")] == ["warning"]
    assert sent(tmp_path / "bin") == []


def test_failing_sendmail_is_logged(tmp_path: Path, rig_factory: Any) -> None:
    script = fake_sendmail(tmp_path / "bin", exit_code=75)
    rig = rig_factory(f'sendmail = "{script}"\nmail_to = ["postmaster@example.org"]')
    rig.ingest("example.com")
    assert rig.hook.join(10)
    [dropped] = rig.undelivered()
    assert dropped["channel"] == "mail"
    assert "exited with 75: queue file write error" in dropped["reason"]


def test_missing_sendmail_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[alerts]\nsendmail = "{tmp_path}/nope"\nmail_to = ["a@example.org"]\n')
    with pytest.raises(ConfigError, match="not an executable program"):
        build_hook(config, tmp_path, Recorder())
