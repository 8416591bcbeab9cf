"""Helpers shared by several test modules (and bench/, fuzz/); no test lives here."""
