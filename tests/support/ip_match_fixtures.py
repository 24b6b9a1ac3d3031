"""Fixtures shared by the in-process ip_match tests (import them into the test module).

``app_config``: ip_match rate limits out of the way (the limits have their own tests).
``world``: people and printers at public addresses talking to the app directly, on the
fake clock.
"""

from __future__ import annotations

import pytest

from tests.support.ip_match_world import InProcessEndpoint, World, layout_direct

UNLIMITED = {"IP_MATCH_ANNOUNCE_RATE_LIMIT": "1000 per minute",
             "IP_MATCH_NEARBY_RATE_LIMIT": "1000 per minute",
             "IP_MATCH_CLAIM_RATE_LIMIT": "1000 per minute"}


@pytest.fixture
def app_config():
    return dict(UNLIMITED)


@pytest.fixture
def world(app, clock):
    return World(app, lambda home: InProcessEndpoint(app, home, layout_direct))
