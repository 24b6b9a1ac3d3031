"""Skipping a test because a real component is missing: loudly, and never in CI.

Where nginx, chromium, Caddy, PostgreSQL or Redis is missing, a developer's run skips the
tests that need it with a warning in the summary. CI sets ``TSD_TEST_REQUIRE_ALL=1`` (and
``TSD_TEST_REQUIRE_POSTGRES=1``), which turns every such skip into a failure, so a green CI
run means every real-component test ran.
"""

from __future__ import annotations

import os
import warnings

import pytest

REQUIRE_ALL = "TSD_TEST_REQUIRE_ALL"


def skip_loudly(message: str, require_env: str | None = None) -> None:
    """Skip with a warning, or fail when CI requires the component."""
    for name in (REQUIRE_ALL, require_env):
        if name and os.environ.get(name) == "1":
            pytest.fail(f"{message} ({name}=1: required here)")
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)
