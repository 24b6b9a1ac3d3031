"""gunicorn for the bench: the app of a given source tree, 2 workers, on a free port.

Like tests/support/servers.gunicorn (whose process launcher it reuses), but the code can
come from another tree: ``--before-without COMMITS`` runs the current app with those
commits' changes reverted (a copy in a temporary folder, first on PYTHONPATH) side by side
with the current one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support import servers

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def gunicorn(directory: Path, *, database_url: str, settings: Mapping[str, Any],
             code: Path = ROOT, workers: int = 2) -> Iterator[servers.RunningServer]:
    directory.mkdir(parents=True, exist_ok=True)
    port = servers.free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    env.update(servers.setting_env({"ENV": "production", "DATABASE_URL": database_url,
                                    "INSTANCE_PATH": str(directory / "instance"), **settings}))
    if code != ROOT:
        env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-m", "gunicorn", "--config", str(code / "gunicorn.conf.py"),
               "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "wsgi:app"]
    with servers.run_process("gunicorn", command, port=port, log_path=directory / "gunicorn.log",
                            probe="/healthz", env=env, cwd=code) as server:
        yield server


@contextmanager
def tree_without(commits: list[str]) -> Iterator[Path]:
    """The current app with the changes of ``commits`` to tsd_server/ taken out again.

    The "before" of a before/after comparison: the code as it is now except for those
    changes (the performance fixes), so other work that landed meanwhile is in both.
    """
    with tempfile.TemporaryDirectory(prefix="tsd-bench-before-") as folder:
        tree = Path(folder)
        shutil.copytree(ROOT / "tsd_server", tree / "tsd_server",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("wsgi.py", "gunicorn.conf.py"):
            shutil.copy2(ROOT / name, tree / name)
        for commit in reversed(commits):  # newest first
            patch = subprocess.run(["git", "diff", f"{commit}^", commit, "--", "tsd_server"],  # noqa: S603,S607
                                   cwd=ROOT, check=True, capture_output=True).stdout
            subprocess.run(["git", "apply", "--reverse", "-"], input=patch, cwd=tree,  # noqa: S603,S607
                           check=True)
        yield tree
