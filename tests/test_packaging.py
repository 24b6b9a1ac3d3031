"""Packaging: setup.cfg declares what the app needs, and a built wheel carries every file the
app reads at run time (templates, static files, migrations), not only the Python modules."""

from __future__ import annotations

import configparser
import email
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

REQUIRED = ["flask", "flask-sqlalchemy", "flask-login", "flask-wtf", "flask-migrate",
            "werkzeug", "itsdangerous", "psycopg2-binary", "gunicorn", "sqlalchemy",
            "flask-limiter", "limits"]
RUNTIME_SUFFIXES = {".py", ".html", ".css", ".js", ".json", ".ini", ".mako", ".svg", ".png", ".ico"}


def requirement_names(lines: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0].lower()
            for line in lines if line.strip()}


def test_setup_cfg_declares_dependencies_with_lower_bounds():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    install = cfg["options"]["install_requires"].strip().splitlines()
    assert set(REQUIRED) <= requirement_names(install)
    assert all(">=" in line for line in install if line.strip())
    test_extra = cfg["options.extras_require"]["test"].strip().splitlines()
    assert {"pytest", "hypothesis"} <= requirement_names(test_extra)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "[build-system]" in pyproject and "setuptools" in pyproject


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = tmp_path_factory.mktemp("source") / "tsd-server"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "instance"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                             "-w", str(out), str(source)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = out.glob("tsd_server-*.whl")
    with zipfile.ZipFile(path) as archive:
        yield archive


def test_wheel_carries_every_runtime_file(wheel):
    names = set(wheel.namelist())
    package = ROOT / "tsd_server"
    expected = {
        path.relative_to(ROOT).as_posix()
        for path in package.rglob("*")
        if path.is_file() and path.suffix in RUNTIME_SUFFIXES and "__pycache__" not in path.parts
    }
    assert "tsd_server/migrations/env.py" in expected
    assert "tsd_server/templates/base.html" in expected
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel (add them to [options.package_data]): {missing}"
    assert not any(name.startswith("tests/") for name in names)


def test_wheel_metadata_lists_the_dependencies(wheel):
    [metadata_name] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    metadata = email.message_from_bytes(wheel.read(metadata_name))
    requires = metadata.get_all("Requires-Dist")
    assert set(REQUIRED) <= requirement_names([r for r in requires if "extra ==" not in r])
    assert "test" in metadata.get_all("Provides-Extra")


def test_no_instance_files_are_packaged(wheel):
    """instance/ holds the development key (``secret_key``) and the SQLite file."""
    assert not [n for n in wheel.namelist() if n.rsplit("/", 1)[-1] == "secret_key"
                or n.endswith(".sqlite3") or n.startswith("instance/")]


def test_instance_folder_keeps_only_examples_in_git():
    tracked = subprocess.run(["git", "ls-files", "instance"], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    assert sorted(Path(p).name for p in tracked) == ["README.md", "config.example.py"]
