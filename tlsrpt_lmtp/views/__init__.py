"""`tlsrpt-lmtp summary`: what the stored reports say, by result and by sending source.

query.py reads the store (the only module here that does I/O besides cli.py), model.py turns
its rows into a Summary (pure), and text/markdown/jsonout/html render it (pure).
"""
