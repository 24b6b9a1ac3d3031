"""A migration, once on main, is never edited: self-hosters upgrade in place.

A database already at a revision never runs that revision's file again, so an edit to a
shipped migration reaches only new installations, and the two kinds of database drift
apart (f764fba shipped 0003 and 0004 empty; a69dce0 had to repair what that did). A change
to the schema is a new migration. This compares every migration file with the digest it
was shipped with (tests/support/shipped_migrations.sha256, ``sha256sum`` format).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

VERSIONS = Path(__file__).resolve().parent.parent / "tsd_server" / "migrations" / "versions"
SHIPPED = Path(__file__).resolve().parent / "support" / "shipped_migrations.sha256"


def shipped() -> dict[str, str]:
    digests = {}
    for line in SHIPPED.read_text().splitlines():
        digest, _, name = line.partition("  ")
        digests[name] = digest
    return digests


def on_disk() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(VERSIONS.glob("*.py"))}


def test_every_migration_is_listed_with_its_digest():
    missing = sorted(set(on_disk()) - set(shipped()))
    assert not missing, (
        f"{missing}: a new migration? Add its line to {SHIPPED.name} "
        f"(cd {VERSIONS.relative_to(VERSIONS.parents[2])} && sha256sum {' '.join(missing)})")
    gone = sorted(set(shipped()) - set(on_disk()))
    assert not gone, f"{gone}: a shipped migration was removed; databases may be at it"


@pytest.mark.parametrize("name", sorted(shipped()))
def test_a_shipped_migration_is_unchanged(name):
    actual = on_disk().get(name)
    assert actual == shipped()[name], (
        f"{name} changed after it was shipped. Databases already at its revision will not "
        "run it again: write a new migration for the change instead. (Only if the edit "
        "changes no statement, e.g. a comment, update its line in "
        f"{SHIPPED.name}.)")
