"""Benchmark harness for tlsrpt_lmtp (not a test suite; see bench/README.md).

Every module here imports only the standard library at module level, so the
measurement worker can also run inside the peer venv (which has parsedmarc but
not this project's dependencies).
"""
