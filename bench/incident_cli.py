"""Running ``flask --app tsd_server ...`` the way an operator does, timed, with its peak RSS.

The code can come from another tree (the "before" of a comparison): it goes first on
PYTHONPATH and is the working directory, so ``tsd_server`` is imported from there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import servers

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def environment(url: str, secret_key: str, instance: Path, code: Path,
                settings: Mapping[str, object] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TSD_")}
    env.update(servers.setting_env({"ENV": "production", "DATABASE_URL": url,
                                    "SECRET_KEY": secret_key, "INSTANCE_PATH": str(instance),
                                    "LOG_LEVEL": "WARNING", **(settings or {})}))
    env["PYTHONPATH"] = str(code)
    return env


def flask(arguments: list[str], env: Mapping[str, str], code: Path = ROOT) -> Run:
    """One CLI call; peak RSS from the process's own rusage (``wait4``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "flask", "--app", "tsd_server", *arguments],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=dict(env), cwd=code)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(seconds, usage.ru_maxrss / 1024, process.returncode,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def start(arguments: list[str], env: Mapping[str, str], code: Path = ROOT,
          ) -> tuple[subprocess.Popen, float]:
    """A CLI call left running (a revoke while requests are measured); (process, start)."""
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "flask", "--app", "tsd_server", *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=dict(env), cwd=code)
    return process, time.perf_counter()


@contextmanager
def code_at(revision: str | None) -> Path:
    """The app's code: this tree (None), or ``revision``'s tsd_server/ exported read-only
    with ``git archive`` (no worktree, no change to the repository's state)."""
    if revision is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="tsd-incident-before-") as folder:
        archive = subprocess.run(["git", "archive", revision, "tsd_server", "wsgi.py",  # noqa: S603,S607
                                  "gunicorn.conf.py"], cwd=ROOT, check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)  # noqa: S603,S607
        yield Path(folder)
