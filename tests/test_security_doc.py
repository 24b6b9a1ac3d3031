"""docs/security.md stays true: every test it cites as proof is one the suite collects."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"
REFERENCE = re.compile(r"(tests/[\w/]+\.py)::([\w:]+)")


def cited() -> set[tuple[str, str]]:
    return set(REFERENCE.findall(DOC.read_text()))


def collected(files: list[str]) -> set[tuple[str, str]]:
    """(file, Class::test) for every test pytest collects from ``files``, parameters dropped."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "--db", "sqlite", *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ids = set()
    for line in result.stdout.splitlines():
        path, sep, name = line.partition("::")
        if sep:
            ids.add((path, re.sub(r"\[.*\]$", "", name)))
    return ids


def test_every_test_cited_in_security_md_exists():
    references = cited()
    assert len(references) >= 60, "security.md should cite its proofs"
    files = sorted({path for path, _ in references})
    missing = [f"{path}::{name}" for path, name in sorted(references)
               if not (ROOT / path).is_file()]
    assert missing == [], "cited files that do not exist"
    missing = sorted(f"{path}::{name}" for path, name in references - collected(files))
    assert missing == [], "cited in docs/security.md but not collected by pytest"


def test_the_reference_pattern_reads_class_and_plain_tests():
    text = ("see tests/test_a.py::test_b, tests/e2e/test_c.py::TestD::test_e and "
            "tests/test_f.py::test_g.")
    assert REFERENCE.findall(text) == [("tests/test_a.py", "test_b"),
                                       ("tests/e2e/test_c.py", "TestD::test_e"),
                                       ("tests/test_f.py", "test_g")]
