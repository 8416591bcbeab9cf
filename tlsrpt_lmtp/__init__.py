"""tlsrpt-lmtp: receive SMTP TLS Reporting (RFC 8460) reports and turn them into events."""

__version__ = "0.1.0"
