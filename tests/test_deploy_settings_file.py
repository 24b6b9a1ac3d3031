"""deploy/tsd-server.env.example, the settings file systemd reads for the service and sh
for the flask commands (docs/production.md)."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def test_the_settings_file_leaves_the_port_to_each_instances_unit():
    """systemd lets EnvironmentFile= override Environment=: a TSD_BIND in the shared
    settings file would give the second instance the first one's port."""
    settings = (DEPLOY / "tsd-server.env.example").read_text().splitlines()
    assert not [line for line in settings if line.strip().startswith("TSD_BIND")]


def test_the_settings_file_reads_the_same_in_sh_as_in_systemd():
    """systemd reads the settings file for the service, sh for the flask commands
    (docs/production.md). They agree on plain values and on single-quoted ones; unquoted,
    `TSD_DISCOVERY_DISABLED=ip_match, qr_code` is both strategies off for systemd and
    nothing at all for sh."""
    path = DEPLOY / "tsd-server.env.example"
    assignments = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)
            quoted = re.fullmatch(r"'([^']*)'", value)
            assert quoted or not re.search(r"""[\s'"$\\`]""", value), \
                f"{key}: put its value in '...'"
            assignments[key] = quoted.group(1) if quoted else value
    shell = subprocess.run(["sh", "-c", 'set -a; . "$0"; set +a; env -0', str(path)],
                           env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                           check=True)
    assert not shell.stderr, shell.stderr
    read = dict(item.split("=", 1) for item in shell.stdout.split("\0") if item)
    assert {key: read.get(key) for key in assignments} == assignments
