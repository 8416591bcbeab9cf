"""Alerts at ingest time: a pipeline hook that turns worrying reports into tlsrpt.alert events.

config.py reads [alerts]; rules.py and advice.py decide (pure); state.py keeps the history
look-ups and the repeat window in the store's SQLite file; webhook.py and mail.py deliver in
background threads; hook.py puts them together (``build_hook``).
"""
