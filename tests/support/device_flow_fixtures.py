"""Fixtures shared by the device-flow tests (import them into the test module).

``app_config``: the pairing limits out of the way (the limits have their own tests).
``owner``: an account, Ada, logged in from 1.1.1.1: (user id, its browser session).
"""

from __future__ import annotations

import pytest

from tests.support.pairing import LOOSE_LIMITS


@pytest.fixture
def app_config():
    return dict(LOOSE_LIMITS)


@pytest.fixture
def owner(make_user, login):
    uid, email, password = make_user(display_name="Ada")
    return uid, login(email, password, REMOTE_ADDR="1.1.1.1")
