"""The incident replayed in-process: the environ each proxy layout hands the app.

Scenarios (a) to (e) of issue 4 live in tests/support/ip_match_scenarios.py and run here
through the Flask test client, and in tests/e2e/ through real nginx and gunicorn.
"""

from __future__ import annotations

import pytest

from tests.support.ip_match_scenarios import IN_PROCESS_LAYOUTS, SCENARIOS
from tests.support.ip_match_world import InProcessEndpoint, World


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request):
    return request.param


@pytest.fixture
def app_config(scenario):
    return dict(SCENARIOS[scenario][1])


def test_incident_scenario(app, scenario):
    run, _settings = SCENARIOS[scenario]
    layout = IN_PROCESS_LAYOUTS[scenario]
    world = World(app, lambda home: InProcessEndpoint(app, home, layout))
    run(world)
