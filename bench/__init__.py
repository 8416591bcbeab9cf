"""Benchmark harness for tlsrpt_lmtp (not a test suite; see bench/README.md).

``bench.worker`` imports only the standard library at module level, so the same worker also
runs inside the peer venv, which has parsedmarc but not this project's dependencies.
"""
