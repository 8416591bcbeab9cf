"""The ``[dkim]`` policy values, apart from the verifier (dkimpy, dnspython) so that reading the
config file needs neither."""

from enum import StrEnum


class DkimPolicy(StrEnum):
    OFF = "off"  # no verification, the dkim_* event fields are null
    VERIFY = "verify"  # record the verdict, keep every report
    ENFORCE = "enforce"  # a report without an aligned pass goes to quarantine
