"""POST each alert as JSON to a webhook, with a timeout and retries with backoff.

Retried: connection errors, timeouts, HTTP 408, 429 and 5xx. Not retried: other 4xx (the
request itself is wrong) and redirects: a 3xx answer is never followed, so the configured
headers (an ``Authorization`` token) go to the configured URL's host and nowhere else. No
proxy from the environment is used.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

from tlsrpt_lmtp import __version__
from tlsrpt_lmtp.alerts.outbox import Payload

_RETRY_STATUS = {408, 429}
_MAX_BACKOFF = 300.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse every redirect: urllib then raises the 3xx answer as an HTTPError."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class Webhook:
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        retries: int,
        backoff: float,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = {
            "Content-Type": "application/json",
            "User-Agent": f"tlsrpt-lmtp/{__version__}",
            **dict(headers),
        }
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())

    def body(self, payload: Payload) -> bytes:
        # "text" makes the payload readable by Slack/Mattermost-style incoming webhooks.
        text = f"[{str(payload.get('severity', '')).upper()}] {payload.get('message', '')}"
        return json.dumps({**payload, "text": text}, ensure_ascii=False).encode()

    def attempt(self, data: bytes) -> tuple[bool, str]:
        """One POST: (retry?, reason); reason is '' on success."""
        request = urllib.request.Request(self.url, data=data, headers=self.headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(65536)
                return False, ""
        except urllib.error.HTTPError as exc:
            if 300 <= exc.code < 400:
                return (
                    False,
                    f"HTTP {exc.code}: redirects are not followed (set webhook_url to the target)",
                )
            retry = exc.code in _RETRY_STATUS or exc.code >= 500
            return retry, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return True, f"{type(exc).__name__}: {reason}"

    def deliver(self, payload: Payload, stop: threading.Event) -> str | None:
        data = self.body(payload)
        reason = ""
        for attempt in range(self.retries + 1):
            retry, reason = self.attempt(data)
            if not reason:
                return None
            if not retry:
                return f"{reason}, not retried"
            if attempt < self.retries:
                delay = min(self.backoff * 2**attempt, _MAX_BACKOFF)
                if stop.wait(delay):
                    return f"{reason}; shutting down before retry {attempt + 1}"
        return f"{reason} after {self.retries + 1} attempts"
