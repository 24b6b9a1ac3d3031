"""Browser tests: Debian chromium driven by Playwright against the live app."""
