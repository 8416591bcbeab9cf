"""Intake: the archive (stage 1), the processor (stage 2), the store, LMTP and milter adapters."""
