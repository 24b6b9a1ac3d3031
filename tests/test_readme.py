"""The README keeps the foundation's promises: two commands for a fresh machine, a first
admin made as it says, and a configuration reference that names every setting the code
reads."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import ROOT
from tests.support import servers
from tsd_server.config import DEFAULTS

README = (ROOT / "README.md").read_text()
MAKEFILE = (ROOT / "Makefile").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def table_settings() -> set[str]:
    return set(re.findall(r"^\| `(TSD_[A-Z0-9_]+)` \|", section("Configuration"), re.M))


def test_quick_start_is_two_commands():
    commands = re.findall(r"^    (\S.*)$", section("Quick start"), re.M)
    assert commands[:2] == ["make run", "make test"]


def test_the_first_admin_is_created_as_written_while_make_run_serves(tmp_path):
    """The README's create-user line, run as written from a second terminal, where nothing
    of `make run`'s environment is set (its TSD_ENV reaches only make's own commands)."""
    commands = re.findall(r"^    (\S.*)$", section("Quick start"), re.M)
    command = next(line for line in commands if " create-user " in line)
    if not (ROOT / ".venv" / "bin" / "flask").exists():  # tests run from another virtualenv
        command = command.replace(".venv/", f"{sys.prefix}/")
    terminal = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    terminal["TSD_INSTANCE_PATH"] = str(tmp_path / "instance")  # make_run's scratch instance
    password = "correct horse battery"
    with servers.make_run(tmp_path, {}):
        # A session of its own: no terminal to prompt on, so the password comes from stdin.
        created = subprocess.run(command, shell=True, cwd=ROOT, env=terminal,
                                 input=f"{password}\n{password}\n", capture_output=True,
                                 text=True, timeout=120, start_new_session=True)
    assert created.returncode == 0, created.stderr
    assert "Created admin account you@example.org" in created.stdout


def test_make_targets_do_what_the_readme_says():
    run = re.search(r"^run:.*\n((?:\t.*\n)+)", MAKEFILE, re.M).group(1)
    assert "db upgrade" in run and "gunicorn" in run and "wsgi:app" in run
    assert re.search(r"^HOST \?= 127\.0\.0\.1$", MAKEFILE, re.M)
    assert re.search(r"^PORT \?= 5000$", MAKEFILE, re.M)
    assert re.search(r"^export TSD_ENV \?= development$", MAKEFILE, re.M)
    test = re.search(r"^test:.*\n((?:\t.*\n)+)", MAKEFILE, re.M).group(1)
    assert "pytest" in test
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


def test_every_setting_is_in_the_configuration_table():
    documented = table_settings()
    missing = sorted(f"TSD_{key}" for key in DEFAULTS if f"TSD_{key}" not in documented)
    assert not missing, f"add rows to the README's Configuration table for: {missing}"
    assert "TSD_INSTANCE_PATH" in documented


def test_the_table_names_no_setting_that_does_not_exist():
    read_elsewhere = {"TSD_INSTANCE_PATH", "TSD_BIND", "TSD_WORKERS"}
    unknown = sorted(name for name in table_settings()
                     if name[4:] not in DEFAULTS and name not in read_elsewhere)
    assert not unknown, f"README documents settings the code does not read: {unknown}"
    gunicorn_conf = (ROOT / "gunicorn.conf.py").read_text()
    assert all(name in gunicorn_conf for name in ("TSD_BIND", "TSD_WORKERS"))


def test_files_the_readme_names_exist():
    # instance/ holds what a deployment creates (config.py, the key), so it is not checked.
    named = set(re.findall(r"`((?:docs|deploy|tests)/[\w./-]+)`", README))
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README points at files that do not exist: {missing}"
