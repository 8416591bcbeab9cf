"""The milter intake: ``tlsrpt-lmtp milter`` taps report mail inside Postfix or Sendmail.

``config`` reads ``[milter]``; ``core`` is the sans-I/O message filter (recipients, buffer,
the decision at end of message); ``adapter`` binds it to libmilter through pymilter; ``cli``
is the subcommand. Only ``adapter`` imports pymilter, so the rest works without it.
"""
