"""A clean start-up environment for tests that build apps from settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def instance(monkeypatch, tmp_path) -> Path:
    """No TSD_* variables, and an empty instance folder of our own."""
    for name in list(os.environ):
        if name.startswith("TSD_"):
            monkeypatch.delenv(name)
    path = tmp_path / "instance"
    monkeypatch.setenv("TSD_INSTANCE_PATH", str(path))
    return path
