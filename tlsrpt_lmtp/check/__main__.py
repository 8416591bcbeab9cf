"""``python -m tlsrpt_lmtp.check DOMAIN ...``: the check command on its own."""

import sys

from tlsrpt_lmtp.check.cli import main

sys.exit(main())
