"""`tlsrpt-lmtp check DOMAIN`: checks one's own domain's TLS-RPT and MTA-STS set-up.

Sans-I/O core: ``tlsrpt_record`` (the ``_smtp._tls`` record), ``checks`` (observations →
findings), ``publish`` (the records to publish), ``render``. Adapters: ``gather`` (DNS and the
HTTPS policy, through the policy daemon's ``sts`` adapters) and ``probe`` (STARTTLS on port 25).
"""
