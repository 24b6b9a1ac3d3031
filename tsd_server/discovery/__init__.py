"""Discovery: the strategy interface and registry, the kill switch, and the link service."""
