"""Report authenticity: DKIM verification by RFC 8460 §3's rules (see verify.py)."""

from tlsrpt_lmtp.core.dkim import (
    DkimPolicy,
    DkimResult,
    DkimVerdict,
    DnsTempError,
    MessageVerdict,
    SignatureCheck,
    aligned,
    key_names,
    verify_message,
)
from tlsrpt_lmtp.ingest.dkim.batch import Budgets, verify_batch
from tlsrpt_lmtp.ingest.dkim.config import (
    DkimChecker,
    DkimConfig,
    build_checker,
    checker_from_file,
    load_dkim_config,
)
from tlsrpt_lmtp.ingest.dkim.keys import DnsKeyLookup, KeyCache, KeyFailure

__all__ = [
    "Budgets",
    "DkimChecker",
    "DkimConfig",
    "DkimPolicy",
    "DkimResult",
    "DkimVerdict",
    "DnsKeyLookup",
    "DnsTempError",
    "KeyCache",
    "KeyFailure",
    "MessageVerdict",
    "SignatureCheck",
    "aligned",
    "build_checker",
    "checker_from_file",
    "key_names",
    "load_dkim_config",
    "verify_batch",
    "verify_message",
]
