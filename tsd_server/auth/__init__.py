"""Accounts (web sessions) and device bearer-token authentication."""
