"""Admin-only pages: kill switches, the audit log, incident response."""
