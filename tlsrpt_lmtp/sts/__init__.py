"""MTA-STS (RFC 8461) for the sending side: the policy daemon Postfix and Exim ask."""
